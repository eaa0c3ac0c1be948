"""Run a compiled graph: topological order, cached steps reused, each step's output committed
atomically, then the run report. The only layer that imports the steps' heavy code."""
from __future__ import annotations

import importlib.util
import os
import shlex
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import RecipeError, StepError
from ..paths import under
from ..recipe.secrets import redact, scrub
from ..recipe.model import Recipe
from ..steps import STEPS, versions
from ..steps.base import NamedByStepId, RunOptions, Step, StepContext, StepId, kind_of, parse_step
from ..steps.result import Result
from .cache import Cache
from .compile import Graph
from .fingerprint import fingerprint_graph

# A fault-injection seam for tests: called after a step wrote its files and before they are committed
# (tests/test_dag.py replaces it to simulate a kill -9 at the worst moment).
before_commit: Callable[[Step], None] = lambda step: None


@dataclass
class Selection:
    only: str | None = None
    from_step: str | None = None


@dataclass
class StepRecord(NamedByStepId):
    id: StepId
    status: str                 # cached | ran | failed
    fingerprint: str
    seconds: float
    result: Result = field(default_factory=Result)   # of the step kind's result type
    artifact: str | None = None

    @property
    def stats(self) -> dict:
        """The result as JSON data (what the cache keeps)."""
        return self.result.to_json()


def result_of(kind: str, data) -> Result:
    """A step's result, typed by its kind, from what run() returned or the cache kept."""
    return kind_of(kind).result.of(data)


def _step_named(graph: Graph, name: str | None, flag: str) -> StepId | None:
    if name is None:
        return None
    step = parse_step(name, graph.ids)
    if step not in graph.ids:
        from ..recipe.validate import did_you_mean
        raise RecipeError(f"{flag}: no step named '{name}'{did_you_mean(name, graph.names)} "
                          f"(see `recipe plan` for the step names)")
    return step


def select(graph: Graph, sel: Selection, force: bool) -> tuple[list[StepId], set[StepId]]:
    """-> (steps to visit in order, steps to recompute even if cached)."""
    only = _step_named(graph, sel.only, "--only")
    start = _step_named(graph, sel.from_step, "--from")
    if only:
        keep = graph.ancestors(only) | {only}
        forced = {only} if force else set()
    elif start:
        keep = set(graph.ids)
        forced = graph.descendants(start)
    else:
        keep = set(graph.ids)
        forced = set(graph.ids) if force else set()
    return [n for n in graph.ids if n in keep], forced


def resume_command(recipe: Recipe, step: str, argv: tuple[str, ...] | None, overrides: tuple[str, ...]) -> str:
    """The command that resumes at `step`: what the user typed, less any step selection, plus --from."""
    if argv is None:
        argv = ("run", str(recipe.file.relative_to(Path.cwd()) if recipe.file.is_relative_to(Path.cwd())
                            else recipe.file), *[x for o in overrides for x in ("--set", o)])
    keep, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--from", "--only"):
            skip = True
        elif not a.startswith(("--from=", "--only=")) and a != "--force":
            keep.append(a)
    return shlex.join(["recipe", *keep, "--from", step])


def execute(recipe: Recipe, graph: Graph, *, cache: Cache, run_dir: Path, options: RunOptions,
            sel: Selection = Selection(), overrides: tuple[str, ...] = (), argv: tuple[str, ...] | None = None,
            console=None) -> list[StepRecord]:
    from . import runindex
    from .ui import StepUI
    started = runindex.now()
    ui = StepUI(console)
    cache.root.mkdir(parents=True, exist_ok=True)
    fps = fingerprint_graph(graph, recipe.file.parent, versions(), cache.digests)
    order, forced = select(graph, sel, options.force)
    run_dir.mkdir(parents=True, exist_ok=True)
    records: list[StepRecord] = []
    done: dict[StepId, Path] = {}
    for sid in order:
        step, fp, kind = graph[sid], fps[graph[sid].name], kind_of(sid)
        if options.dry_run and not kind.data:
            continue
        if cache.has(fp.value) and sid not in forced:
            done[sid] = cache.object_dir(fp.value)
            rec = StepRecord(sid, "cached", fp.value, 0.0, result_of(step.kind, cache.stats(fp.value)), str(done[sid]))
            cache.remember(graph.recipe, step.name, fp, stats=rec.stats)   # "stale" is then explained against this run
        else:
            # one run at a time trains a step: a second would resume from the first's checkpoints
            with _exclusive(cache, fp.value, step.name) if kind.trains else nullcontext():
                rec = _run(step, fp, kind, sid in forced, done, records,
                           _Run(recipe, graph, cache, run_dir, options, overrides, argv, ui))
            done[sid] = Path(rec.artifact)
        records.append(rec)
        _publish(step, done[sid], run_dir, rec.result)
        ui.finished(rec)
        if recipe.evaluate.gates:
            _check_gates(recipe, graph, records, run_dir, cache, step.name,
                         index=lambda report: _index_run(recipe, graph, records, report, cache, started, sel, options))
    _index_run(recipe, graph, records, write_report(recipe, graph, records, run_dir, cache), cache, started, sel, options)
    return records


def _index_run(recipe: Recipe, graph: Graph, records: list, report: dict, cache: Cache, started: str, sel: Selection,
               options: RunOptions) -> None:
    """The run's line in the run index (runner/dag/runindex.py), which `recipe runs`, `compare` and `diff` read."""
    from . import runindex
    selection = {"only": sel.only, "from": sel.from_step, "dry_run": options.dry_run}
    runindex.append(cache.root, runindex.entry(recipe, graph, records, report, started=started, selection=selection))


@dataclass(frozen=True)
class _Run:
    """What every step of one run shares."""
    recipe: Recipe
    graph: Graph
    cache: Cache
    run_dir: Path
    options: RunOptions
    overrides: tuple[str, ...]
    argv: tuple[str, ...] | None
    ui: object


def _run(step: Step, fp, kind, forced: bool, done: dict, records: list, r: _Run) -> StepRecord:
    """Run one step and commit its artifact (its files, then the manifest that makes them an artifact)."""
    cache, name = r.cache, step.name
    if kind.trains:
        _guard_resume(cache, r.graph.recipe, name, fp, r.options.force)
        if forced:   # --force starts the step over: not from its own checkpoints either
            cache.drop_partial(fp.value)
        cache.remember(r.graph.recipe, name, fp, suffix=".partial")
    tmp = cache.begin(fp.value)
    ctx = StepContext(step=step, fingerprint=fp.value, out=tmp, inputs={i: done[i] for i in step.inputs},
                      base_dir=r.recipe.file.parent, run_dir=r.run_dir, partial=cache.partial_dir(fp.value),
                      options=r.options, secrets=r.graph.secrets, progress=r.ui.progress,
                      # a step's lines go through one place, which never shows a value from the environment
                      log=lambda msg: r.ui.log(scrub(msg, r.graph.secrets)))
    start = time.perf_counter()
    r.ui.started(step)
    try:
        with _training(step, r.run_dir) if kind.trains else nullcontext():
            result = result_of(step.kind, STEPS[step.kind].run(ctx))
        seconds = time.perf_counter() - start
        # between the step's files and its manifest any fault (a full disk) leaves nothing half-committed
        before_commit(step)
        if result.unbalanced():   # nothing is lost silently: a data step that cannot balance its books is a bug
            raise AssertionError(f"{name}: {result.unbalanced()}")
        # text copied from a value from the environment (a sample echoing a prompt) is stored as ***;
        # numbers are counts, never masked
        stored = redact(result.to_json(), r.graph.secrets, numbers=False)[0]
        manifest = {"step": name, "kind": step.kind, "recipe": r.graph.recipe, "fingerprint": fp.value,
                    "components": fp.components, "stats": stored, "seconds": round(seconds, 3)}
        artifact = cache.commit(tmp, fp.value, manifest)
    except RecipeError as e:
        cache.abort(tmp)
        records.append(StepRecord(step.id, "failed", fp.value, time.perf_counter() - start))
        r.ui.failed(name)
        write_report(r.recipe, r.graph, records, r.run_dir, cache)
        raise StepError(name, scrub(e.message if not e.where else str(e), r.graph.secrets),
                        resume_command(r.recipe, name, r.argv, r.overrides)) from None
    except BaseException:
        cache.abort(tmp)
        r.ui.failed(name)
        raise
    cache.remember(r.graph.recipe, name, fp, stats=stored)
    if kind.trains:
        cache.forget(r.graph.recipe, name, suffix=".partial")
        cache.drop_partial(fp.value)
    return StepRecord(step.id, "ran", fp.value, seconds, result, str(artifact))


@contextmanager
def _exclusive(cache: Cache, fp: str, name: str):
    """Hold <cache>/partial/<fp>.lock while a step trains: a second run of the same step (two terminals, a
    scheduler's retry) is refused with one line instead of resuming from the first's checkpoints."""
    import fcntl
    path = under(cache.root, "partial", f"{fp}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StepError(name, "another run is training this very step right now (same recipe, same data "
                                  "and settings); wait for it to finish, then rerun: this one will find it cached",
                            None) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _publish(step, artifact: Path, run_dir: Path, result: Result) -> None:
    """Steps with user-facing outputs copy them into the run directory, whether they ran or were cached."""
    publish = getattr(STEPS[step.kind], "publish", None)
    if publish is not None:
        publish(step, artifact, run_dir, result)


@contextmanager
def _training(step: Step, run_dir: Path):
    """What every training step gets: its loggers checked before it starts, and TensorBoard's folder next to
    the run report (one per step unless the user chose one), not under the checkpoints removed once done."""
    report_to = tuple(step.runtime.get("report_to", ()))
    for name in report_to:
        if importlib.util.find_spec(name) is None and not (name == "tensorboard" and importlib.util.find_spec("tensorboardX")):
            raise RecipeError(f"train.report_to: {name} is not installed; `pip install {name}` or remove it "
                              "from report_to (the run report always gets the losses)")
    tb = "tensorboard" in report_to and "TENSORBOARD_LOGGING_DIR" not in os.environ
    if tb:
        from ..paths import own_folder
        folder = own_folder(run_dir, f"{step.id.stage or step.name}/tensorboard")
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(folder.resolve())
    try:
        yield
    finally:
        if tb:
            del os.environ["TENSORBOARD_LOGGING_DIR"]


def _guard_resume(cache: Cache, recipe: str, name: str, fp, force: bool) -> None:
    """A half-trained stage may only be resumed on the data and settings it started with."""
    from .fingerprint import explain
    prev = cache.last(recipe, name, suffix=".partial")
    if not prev or prev["fingerprint"] == fp.value:
        return
    saved = list((cache.partial_dir(prev["fingerprint"]) / "checkpoints").glob("checkpoint-*"))
    if saved and not force:
        why = "; ".join(explain(prev["components"], fp.components)[:4])
        raise StepError(name, f"a half-trained run of this stage exists, but the recipe changed since it started "
                              f"({why}); refusing to resume it on different data. Rerun with --force to start "
                              "this stage over")
    cache.drop_partial(prev["fingerprint"])


def _check_gates(recipe: Recipe, graph: Graph, records: list[StepRecord], run_dir: Path, cache: Cache, step: str,
                 index) -> None:
    """evaluate.gates after each step (runner/dag/gates.py): a breach writes the report, puts the run in the run
    index (with its failed gates) and stops the run."""
    from .gates import FAIL, failure
    from .report import build_report
    gates = build_report(recipe, graph, records, run_dir)["gates"]
    if gates["status"] == FAIL:
        index(write_report(recipe, graph, records, run_dir, cache))
        raise failure(gates, step, run_dir)


# --- report ------------------------------------------------------------------------------------------

def write_report(recipe: Recipe, graph: Graph, records: list[StepRecord], run_dir: Path, cache: Cache) -> dict:
    from .report import build_report, finish, write_json, write_markdown
    # text copied from a value from the environment is ***; numbers are counts and metrics, never masked
    report = redact(build_report(recipe, graph, records, run_dir), graph.secrets, numbers=False)[0]
    finish(report, run_dir)
    write_json(report, run_dir)
    write_markdown(report, run_dir)
    from .report_html import write_html
    write_html(report, recipe, records, run_dir, graph.secrets)
    return report
