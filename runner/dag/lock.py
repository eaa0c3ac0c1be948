"""`recipe lock R` writes R.lock next to the recipe (R's name with .lock for .yaml): what a run of R reads,
pinned: the digest of every recipe file (R and the bases it extends), of every input the steps declare (as
the fingerprints identify them: a local file's bytes, the commit a hub dataset's revision names, a remote
file's ETag), the model (a hub id's commit in the local hub cache, a local folder's digest, builtin weights),
the chat template, and the installed versions of the training libraries (read with importlib.metadata:
nothing is imported). `recipe run --locked` refuses to start when anything differs, one line per difference.
Deterministic bytes: sorted JSON, paths relative to the recipe's folder, no clock."""
from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

from ..errors import RecipeError

LOCK_VERSION = 1
LIBRARIES = ("accelerate", "datasets", "deepspeed", "peft", "torch", "transformers", "trl")
SECTIONS = ("recipe", "recipe_files", "inputs", "model", "template", "libraries")


def lock_path(recipe_file: Path) -> Path:
    recipe_file = Path(recipe_file)
    return recipe_file.with_suffix(".lock") if recipe_file.suffix in (".yaml", ".yml") else \
        recipe_file.with_name(recipe_file.name + ".lock")


def _sha(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def _rel(p: Path, base: Path) -> str:
    return os.path.relpath(Path(p).resolve(), base.resolve()).replace(os.sep, "/")


def libraries() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _model(recipe, base_dir: Path, digests) -> dict:
    from .. import sources
    from ..builtin import weights_digest
    from ..steps.base import model_files
    base = recipe.model.base
    out: dict = {"base": base}
    if base.startswith("builtin:"):
        from .. import __version__
        out["package"] = __version__
        out["weights"] = weights_digest(base)
    elif model_files(recipe, weights=True):
        out["files"] = {sources.key(f): sources.digest(f, base_dir, digests) for f in model_files(recipe, weights=True)}
    else:   # a hub id: the commit its main branch last resolved to in the local hub cache
        out["revision"] = sources.model_revision(base)
    if recipe.model.init_from:
        out["init_from"] = recipe.model.init_from
    return out


def _template(recipe, base_dir: Path, digests) -> dict:
    from .. import __version__, sources
    from ..steps.base import template_files
    files = template_files(recipe)
    if files:
        return {"chat": recipe.template.chat,
                "files": {sources.key(f): sources.digest(f, base_dir, digests) for f in files}}
    return {"chat": recipe.template.chat, "builtin": f"recipe {__version__}"}


def build(path: str | Path, overrides: tuple[str, ...] = (), digests_file: Path | None = None) -> dict:
    """The lock of a recipe as resolved now (with --set overrides, which change its digest)."""
    from .. import sources
    from .cache import default_dir
    from .compile import compile_recipe
    from .fingerprint import fingerprint_graph
    from .runindex import digest
    from ..recipe.canonical import canonical
    from ..recipe.load import load_document
    from ..recipe.validate import validate
    from ..steps import versions
    doc = load_document(Path(path), tuple(overrides))
    recipe = validate(doc)
    base = recipe.file.parent
    graph = compile_recipe(recipe)
    # big files' digests kept by earlier runs (the recipe's default cache) spare hashing them again
    fps = fingerprint_graph(graph, base, versions(), digests_file or default_dir(recipe.file) / "digests.json")
    inputs = {k: v for fp in fps.values() for k, v in sorted(fp.components["files"].items())}
    memo = sources.Digests({})
    return {"lock_version": LOCK_VERSION,
            "recipe": {"name": recipe.name, "digest": digest(canonical(recipe))},
            "recipe_files": {_rel(f, base): _sha(Path(f)) for f in doc.files},
            "inputs": dict(sorted(inputs.items())), "model": _model(recipe, base, memo),
            "template": _template(recipe, base, memo), "libraries": libraries()}


def text(lock: dict) -> str:
    return json.dumps(lock, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def write(path: str | Path, overrides: tuple[str, ...] = ()) -> Path:
    lock = build(path, overrides)
    out = lock_path(Path(path))
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    tmp.write_text(text(lock), encoding="utf-8")
    os.replace(tmp, out)
    return out


def read(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _flat(v, path: str = "") -> dict[str, object]:
    if isinstance(v, dict) and v:
        return {k: x for key, sub in v.items() for k, x in _flat(sub, f"{path}.{key}" if path else str(key)).items()}
    return {path: v}


def differences(old: dict | None, new: dict | None) -> list[str]:
    """One line per difference, section by section: "inputs ../data/x.jsonl: sha256:… → sha256:…"."""
    a, b = _flat({k: (old or {}).get(k) for k in SECTIONS}), _flat({k: (new or {}).get(k) for k in SECTIONS})
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            section, _, rest = key.partition(".")
            what = f"{section} {rest}" if rest else section
            if key not in a:
                lines.append(f"{what}: new ({b[key]})")
            elif key not in b:
                lines.append(f"{what}: no longer there (was {a[key]})")
            else:
                lines.append(f"{what}: {a[key]} → {b[key]}")
    return lines


def check(path: str | Path, overrides: tuple[str, ...] = (), digests_file: Path | None = None) -> None:
    """For `recipe run --locked`: RecipeError listing every difference from R.lock (or its absence)."""
    lp = lock_path(Path(path))
    old = read(lp)
    if old is None:
        raise RecipeError(f"--locked: no readable lock file {lp}; write it with `recipe lock {path}`")
    diffs = differences(old, build(path, overrides, digests_file))
    if diffs:
        raise RecipeError(f"--locked: {len(diffs)} difference{'s' * (len(diffs) != 1)} from {lp} (run `recipe lock "
                          f"{path}` to accept them):\n" + "\n".join(f"  {d}" for d in diffs))


def changes_between(recipe_a: Path | None, recipe_b: Path | None) -> list[str]:
    """For `recipe diff`: how the lock files next to two recipes differ ([] when neither side has one)."""
    locks = [read(lock_path(p)) if p is not None else None for p in (recipe_a, recipe_b)]
    if locks == [None, None]:
        return []
    if None in locks:
        return ["lock file " + ("added" if locks[0] is None else "removed")]
    return differences(*locks)

