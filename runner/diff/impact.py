"""Impact: both recipes are compiled and fingerprinted (nothing runs) and every step whose fingerprint moved
is listed with the reason `plan` would give; a moved train step means retraining. Rows come from the
cache's stats where a step with that exact fingerprint has run, else they are computed from the split's
cached train rows by the mix step's own arithmetic, else the requested size and shares are shown."""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..dag.cache import Cache, default_dir
from ..dag.compile import Graph, compile_recipe
from ..dag.plan import predict
from ..dag.fingerprint import Fingerprint, explain, fingerprint_graph
from ..errors import ValidationError
from ..recipe.canonical import canonical
from ..recipe.secrets import mask
from ..recipe.load import load_document
from ..recipe.model import Recipe, Stage
from ..recipe.validate import validate
from ..steps import STEPS
from ..steps.base import StepId, kind_of, parse_step
from ..steps.result import Result
from ..recipe.compare import Change, by_section, compare
from ..dag.lock import changes_between
from .metrics import Metrics, for_sides

# --- one side of the comparison --------------------------------------------------------------------

def _versions() -> dict[str, int]:
    from ..steps import versions  # the registry: step modules import their heavy libraries only in run()
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
    secrets: frozenset = frozenset()  # paths of values from the environment in `raw`

    @property
    def doc(self) -> dict:
        # Secrets masked as in `recipe show`; a raw document goes through the same function.
        return canonical(self.recipe) if self.recipe else mask(self.raw, self.secrets)

    def result(self, step: StepId, caches: list[Cache]) -> Result | None:
        """The result of a run of exactly this step (same fingerprint), from either side's cache: the
        cache is content-addressed, so an artifact made for the other recipe is this step's too.
        None when the recipe has no such step or it has not run."""
        if step not in self.graph:
            return None
        fp = self.fps[str(step)].value
        result = kind_of(step).result
        for c in caches:
            if c.has(fp):
                return result.of(c.stats(fp))
        last = self.cache.last(self.recipe.name, str(step))  # the index outlives an artifact that was removed
        return result.of(last.get("stats")) if last and last.get("fingerprint") == fp else None

    def having(self, attr: str, stage: str | None = None) -> list[StepId]:
        """The steps (of `stage`, or of none) whose kind module offers `attr`, in run order."""
        return [s.id for s in self.graph.steps if s.stage == stage and hasattr(STEPS[s.kind], attr)]


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
        return Side(label, doc.data, problem=_relative("; ".join(str(p) for p in e.problems[:3]), root) + more,
                    secrets=frozenset(doc.secrets))
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

    @property
    def id(self) -> StepId:
        # the name says the stage or source (eval.before's stage is not a recipe stage); the kind says which
        # of the kinds that share a spelling (train.meta is meta_train's)
        return dataclasses.replace(parse_step(self.name), kind=self.kind)


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
    micro_batch_size: int | str
    grad_accum: int | None
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
    metrics: Metrics | None = None   # each side's latest run in the run index and the deltas (diff/metrics.py)
    lock: list[str] = dataclasses.field(default_factory=list)   # how the sides' R.lock files differ (runner/dag/lock.py)

    @property
    def differs(self) -> bool:
        return bool(self.changes or self.steps or self.problems or self.lock or self.before is None or self.after is None)


def _split_rows(side: Side, caches: list[Cache]) -> tuple[dict[str, int | None], dict[str, int] | None]:
    """(rows each source brings to the step that splits them into train and eval rows, train rows per
    source), from a run of that exact step: the last step of no stage whose result has train rows."""
    for step in reversed([s.id for s in side.graph.steps if s.stage is None]):
        res = side.result(step, caches)
        if res is not None and res.train_rows() is not None:
            return {s: (res.by_source.get(s) or {}).get("rows_out") for s in side.recipe.sources}, res.train_rows()
    return dict.fromkeys(side.recipe.sources), None


def _stage_rows(side: Side, stage: Stage, train: dict[str, int] | None, caches: list[Cache]) -> Rows:
    """A stage's rows, as the step kind that draws them says (its stage_rows: from its result when this
    exact step has run, else by its own arithmetic from the train rows, else as requested)."""
    requested = dict(stage.mix) if stage.mix else None
    for step in side.having("stage_rows", stage.name):
        rows = STEPS[step.kind].stage_rows(side.recipe, stage, side.result(step, caches), train)
        return Rows(rows["total"], rows["by_source"], rows["basis"], stage.size, requested, rows.get("problem"))
    return Rows(None, {}, "requested", stage.size, requested)


def _stage_view(side: Side, stage: Stage, train: dict[str, int] | None, caches: list[Cache]) -> StageView:
    t = stage.train
    rows = None if stage.skip else _stage_rows(side, stage, train, caches)
    return StageView(stage.skip, t.micro_batch_size, t.grad_accum, t.world_size, t.batch_size, t.epochs,
                     t.max_steps, t.learning_rate, rows)


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
            why = tuple(explain(a.fps[s.name].components, fp.components))
            old = a.fps[s.name].value
            cache = next((c for c in caches if c.has(old)), None)
            guess = predict(s.kind, a.fps[s.name].components, fp.components, cache, old) if cache else None
            if guess is not None:
                why += (guess[1],)
            out.append(StepChange(s.name, s.kind, s.stage, "changed", why, any(c.has(fp.value) for c in caches)))
    after = set(b.graph.names) if b else set()
    return out + [StepChange(n, s.kind, s.stage, "removed", (), False) for n, s in before.items() if n not in after]


def _stage_status(name: str, a: StageView | None, b: StageView | None, steps: list[StepChange]) -> str:
    if b is None or b.skip:
        return "unchanged" if a is None or a.skip else ("skipped" if b else "removed")
    if a is None or a.skip:
        return "new"
    train = [c for c in steps if c.stage == name and kind_of(c.kind).trains]
    if not train:
        return "unchanged"
    return "cached" if all(c.cached for c in train) else "retrain"


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
         if st.skip or any(kind_of(x.id).trains and x.stage == st.name for x in s.graph.steps)} if s else {}
        for s, (_, train) in zip((av, bv), split)]
    stages = []
    for n in list(views[0]) + [n for n in views[1] if n not in views[0]]:
        va, vb = views[0].get(n), views[1].get(n)
        stages.append(StageImpact(n, _stage_status(n, va, vb, steps), va, vb))
    (ra, _), (rb, _) = split
    sources = {s: (ra.get(s), rb.get(s)) for s in list(ra) + [s for s in rb if s not in ra]}
    if bv:
        old = set(av.graph.notes) if av else set()
        notes += [f"after: {n}" for n in bv.graph.notes if n not in old]
    return RecipeDiff(title, a.label if a else None, b.label if b else None, by_section(changes), steps, stages,
                      sources, notes, problems, for_sides(av, bv) if bv and (changes or steps) else None,
                      changes_between(av.recipe.file if av else None, bv.recipe.file if bv else None))


def diff_files(a: str, b: str, overrides_a: tuple[str, ...] = (), overrides_b: tuple[str, ...] = (),
               cache_dir: str | None = None) -> RecipeDiff:
    def label(path: str, overrides: tuple[str, ...]) -> str:
        return " ".join([path] + [f"--set {o}" for o in overrides])
    la, lb = label(a, overrides_a), label(b, overrides_b)
    return diff_sides(load_side(Path(a), la, overrides_a, cache_dir), load_side(Path(b), lb, overrides_b, cache_dir),
                      f"{la} → {lb}")
