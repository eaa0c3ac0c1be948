"""What a step kind is, what a step is called, and what a step gets.

A step kind is one module in runner/steps/, registered in STEPS (runner/steps/__init__.py), with:

  VERSION                bump it when the step's output changes for the same inputs
  declare(recipe, id)    -> Declared(params, inputs, files): everything the step depends on, decided from
                         the validated recipe and the step's stage or source. The compiler fingerprints
                         exactly this, and run() receives exactly this, so a setting the step reads but
                         does not declare cannot exist: there is no recipe in the context.
  run(ctx) -> stats      reads ctx.params and its inputs' artifacts (ctx.input(id)), writes only into
                         ctx.out, returns JSON stats (rows_in, rows_out, dropped{reason: n}, by_source{...})
  publish(step, artifact, run_dir, stats)   optional: copy user-facing outputs into the run directory
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..recipe.model import CHAT_TEMPLATES, Recipe

# --- step identity ---------------------------------------------------------------------------------

# How a step name is written: "<kind>", "<kind>.<stage>" or "<kind>.<source>", with these kinds written
# otherwise. load and filter run once per source, the kinds with a stage once per stage; a meta recipe's
# two trainings (meta_train) are written train.meta and train.control.
_WRITTEN = {"evaluate": "eval", "meta_train": "train", "few_shot": "eval.few_shot", "render_tasks": "render.tasks"}
_KIND_OF = {"eval": "evaluate", "eval.few_shot": "few_shot", "render.tasks": "render_tasks"}
_PER_SOURCE = frozenset({"load", "filter"})


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
    for eval.before (the model before any stage trains) and for a meta recipe's train.meta/train.control
    (their StepId's stage is a role, not a stage of the recipe)."""
    if step.kind == "meta_train" or (step.kind == "evaluate" and step.stage == BEFORE):
        return None
    return step.stage


def format_step(step: StepId) -> str:
    """The one way a step is named to users: plan, diff, report, --only and --from."""
    head = _WRITTEN.get(step.kind, step.kind)
    tail = step.source if step.kind in _PER_SOURCE else step.stage
    return head if tail is None else f"{head}.{tail}"


def parse_step(name: str, among: Iterable[StepId] | None = None) -> StepId:
    """format_step's inverse: "eval.task" -> StepId("evaluate", stage="task"), "load.tang" -> source "tang".
    `among` (a graph's steps) settles the one spelling two kinds share: train.meta is a meta recipe's."""
    if among is not None:
        for step in among:
            if format_step(step) == name:
                return step
    if name in _KIND_OF:
        return StepId(_KIND_OF[name])
    head, dot, tail = name.partition(".")
    kind = _KIND_OF.get(head, head)
    if not dot:
        return StepId(kind)
    return StepId(kind, source=tail) if kind in _PER_SOURCE else StepId(kind, stage=tail)


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
        return {f.name.rstrip("_"): plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
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
