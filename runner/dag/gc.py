"""`recipe gc`: bound the cache. Keep what the given recipes still reference (their steps' fingerprints
as written, and what each one's last run used, e.g. with --set) and remove every other artifact, partial
training state and dead temp folder; say how many bytes that frees. Nothing runs, nothing heavy loads."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RecipeError
from .cache import Cache, default_dir


@dataclass
class Sweep:
    root: Path
    recipes: list[str] = field(default_factory=list)      # recipe names whose artifacts are kept
    kept: list[tuple[str, int]] = field(default_factory=list)       # (fingerprint, bytes)
    removed: list[tuple[str, int]] = field(default_factory=list)    # (objects/<fp> or partial/<fp>, bytes)
    others: int = 0                       # of `removed`: objects another recipe's last run used ...
    other_recipes: set[str] = field(default_factory=set)   # ... recipes not given to gc, sharing this cache


def find_recipes(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths or ["."]):
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out += sorted(x for x in p.rglob("*.y*ml") if ".recipe" not in x.parts and x.suffix in (".yaml", ".yml"))
        else:
            raise RecipeError(f"{p}: no such file or folder")
    return out


def _size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else 0


def _name(path: Path) -> str | None:
    """The `recipe:` name of a file that does not validate (a fragment, a broken recipe), if it has one."""
    import yaml
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    return doc.get("recipe") if isinstance(doc, dict) and isinstance(doc.get("recipe"), str) else None


def plan_sweep(paths: list[str], overrides=(), cache_dir: str | None = None) -> tuple[list[Sweep], list[str]]:
    """-> (one Sweep per cache folder the recipes use, notes about files that are not recipes)."""
    from ..recipe.load import load_document
    from ..recipe.validate import validate
    from ..steps import versions
    from .compile import compile_recipe
    from .fingerprint import fingerprint_graph

    live: dict[Path, set[str]] = {}
    names: dict[Path, set[str]] = {}
    notes: list[str] = []
    for f in find_recipes(paths):
        root = default_dir(f.resolve(), cache_dir)
        try:
            r = validate(load_document(Path(f), tuple(overrides)))   # the dag sits below api
        except RecipeError as e:
            name = _name(f)
            notes.append(f"{f}: not a complete recipe ({str(e).splitlines()[-1]}); "
                         + ("keeping what its last run used" if name else "nothing of it to keep"))
            if name:
                names.setdefault(root, set()).add(name)
            continue
        graph = compile_recipe(r)
        fps = fingerprint_graph(graph, r.file.parent, versions(), Cache(root).digests)
        live.setdefault(root, set()).update(fp.value for fp in fps.values())
        names.setdefault(root, set()).add(graph.recipe)
    sweeps = []
    for root in sorted(set(live) | set(names)):
        keep = set(live.get(root, ()))
        for name in names.get(root, ()):       # the last run of each recipe (it may have used --set)
            for idx in (root / "index" / name).glob("*.json"):
                try:
                    keep.add(json.loads(idx.read_text(encoding="utf-8"))["fingerprint"])
                except (OSError, ValueError, KeyError, TypeError):
                    pass
        s = Sweep(root, sorted(names.get(root, ())))
        owners = _last_runs(root, exclude=names.get(root, set()))
        for obj in _children(root / "objects"):
            (s.kept if obj.name in keep else s.removed).append((f"objects/{obj.name}", _size(obj)))
            if obj.name not in keep and obj.name in owners:
                s.others += 1
                s.other_recipes |= owners[obj.name]
        for part in _children(root / "partial"):     # resumable training state of a step no one runs now
            if part.name not in keep:
                s.removed.append((f"partial/{part.name}", _size(part)))
        sweeps.append(s)
    return sweeps, notes


def _last_runs(root: Path, exclude: set[str]) -> dict[str, set[str]]:
    """fingerprint -> the other recipes (not among those given) whose last run in this cache used it: a
    shared cache holds them too, and gc removes them, so it says how many."""
    out: dict[str, set[str]] = {}
    for folder in _children(root / "index"):
        if folder.name in exclude:
            continue
        for idx in folder.glob("*.json"):
            try:
                fp = json.loads(idx.read_text(encoding="utf-8"))["fingerprint"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if isinstance(fp, str):
                out.setdefault(fp, set()).add(folder.name)
    return out


def _children(d: Path) -> list[Path]:
    return sorted(x for x in d.iterdir() if x.is_dir()) if d.is_dir() else []


def apply(s: Sweep) -> None:
    for rel, _ in s.removed:
        shutil.rmtree(s.root / rel, ignore_errors=True)
    Cache(s.root).clean_tmp()      # temp folders of processes that are gone
