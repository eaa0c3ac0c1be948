"""`recipe diff`: what a recipe change *means*, for the reviewer of a pull request.

Settings: the two resolved documents (extends, ${...}, --set and schema defaults applied) compared key by
key; list items are matched by name/kind, not by position, so inserting a filter reads as one insertion.
Impact: both recipes are compiled and fingerprinted (nothing runs) and every step whose fingerprint moved
is listed with the reason `plan` would give; a moved train step means retraining. Rows come from the
cache's stats where a step with that exact fingerprint has run, else they are computed from the split's
cached train rows by the mix step's own arithmetic, else the requested size and shares are shown.

`--git REV` rebuilds REV's side of the repository in a temporary directory (`_materialise`), so `extends`,
data paths and file fingerprints resolve on each side from that side's own files.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from difflib import SequenceMatcher
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from . import api
from .cache import Cache, default_dir
from .compile import Graph, compile_recipe
from .errors import RecipeError, ValidationError
from .fingerprint import Fingerprint, explain, fingerprint_graph
from .recipe.load import load_document
from .recipe.model import Recipe, Stage
from .recipe.validate import validate

# --- settings: the resolved documents, key by key ----------------------------------------------------

# The order a reviewer reads a recipe in; a top-level key not named here is a section of its own.
SECTIONS = ("recipe", "sources", "filters", "mix", "split", "template", "model", "train", "stages", "meta",
            "evaluate", "output")
_SECTION_OF = {"seed": "recipe", "groups": "mix", "sampling": "mix", "size": "mix"}
_IDENTITY = ("name", "kind", "method")  # what names a list item: a task by name, a filter by kind (+ method)


@dataclass(frozen=True)
class Change:
    path: str        # in the resolved document: "stages.task.mix.general", "filters[regex].pattern"
    op: str          # added | removed | changed | moved (before/after: positions) | renamed (before/after: names)
    before: Any = None
    after: Any = None

    @property
    def section(self) -> str:
        head = re.split(r"[.\[]", self.path, maxsplit=1)[0]
        return _SECTION_OF.get(head, head)


def compare(a: Any, b: Any, path: str = "") -> list[Change]:
    if isinstance(a, dict) and isinstance(b, dict):
        return _compare_maps(a, b, path)
    if isinstance(a, list) and isinstance(b, list) and (a or b) and all(isinstance(x, dict) for x in a + b):
        return _compare_items(a, b, path)
    return [] if a == b else [Change(path, "changed", a, b)]   # scalars, and lists of scalars as one value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _compare_maps(a: dict, b: dict, path: str) -> list[Change]:
    added = [k for k in b if k not in a]
    # A source or stage moved to a new name with the same settings is one rename, not a removal + an addition.
    renamed: dict[str, str] = {}
    for k in (k for k in a if k not in b and isinstance(a[k], dict)):
        twin = next((n for n in added if n not in renamed.values() and b[n] == a[k]), None)
        if twin:
            renamed[k] = twin
    out: list[Change] = []
    for k in a:
        if k in renamed:
            out.append(Change(_join(path, renamed[k]), "renamed", k, renamed[k]))
        elif k not in b:
            out.append(Change(_join(path, k), "removed", a[k], None))
        else:
            out += compare(a[k], b[k], _join(path, k))
    out += [Change(_join(path, k), "added", None, b[k]) for k in added if k not in renamed.values()]
    return out


def _labels(items: list[dict]) -> tuple[list[tuple], list[str]]:
    """Each item's identity, and a label that is unique on its side ("dedup:minhash", "length#2")."""
    ids = [tuple(str(x[k]) for k in _IDENTITY if x.get(k) is not None) for x in items]
    labels = []
    for i, ident in enumerate(ids):
        label = ":".join(ident) or "item"
        nth = ids[:i].count(ident)
        labels.append(f"{label}#{nth + 1}" if nth or ids.count(ident) > 1 else label)
    return ids, labels


def _compare_items(a: list[dict], b: list[dict], path: str) -> list[Change]:
    """Items that are equal and in order match first (a diff of the sequences); the rest pair up by
    identity, in order; what is left was removed or added."""
    canon = lambda x: json.dumps(x, sort_keys=True, ensure_ascii=False)  # noqa: E731
    ids_a, lab_a = _labels(a)
    ids_b, lab_b = _labels(b)
    left_a, left_b = [], []
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, [canon(x) for x in a], [canon(x) for x in b],
                                               autojunk=False).get_opcodes():
        if tag != "equal":
            left_a += range(i1, i2)
            left_b += range(j1, j2)
    out: list[Change] = []
    for i in left_a:
        j = next((j for j in left_b if ids_b[j] == ids_a[i]), None)
        if j is None:
            out.append(Change(f"{path}[{lab_a[i]}]", "removed", a[i], None))
            continue
        left_b.remove(j)
        here = f"{path}[{lab_b[j]}]"
        # equal but not matched in order: the item moved (filters run in order, so that matters)
        out += [Change(here, "moved", i, j)] if a[i] == b[j] else compare(a[i], b[j], here)
    out += [Change(f"{path}[{lab_b[j]}]", "added", None, b[j]) for j in left_b]
    return out


def _by_section(changes: list[Change]) -> list[Change]:
    order = {s: i for i, s in enumerate(SECTIONS)}
    return sorted(changes, key=lambda c: order.get(c.section, len(order)))


# --- one side of the comparison --------------------------------------------------------------------

def _versions() -> dict[str, int]:
    from .steps import versions  # the registry: step modules import their heavy libraries only in run()
    return versions()


@dataclass
class Side:
    label: str                       # how the reader knows the file
    raw: dict                        # merged document before the schema (extends, --set, ${...} applied)
    recipe: Recipe | None = None     # None when it does not validate: a base fragment, or a broken recipe
    problem: str | None = None       # why it does not validate
    graph: Graph | None = None
    fps: dict[str, Fingerprint] | None = None
    cache: Cache | None = None

    @property
    def doc(self) -> dict:
        # Secrets masked as in `recipe show`; a raw document goes through the same function.
        return api.canonical(self.recipe) if self.recipe else api.mask(self.raw)

    def stats(self, step: str, caches: list[Cache]) -> dict | None:
        """The stats of a run of exactly this step (same fingerprint), from either side's cache: the
        cache is content-addressed, so an artifact made for the other recipe is this step's too."""
        fp = self.fps[step].value
        for c in caches:
            if c.has(fp):
                return c.stats(fp) or {}
        last = self.cache.last(self.recipe.name, step)  # the index outlives an artifact that was removed
        return last.get("stats") if last and last.get("fingerprint") == fp else None


def load_side(file: Path, label: str, overrides: tuple[str, ...], cache_dir: str | None,
              root: Path | None = None, cache_anchor: Path | None = None) -> Side:
    """Raises RecipeError when the file does not even load (YAML, extends); a document that fails the
    schema is kept raw, so base fragments can still be compared. Under --git, `root` is the tree the file
    lives in and `cache_anchor` the file's place in the working tree (whose cache both sides share)."""
    doc = load_document(Path(file), tuple(overrides))
    try:
        recipe = validate(doc)
    except ValidationError as e:
        more = f" (+{len(e.problems) - 3} more)" if len(e.problems) > 3 else ""
        return Side(label, doc.data, problem=_relative("; ".join(str(p) for p in e.problems[:3]), root) + more)
    graph = compile_recipe(recipe)
    fps = fingerprint_graph(graph, recipe.file.parent, _versions())
    return Side(label, doc.data, recipe, None, graph, fps, Cache(default_dir(cache_anchor or recipe.file, cache_dir)))


def _relative(text: str, root: Path | None) -> str:
    """Under --git, REV's files live in a temp dir: name them as the working tree's are, so the temp dir
    never shows and the same error on both sides compares equal."""
    return text if root is None else text.replace(str(root) + os.sep, "")


# --- impact: steps, stages, rows -------------------------------------------------------------------

@dataclass(frozen=True)
class StepChange:
    name: str
    kind: str
    stage: str | None
    change: str                  # changed | new | removed
    why: tuple[str, ...]
    cached: bool                 # the after-side artifact is already in a cache: nothing to recompute


@dataclass(frozen=True)
class Rows:
    total: int | None
    by_source: dict[str, int]
    basis: str                   # cached (the mix ran) | computed (from the split's cached train rows) | requested
    size: int | float | None     # as requested
    mix: dict[str, float] | None
    problem: str | None = None   # the mix cannot be met


@dataclass(frozen=True)
class StageView:
    """A stage's effective training settings (the recipe's `train` merged with the stage's) and rows."""
    skip: bool
    micro_batch_size: int
    grad_accum: int
    world_size: int
    batch_size: int
    epochs: float
    max_steps: int | None
    learning_rate: float
    rows: Rows | None            # None for a skipped stage

    @property
    def optimizer_steps(self) -> int | None:
        if self.max_steps:
            return self.max_steps
        if self.rows is None or self.rows.total is None:
            return None
        return math.ceil(math.ceil(self.rows.total / self.batch_size) * self.epochs)


@dataclass(frozen=True)
class StageImpact:
    name: str
    status: str                  # retrain | new | removed | skipped | cached (retrain, artifact exists) | unchanged
    before: StageView | None
    after: StageView | None


@dataclass
class RecipeDiff:
    title: str
    before: str | None           # labels; None: the recipe does not exist on that side
    after: str | None
    changes: list[Change]
    steps: list[StepChange]
    stages: list[StageImpact]
    sources: dict[str, tuple[int | None, int | None]]   # rows each source brings to the split, before/after
    notes: list[str]
    problems: list[str]          # a side that does not load or validate while the other does: a difference

    @property
    def differs(self) -> bool:
        return bool(self.changes or self.steps or self.problems or self.before is None or self.after is None)


def _split_rows(side: Side, caches: list[Cache]) -> tuple[dict[str, int | None], dict[str, int] | None]:
    """(rows each source brings to the split, train rows per source), from a run of this exact split."""
    stats = (side.stats("split", caches) if "split" in side.graph.names else None) or {}
    by = stats.get("by_source", {})
    return {s: (by.get(s) or {}).get("rows_out") for s in side.recipe.sources}, stats.get("train")


def _mix_rows(side: Side, stage: Stage, train: dict[str, int] | None, caches: list[Cache]) -> Rows:
    """A stage's rows: from its mix step's report when this exact mix has run; else computed from the
    split's train rows by the mix step's own arithmetic, which is deterministic; else as requested."""
    requested = dict(stage.mix) if stage.mix else None
    report = ((side.stats(f"mix.{stage.name}", caches) if f"mix.{stage.name}" in side.graph.names else None)
              or {}).get("mix")
    if report:
        return Rows(report["total"], report["counts"], "cached", stage.size, requested)
    if train is None:
        return Rows(None, {}, "requested", stage.size, requested)
    from .data.mixing import plan_counts  # what the mix step computes, so the numbers agree
    try:
        _, counts, total, _ = plan_counts(stage, side.recipe.groups, train)
    except RecipeError as e:
        return Rows(None, {}, "requested", stage.size, requested, e.message)
    short = [f"{s} needs {n:,} of its {train.get(s, 0):,} train rows"
             for s, n in counts.items() if n > train.get(s, 0)]
    problem = None if not short or side.recipe.sampling.oversample else \
        "the mix step will fail: " + ", ".join(short) + " (lower size, change the ratios or set sampling.oversample)"
    return Rows(total, counts, "computed", stage.size, requested, problem)


def _stage_view(side: Side, stage: Stage, train: dict[str, int] | None, caches: list[Cache]) -> StageView:
    t = stage.train
    rows = None if stage.skip else _mix_rows(side, stage, train, caches)
    return StageView(stage.skip, t.micro_batch_size, t.grad_accum, t.world_size, t.batch_size, t.epochs,
                     t.max_steps, t.learning_rate, rows)


def _why(old: dict, new: dict) -> list[str]:
    """Why a step's fingerprint moved: its parameters compared like the settings (list items by kind,
    so one inserted filter is one reason), then explain()'s files, upstream steps and code version."""
    params = [f"param {_change_text(c)}" for c in compare(old["params"], new["params"])]
    return params + [w for w in explain(old, new) if not w.startswith("param ")]


def _step_changes(a: Side | None, b: Side | None, caches: list[Cache]) -> list[StepChange]:
    """Steps of the after side whose fingerprint differs from the same-named step before (or that are
    new), in run order, then the steps that no longer run."""
    before = {s.name: s for s in a.graph.steps} if a else {}
    out = []
    for s in b.graph.steps if b else ():
        fp = b.fps[s.name]
        if s.name not in before:
            out.append(StepChange(s.name, s.kind, s.stage, "new", (), any(c.has(fp.value) for c in caches)))
        elif a.fps[s.name].value != fp.value:
            why = tuple(_why(a.fps[s.name].components, fp.components))
            out.append(StepChange(s.name, s.kind, s.stage, "changed", why, any(c.has(fp.value) for c in caches)))
    after = set(b.graph.names) if b else set()
    return out + [StepChange(n, s.kind, s.stage, "removed", (), False) for n, s in before.items() if n not in after]


def _stage_status(name: str, a: StageView | None, b: StageView | None, steps: dict[str, StepChange]) -> str:
    if b is None or b.skip:
        return "unchanged" if a is None or a.skip else ("skipped" if b else "removed")
    if a is None or a.skip:
        return "new"
    train = steps.get(f"train.{name}")
    if train is None:
        return "unchanged"
    return "cached" if train.cached else "retrain"


def diff_sides(a: Side | None, b: Side | None, title: str) -> RecipeDiff:
    notes: list[str] = []
    problems = [f"{tag} does not validate: {s.problem}" for tag, s in (("before", a), ("after", b))
                if s is not None and s.problem and not (a and b and a.problem and b.problem)]
    valid = [s for s in (a, b) if s is not None and s.recipe is not None]
    if a is not None and b is not None:
        # A fragment (a base that does not validate alone) is compared as written on both sides.
        changes = compare(a.doc, b.doc) if len(valid) == 2 else compare(a.raw, b.raw)
        if a.problem and b.problem:
            notes.append("neither side is a runnable recipe (e.g. a base fragment): compared as written, "
                         "without defaults or impact; see the recipes that extend it")
    else:
        changes = []
    caches = list({str(s.cache.root): s.cache for s in valid}.values())
    av = a if a is not None and a.recipe is not None else None
    bv = b if b is not None and b.recipe is not None else None

    steps = _step_changes(av, bv, caches)
    split = [_split_rows(s, caches) if s else ({}, None) for s in (av, bv)]
    # Stages that train (a meta recipe's implicit stage does not) or are skipped on purpose.
    views: list[dict[str, StageView]] = [
        {st.name: _stage_view(s, st, train, caches) for st in s.recipe.stages
         if st.skip or f"train.{st.name}" in s.graph.names} if s else {} for s, (_, train) in zip((av, bv), split)]
    by_step = {c.name: c for c in steps}
    stages = []
    for n in list(views[0]) + [n for n in views[1] if n not in views[0]]:
        va, vb = views[0].get(n), views[1].get(n)
        stages.append(StageImpact(n, _stage_status(n, va, vb, by_step), va, vb))
    (ra, _), (rb, _) = split
    sources = {s: (ra.get(s), rb.get(s)) for s in list(ra) + [s for s in rb if s not in ra]}
    if bv:
        old = set(av.graph.notes) if av else set()
        notes += [f"after: {n}" for n in bv.graph.notes if n not in old]
    return RecipeDiff(title, a.label if a else None, b.label if b else None, _by_section(changes), steps, stages,
                      sources, notes, problems)


def diff_files(a: str, b: str, overrides_a: tuple[str, ...] = (), overrides_b: tuple[str, ...] = (),
               cache_dir: str | None = None) -> RecipeDiff:
    def label(path: str, overrides: tuple[str, ...]) -> str:
        return " ".join([path] + [f"--set {o}" for o in overrides])
    la, lb = label(a, overrides_a), label(b, overrides_b)
    return diff_sides(load_side(Path(a), la, overrides_a, cache_dir), load_side(Path(b), lb, overrides_b, cache_dir),
                      f"{la} → {lb}")


# --- --git REV: REV's side rebuilt in a temp dir -----------------------------------------------------

def _git(top: Path | str, *args: str, stdin: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(["git", *args], cwd=top, input=stdin, capture_output=True, check=True)
    except FileNotFoundError:
        raise RecipeError("--git needs the `git` command") from None
    except subprocess.CalledProcessError as e:
        raise RecipeError(f"git {' '.join(args[:2])}: {e.stderr.decode(errors='replace').strip()}") from None
    return done.stdout


def _z(out: bytes) -> list[str]:
    return [p for p in out.decode().split("\0") if p]


def _materialise(rev: str, top: Path, root: Path) -> list[str]:
    """REV's side of the repository under `root`, built from as little as possible:
    - from REV itself: every YAML file (a recipe and the bases it extends must be read from REV, and a
      symlink would resolve back into the working tree), and every tracked file that differs from REV;
    - everything else is linked to the working tree: tracked files identical at REV, and ignored files
      (downloaded data, runs/ checkpoints), which git does not version, so both sides see the same bytes;
    - files added since REV are absent.
    So validation on the REV side is exact, not lenient: a data file that changed reads as changed.
    Returns the files at REV."""
    tree = {}
    for entry in _z(_git(top, "ls-tree", "-r", "-z", rev)):
        meta, path = entry.split("\t", 1)
        mode, kind, _ = meta.split()
        if kind == "blob":
            tree[path] = mode
    differ = set(_z(_git(top, "diff", "--name-only", "--no-renames", "-z", rev, "--"))) \
        | set(_z(_git(top, "ls-files", "--others", "--exclude-standard", "-z")))
    real = [p for p in tree if p.endswith((".yaml", ".yml")) or p in differ]
    hidden = differ - set(tree)
    # One `git cat-file --batch` for every file, streamed: a changed data file may be large.
    with subprocess.Popen(["git", "cat-file", "--batch"], cwd=top, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE) as git:
        for p in real:
            git.stdin.write(f"{rev}:{p}\n".encode())
            git.stdin.flush()
            left = int(git.stdout.readline().split()[2])
            dst = root / p
            dst.parent.mkdir(parents=True, exist_ok=True)
            if tree[p] == "120000":  # a symlink: its blob is the target
                os.symlink(git.stdout.read(left).decode(), dst)
            else:
                with open(dst, "wb") as f:
                    while left:
                        left -= f.write(git.stdout.read(min(left, 1 << 20)))
            git.stdout.read(1)  # the newline that ends each object
        git.stdin.close()
    # Directories holding a REV file or hiding an added one are real; their other entries are links.
    dirs = {str(q) for p in (*real, *hidden) for q in PurePosixPath(p).parents}
    taken = set(real) | hidden | dirs
    for d in sorted(dirs):
        (root / d).mkdir(parents=True, exist_ok=True)
        here = top / d
        if not here.is_dir() or (d != "." and here.is_symlink()):
            continue
        for entry in os.scandir(here):
            rel = entry.name if d == "." else f"{d}/{entry.name}"
            if entry.name != ".git" and rel not in taken:
                os.symlink(entry.path, root / rel)
    return list(tree)


@contextlib.contextmanager
def _cwd(path: Path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _is_recipe(file: Path) -> bool:
    """A YAML mapping with `recipe:` or `extends:`; a file that does not parse counts (and is reported)."""
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return True
    return isinstance(data, dict) and ("recipe" in data or "extends" in data)


def diff_git(rev: str, paths: list[str], overrides: tuple[str, ...] = (), cache_dir: str | None = None,
             overrides_a: tuple[str, ...] = (), overrides_b: tuple[str, ...] = ()) -> list[RecipeDiff]:
    """Every recipe under `paths` that differs between REV and the working tree."""
    try:
        top = Path(_git(".", "rev-parse", "--show-toplevel").decode().strip())
    except RecipeError:
        raise RecipeError("--git: not inside a git repository") from None
    try:
        _git(top, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except RecipeError:
        raise RecipeError(f"--git: unknown revision '{rev}'") from None
    specs = []
    for p in paths or ["."]:
        rel = os.path.relpath(Path(p).resolve(), top)
        if rel.startswith(".."):
            raise RecipeError(f"--git: {p} is outside the repository {top}")
        specs.append(PurePosixPath(rel))

    def under(p: str, spec: PurePosixPath) -> bool:
        return spec == PurePosixPath(".") or PurePosixPath(p).is_relative_to(spec)

    cache_dir = str(Path(cache_dir).resolve()) if cache_dir else None
    # From the top of the repository, the loader names working-tree files repository-relative, as REV's are.
    with tempfile.TemporaryDirectory(prefix="recipe-diff-") as tmp, _cwd(top):
        root = Path(tmp)
        tree = _materialise(rev, top, root)
        for spec, given in zip(specs, paths):
            if not (top / spec).exists() and not any(under(p, spec) for p in tree):
                raise RecipeError(f"--git: {given} exists neither in the working tree nor at {rev}")
        wanted = lambda p: p.endswith((".yaml", ".yml")) and any(under(p, s) for s in specs)  # noqa: E731
        at_rev = [p for p in tree if wanted(p)]
        now = [p for p in _z(_git(top, "ls-files", "--cached", "--others", "--exclude-standard", "-z"))
               if wanted(p) and (top / p).is_file()]
        out = []
        for p in sorted(set(at_rev) | set(now)):
            a = _git_side(root / p, f"{rev}:{p}", root, overrides + overrides_a, cache_dir, top / p) \
                if p in at_rev and _is_recipe(root / p) else None
            b = _git_side(top / p, p, top, overrides + overrides_b, cache_dir, top / p) \
                if p in now and _is_recipe(top / p) else None
            if a is None and b is None:
                continue
            title = p + (" (added)" if a is None else " (deleted)" if b is None else "")
            if isinstance(a, str) or isinstance(b, str):  # a side that does not even load
                if a != b:
                    errors = [f"{tag} does not load: {e}" for tag, e in (("before", a), ("after", b)) if isinstance(e, str)]
                    out.append(RecipeDiff(title, f"{rev}:{p}", p, [], [], [], {}, [], errors))
                continue
            d = diff_sides(a, b, title)
            if d.differs:
                out.append(d)
        return out


def _git_side(file: Path, label: str, root: Path, overrides, cache_dir, anchor: Path) -> Side | str:
    """A Side, or the error that stops the file from loading."""
    try:
        return load_side(file, label, overrides, cache_dir, root=root, cache_anchor=anchor)
    except RecipeError as e:
        return _relative("; ".join(str(e).splitlines()), root)


# --- output ------------------------------------------------------------------------------------------

def _show(v: Any, width: int = 80) -> str:
    """A value as a recipe would write it: YAML flow style for sections and lists, JSON for scalars."""
    if isinstance(v, str) and "\n" not in v and v.strip() == v and v:
        s = v
    elif isinstance(v, (dict, list)):
        s = yaml.safe_dump(v, default_flow_style=True, width=10**9, allow_unicode=True, sort_keys=False).strip()
    else:
        s = json.dumps(v, ensure_ascii=False)
    return s if len(s) <= width else s[:width - 1] + "…"


def _arrow(a: Any, b: Any, fmt=_show) -> str:
    if a is None:
        return fmt(b)
    if b is None:
        return fmt(a)
    return fmt(a) if a == b else f"{fmt(a)} → {fmt(b)}"


def _num(n: int | float | None) -> str:
    if n is None:
        return "?"
    return f"{n:,}" if isinstance(n, int) else f"{n:g}"


def _rows(r: Rows) -> str:
    if r.basis == "requested":
        size = ("all rows" if r.size is None else f"{r.size:,} rows" if isinstance(r.size, int)
                else f"{r.size:.0%} of all rows")
        mix = ", ".join(f"{k} {v:.0%}" for k, v in (r.mix or {}).items())
        return f"{size}" + (f" · {mix}" if mix else "") + (f" ⚠ {r.problem}" if r.problem else "")
    parts = ", ".join(f"{s} {n:,}" for s, n in r.by_source.items())
    text = f"{r.total:,}" + (f" ({parts})" if parts else "") if r.total is not None else "?"
    return text + (f" ⚠ {r.problem}" if r.problem else "")


def _stage_rows(st: StageImpact) -> str:
    a, b = (v.rows if v else None for v in (st.before, st.after))
    return _arrow(_rows(a) if a else None, _rows(b) if b else None, str)


def _batch(v: StageView) -> str:
    return f"{v.batch_size} ({v.micro_batch_size}×{v.grad_accum}×{v.world_size})"


def _epochs(v: StageView) -> str:
    return f"max_steps {v.max_steps}" if v.max_steps else f"{v.epochs:g}"


def _opt_steps(v: StageView) -> str:
    n = v.optimizer_steps
    return "?" if n is None else ("" if v.max_steps else "≈ ") + f"{n:,}"


def _stage_cells(st: StageImpact) -> list[str]:
    a, b = (v if v and not v.skip else None for v in (st.before, st.after))
    if a is None and b is None:
        return ["", "", "", ""]
    pick = lambda f: _arrow(f(a) if a else None, f(b) if b else None, str)  # noqa: E731
    steps = pick(_opt_steps)
    return [pick(_batch), pick(_epochs), pick(lambda v: f"{v.learning_rate:g}"), "" if steps == "?" else steps]


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def summary(d: RecipeDiff) -> str:
    trained = [s.name for s in d.stages if s.status in ("retrain", "new")]
    if d.before is None:
        return f"new recipe: trains {_n(len(trained), 'stage')} ({', '.join(trained)}) · {_n(len(d.steps), 'step')}"
    if d.after is None:
        return f"recipe deleted · {_n(len(d.steps), 'step')} no longer run"
    if not d.differs:
        return "no differences"
    parts = []
    if d.stages or d.steps:
        parts.append(f"retrain {_n(len(trained), 'stage')} ({', '.join(trained)})" if trained else "no retraining")
        rerun = sum(s.change != "removed" and not s.cached for s in d.steps)
        removed = sum(s.change == "removed" for s in d.steps)
        parts += [f"{_n(rerun, 'step')} to run"] + ([f"{removed} removed"] if removed else [])
    if d.changes:
        parts.append(f"{_n(len(d.changes), 'setting')} changed")
    return " · ".join(parts) or "does not load"


_MARK = {"added": "+", "removed": "-", "changed": "~", "moved": ">", "renamed": "="}


def _change_text(c: Change) -> str:
    if c.op == "changed":
        return f"{c.path}: {_show(c.before)} → {_show(c.after)}"
    if c.op == "moved":
        return f"{c.path} moved from position {c.before + 1} to {c.after + 1}"
    if c.op == "renamed":
        return f"{c.path} renamed from {c.before}"
    return f"{c.path} added: {_show(c.after)}" if c.op == "added" else f"{c.path} removed (was {_show(c.before)})"


def _step_text(s: StepChange) -> str:
    what = "retrain" if s.kind == "train" and s.change != "removed" else s.change
    what += " (cached)" if s.cached else ""
    why = "; ".join(s.why[:4]) + (" ..." if len(s.why) > 4 else "")
    return f"{what}{': ' + why if why else ''}"


def _shown(d: RecipeDiff) -> list[StageImpact]:
    """Stages worth a line: all of them when anything changed, minus those skipped on both sides."""
    if not d.differs:
        return []
    return [s for s in d.stages if any(v is not None and not v.skip for v in (s.before, s.after))]


def _text_lines(diffs: list[RecipeDiff], header: str | None) -> list[tuple[str, str]]:
    """(mark, line) pairs: the mark picks the colour on a terminal (+ added, - removed, ~ changed, ! retrain)."""
    lines = [("title", header)] if header else []
    for d in diffs:
        lines += [("title", d.title), ("", f"  {summary(d)}")]
        if d.changes:
            lines.append(("", "  settings"))
            lines += [(_MARK[c.op], f"    {c.section:<9} {_MARK[c.op]} {_change_text(c)}") for c in d.changes]
        shown = _shown(d)
        if shown:
            lines.append(("", "  training (batch = micro×accum×world · epochs · learning rate · optimizer steps)"))
            lines += [("!" if st.status in ("retrain", "new") else "",
                       f"    {st.name:<12} {st.status:<9} " + "  ".join(x for x in _stage_cells(st) if x)) for st in shown]
        rows = [(f"source {s}", _arrow(_num(a), _num(b), str))
                for s, (a, b) in d.sources.items() if (a, b) != (None, None)]
        rows += [(f"stage {st.name}", _stage_rows(st)) for st in shown]
        if rows:
            lines.append(("", "  rows"))
            lines += [("", f"    {k:<20} {v}") for k, v in rows]
        if d.steps and d.before and d.after:  # a whole recipe added or deleted: its steps go without saying
            lines.append(("", "  steps"))
            for s in d.steps:
                mark = "!" if s.kind == "train" and s.change != "removed" else _MARK.get(s.change, "+")
                lines.append((mark, f"    {mark} {s.name:<18} {_step_text(s)}"))
        lines += [("-", f"  problem: {n}") for n in d.problems] + [("", f"  note: {n}") for n in d.notes]
        lines.append(("", ""))
    return lines


def render_text(diffs: list[RecipeDiff], header: str | None = None) -> str:
    return "".join(line + "\n" for _, line in _text_lines(diffs, header))


def _md(v: str) -> str:
    return v.replace("|", "\\|").replace("\n", " ")


def _code(v: Any) -> str:
    s = _show(v)
    return _md(f"`` {s} ``" if "`" in s else f"`{s}`")


def _md_side(c: Change, side: str) -> str:
    v = getattr(c, side)
    if c.op == "moved":
        return f"position {v + 1}"
    if c.op == "renamed":
        return _md(v)
    return "" if v is None and c.op in ("added", "removed") else _code(v)


def render_markdown(diffs: list[RecipeDiff], header: str | None = None) -> str:
    lines = [f"## {header}", ""] if header else []
    for d in diffs:
        lines += [f"### {_md(d.title)}", "", f"**{summary(d)}**", ""]
        if d.changes:
            lines += ["| section | setting | before | after |", "|---|---|---|---|"]
            lines += [f"| {c.section} | {_md(c.path)}{'' if c.op == 'changed' else f' ({c.op})'} "
                      f"| {_md_side(c, 'before')} | {_md_side(c, 'after')} |" for c in d.changes]
            lines.append("")
        shown = _shown(d)
        if shown:
            lines += ["| stage | | batch (micro×accum×world) | epochs | learning rate | optimizer steps | rows |",
                      "|---|---|---|---|---|---|---|"]
            for st in shown:
                status = f"**{st.status}**" if st.status in ("retrain", "new") else st.status
                cells = [st.name, status, *_stage_cells(st), _md(_stage_rows(st))]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        src = [(s, ab) for s, ab in d.sources.items() if ab != (None, None)]
        if src:
            lines += ["| source | rows before | rows after |", "|---|---:|---:|"]
            lines += [f"| {s} | {_num(a)} | {_num(b)} |" for s, (a, b) in src]
            lines.append("")
        if d.steps and d.before and d.after:
            lines += [f"<details><summary>{len(d.steps)} step{'s' * (len(d.steps) != 1)} affected</summary>", "",
                      "| step | | why |", "|---|---|---|"]
            for s in d.steps:
                what, _, why = _step_text(s).partition(": ")
                lines.append(f"| {s.name} | {what} | {_md(why)} |")
            lines += ["", "</details>", ""]
        lines += [f"> **{_md(n)}**" for n in d.problems] + [f"> {_md(n)}" for n in d.notes]
        lines += [""] if d.problems or d.notes else []
    if diffs and any(d.stages for d in diffs):
        lines += ["<sub>rows: from the cache where a step with the same fingerprint has run (the mix, or the split's "
                  "train rows through the mix arithmetic), otherwise as requested</sub>", ""]
    return "\n".join(lines)


def to_json(diffs: list[RecipeDiff]) -> dict:
    def one(d: RecipeDiff) -> dict:
        out = asdict(d)
        out["status"] = ("added" if d.before is None else "deleted" if d.after is None
                         else "changed" if d.differs else "unchanged")
        out["changes"] = [{"section": c.section, **asdict(c)} for c in d.changes]
        out["sources"] = {s: {"before": a, "after": b} for s, (a, b) in d.sources.items()}
        for st, raw in zip(d.stages, out["stages"]):
            for side in ("before", "after"):
                view = getattr(st, side)
                if view is not None:
                    raw[side]["optimizer_steps"] = view.optimizer_steps
        return out
    return {"differences": any(d.differs for d in diffs), "recipes": [one(d) for d in diffs]}


def render(diffs: list[RecipeDiff], fmt: str, header: str | None = None) -> str:
    if fmt == "json":
        return json.dumps(to_json(diffs), ensure_ascii=False, indent=2) + "\n"
    if fmt == "markdown":
        return render_markdown(diffs, header)
    return render_text(diffs, header)


# --- CLI ---------------------------------------------------------------------------------------------

_STYLE = {"title": "bold", "+": "green", "-": "red", "~": "yellow", ">": "cyan", "=": "cyan", "!": "bold magenta"}


def _print_rich(diffs: list[RecipeDiff], header: str | None) -> None:
    from rich.console import Console
    from rich.text import Text
    console = Console(highlight=False)
    for mark, line in _text_lines(diffs, header):
        console.print(Text(line, style=_STYLE.get(mark, "")), soft_wrap=True)  # long lines wrap, not re-flow


def cli_diff(args) -> int:
    common = tuple(args.overrides)
    set_a, set_b = tuple(args.set_a), tuple(args.set_b)
    if args.git:
        diffs = diff_git(args.git, args.paths, common, args.cache_dir, set_a, set_b)
        where = ", ".join(args.paths) if args.paths else "the repository"
        header = f"recipe changes since {args.git}" if diffs else f"no recipe changes in {where} since {args.git}"
    elif 1 <= len(args.paths) <= 2:
        a, b = args.paths[0], args.paths[-1]  # one path: compare it with itself under --set-a/--set-b
        diffs, header = [diff_files(a, b, common + set_a, common + set_b, args.cache_dir)], None
    else:
        raise RecipeError("recipe diff takes two recipes (A.yaml B.yaml), one recipe with --set-a/--set-b, "
                          "or --git REV [PATH ...]")
    if args.format == "text" and sys.stdout.isatty():
        _print_rich(diffs, header)
    else:
        sys.stdout.write(render(diffs, args.format, header))
    return 1 if args.exit_code and any(d.differs for d in diffs) else 0
