"""What a step kind is, what a step is called, and what a step gets.

A step kind is one module in runner/steps/, registered in STEPS (runner/steps/__init__.py), and it is the
whole truth about its steps: the engine, plan, diff, report and CLI ask it, and never compare kind names.

  KIND                   a Kind: how its steps are written, what their tail names (a source, a stage, a
                         role), whether it trains, whether a dry run runs it, its result type
  VERSION                bump it when the step's output changes for the same inputs
  steps(recipe)          -> the StepIds of this kind that a recipe has (none, one, one per source or stage)
  declare(recipe, id)    -> Declared(params, inputs, files): everything the step depends on, decided from
                         the validated recipe and the step's stage or source. The compiler fingerprints
                         exactly this, and run() receives exactly this, so a setting the step reads but
                         does not declare cannot exist: there is no recipe in the context.
  run(ctx) -> Result     reads ctx.params and its inputs' artifacts (ctx.input(id)), writes only into
                         ctx.out, returns its result (a frozen KIND.result; a dict of its fields is accepted)
  publish(step, artifact, run_dir, result)   optional: copy user-facing outputs into the run directory
  predict(old, new, artifact)                optional: rows out under new parameters, from the last artifact
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..recipe.model import CHAT_TEMPLATES, Recipe
from .result import Result


@dataclass(frozen=True)
class Kind:
    """What a step kind says about itself."""
    written: str                    # how its steps are named: eval -> eval.<stage>, eval.few_shot
    per: str | None = None          # what a step's tail names: "source", "stage", "role" or None (no tail)
    trains: bool = False            # keeps checkpoints in partial/ until done (resume, guarded), reports to
                                    # loggers, runs under --launcher
    data: bool = False              # a data step: `run --dry-run` runs it (and stops before the others)
    result: type[Result] = Result   # the frozen type run() returns; how it is stored and shown
    column: str | None = None       # its column in the dry run's per-source table (rows out per source)


_REGISTRY: dict[str, Any] = {}   # the registry (runner/steps/__init__.py: STEPS) hands itself over here


def known(steps: dict[str, Any]) -> None:
    """Called once by the registry: the naming functions below ask it (it imports every step module, which
    import this one, so this module cannot import it)."""
    global _REGISTRY
    _REGISTRY = steps


def _kinds() -> Mapping[str, Any]:
    return _REGISTRY


def kind_of(step: "StepId | str") -> Kind:
    return _kinds()[step if isinstance(step, str) else step.kind].KIND


# --- step identity ---------------------------------------------------------------------------------

@dataclass(frozen=True, order=True)
class StepId:
    """A step's identity: its kind and the stage or source it runs for (neither for dedup, split, export)."""
    kind: str
    stage: str | None = None
    source: str | None = None

    def __str__(self) -> str:
        return format_step(self)


BEFORE = "before"   # eval.before: the starting model on every source's eval rows (the row "before")


def recipe_stage(step: StepId) -> str | None:
    """The recipe stage a step belongs to, as plan, diff and report show it: None for a step of no stage,
    for eval.before (the model before any stage trains) and for a step whose tail is a role
    (a meta recipe's train.meta/train.control)."""
    if kind_of(step).per != "stage" or step.stage == BEFORE:
        return None
    return step.stage


def format_step(step: StepId) -> str:
    """The one way a step is named to users: plan, diff, report, --only and --from."""
    kind = kind_of(step)
    tail = step.source if kind.per == "source" else step.stage
    return kind.written if tail is None else f"{kind.written}.{tail}"


def parse_step(name: str, among: Iterable[StepId] | None = None) -> StepId:
    """format_step's inverse: "eval.task" -> StepId("evaluate", stage="task"), "load.tang" -> source "tang".
    `among` (a graph's steps) settles a spelling two kinds share: train.meta is a meta recipe's."""
    if among is not None:
        for step in among:
            if format_step(step) == name:
                return step
    kinds = _kinds()
    for kind, mod in kinds.items():          # a kind written with a dot and no tail (eval.few_shot)
        if mod.KIND.written == name and mod.KIND.per is None:
            return StepId(kind)
    head, dot, tail = name.partition(".")
    found = [k for k, mod in kinds.items() if mod.KIND.written == head and (mod.KIND.per is None) != bool(dot)]
    found.sort(key=lambda k: kinds[k].KIND.per == "role")   # a stage named like a role is the stage's
    kind = found[0] if found else head
    if not dot:
        return StepId(kind)
    per = kinds[kind].KIND.per if kind in kinds else "stage"
    return StepId(kind, source=tail) if per == "source" else StepId(kind, stage=tail)


# --- what a step kind declares, and the compiled step ------------------------------------------------

@dataclass(frozen=True)
class Declared:
    params: Mapping[str, Any]           # typed values from the recipe; fingerprinted as canonical JSON
    inputs: tuple[StepId, ...] = ()     # upstream steps whose artifacts it reads
    files: tuple[str, ...] = ()         # paths (relative to the recipe) whose bytes are part of the fingerprint
    notes: tuple[str, ...] = ()         # what the user should know about this step in the plan
    # Read by run() but deliberately not fingerprinted, because no artifact depends on it (which loggers
    # a trainer reports to). Keep this rare and say why next to each key.
    runtime: Mapping[str, Any] = field(default_factory=dict)


def plain(obj: Any) -> Any:
    """Typed values -> JSON data: the fingerprinted form of exactly what a step reads."""
    if dataclasses.is_dataclass(obj):
        return {f.name.rstrip("_"): plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.metadata.get("fingerprint", True)   # evaluate.gates: read by the engine, by no step
                # a setting added at the value that means what the recipe did before it: old fingerprints hold
                and ("fingerprint_omits" not in f.metadata or getattr(obj, f.name) != f.metadata["fingerprint_omits"])}
    if isinstance(obj, Mapping):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return [plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


class NamedByStepId:
    """name, kind, stage and source of anything that carries a StepId as `id` (a step, a run's record of one)."""
    id: StepId

    @property
    def name(self) -> str:
        return format_step(self.id)

    @property
    def kind(self) -> str:
        return self.id.kind

    @property
    def stage(self) -> str | None:
        """The recipe stage this step belongs to (see recipe_stage)."""
        return recipe_stage(self.id)

    @property
    def source(self) -> str | None:
        return self.id.source


@dataclass(frozen=True, eq=False)
class Step(NamedByStepId):
    id: StepId
    params: Mapping[str, Any]           # as declared (typed); run() gets these
    inputs: tuple[StepId, ...]          # upstream steps
    files: tuple[str, ...] = ()
    runtime: Mapping[str, Any] = field(default_factory=dict)   # see Declared.runtime

    @cached_property
    def params_json(self) -> str:
        """Canonical JSON of the parameters: what the fingerprint hashes."""
        return json.dumps(plain(self.params), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


# --- what a step gets when it runs ---------------------------------------------------------------------

@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    force: bool = False
    trust: bool = False
    launcher: str = "none"
    num_procs: int = 1
    hostfile: str | None = None
    executor: str = "local"     # where data steps run (runner/executors/): never fingerprinted


@dataclass
class StepContext:
    step: Step
    fingerprint: str
    out: Path                       # empty; becomes the cached artifact on success
    inputs: Mapping[StepId, Path]   # upstream step -> its artifact directory (read-only)
    base_dir: Path                  # the recipe's folder: where the declared relative paths resolve
    run_dir: Path                   # runs/<recipe>: what the user looks at
    partial: Path                   # survives a crash: resumable work (training checkpoints)
    options: RunOptions = field(default_factory=RunOptions)
    secrets: tuple[str, ...] = ()   # the recipe's values from the environment: never written into a file
    log: Callable[[str], None] = print
    # progress(done, total): a long step says how far it is (rows); the UI shows a bar with rows/s and ETA
    progress: Callable[[int, int | None], None] = lambda done, total=None: None

    @property
    def params(self) -> Mapping[str, Any]:
        return self.step.params

    @cached_property
    def store(self):
        """The one object the step writes its artifact (ctx.out) through."""
        from ..executors.store import Store
        return Store(self.out)

    @cached_property
    def executor(self):
        """Where the step's row-parallel work runs (RunOptions.executor)."""
        from ..executors import get
        return get(self.options.executor)

    def input(self, step: StepId) -> Path:
        return self.inputs[step]

    def path(self, p: str | Path) -> Path:
        """A path from the recipe, resolved against the recipe's folder."""
        return (self.base_dir / p).resolve()


# --- files several step kinds declare ------------------------------------------------------------------

def template_files(recipe: Recipe) -> tuple[str, ...]:
    """A .jinja chat template is content: its bytes are part of the fingerprint."""
    return () if recipe.template.chat in CHAT_TEMPLATES else (recipe.template.chat,)


def model_files(recipe: Recipe, *, weights: bool) -> tuple[str, ...]:
    """A local model.base is content too: its tokenizer/config files, and its weights for training.
    (A hub id is identified by its name; builtin:tiny by the package version.)"""
    base = recipe.model.base
    if not base.startswith(("./", "../", "/")):
        return ()
    return (f"{base}/*",) if weights else (f"{base}/*.json", f"{base}/*.jinja", f"{base}/*.model", f"{base}/*.txt")


def builtin_weights(recipe: Recipe) -> dict:
    """A builtin model's shipped weights are content too: their digest, from the manifest beside them
    (a step that loads the model's weights declares it)."""
    from ..builtin import weights_digest
    digest = weights_digest(recipe.model.base)
    return {"base_weights": digest} if digest else {}
