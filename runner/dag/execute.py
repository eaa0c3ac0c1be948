"""Run a compiled graph: topological order, cached steps reused, each step's output committed
atomically, then the run report. The only layer that imports the steps' heavy code."""
from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import RecipeError, StepError
from ..paths import under
from ..recipe.secrets import redact
from ..recipe.model import Recipe
from ..steps import STEPS, versions
from ..steps.base import NamedByStepId, RunOptions, Step, StepContext, StepId, parse_step
from .cache import Cache
from .compile import Graph
from .fingerprint import fingerprint_graph

DATA_KINDS = ("load", "filter", "dedup", "split", "tasks", "render_tasks", "mix", "render")

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
    stats: dict = field(default_factory=dict)
    artifact: str | None = None


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
    from .ui import StepUI
    ui = StepUI(console)
    cache.root.mkdir(parents=True, exist_ok=True)
    fps = fingerprint_graph(graph, recipe.file.parent, versions(), cache.digests)
    order, forced = select(graph, sel, options.force)
    run_dir.mkdir(parents=True, exist_ok=True)
    records: list[StepRecord] = []
    done: dict[StepId, Path] = {}
    for sid in order:
        step = graph[sid]
        name = step.name
        fp = fps[name]
        if options.dry_run and step.kind not in DATA_KINDS:
            continue
        if cache.has(fp.value) and sid not in forced:
            done[sid] = cache.object_dir(fp.value)
            rec = StepRecord(sid, "cached", fp.value, 0.0, cache.stats(fp.value) or {}, str(done[sid]))
            records.append(rec)
            cache.remember(graph.recipe, name, fp, stats=rec.stats)   # "stale" is then explained against this run
            _publish(step, done[sid], run_dir, rec.stats)
            ui.finished(rec)
            continue
        partial = cache.partial_dir(fp.value)
        if step.kind == "train":
            _guard_resume(cache, graph.recipe, name, fp, options.force)
            cache.remember(graph.recipe, name, fp, suffix=".partial")
        tmp = cache.begin(fp.value)
        ctx = StepContext(step=step, fingerprint=fp.value, out=tmp, inputs={i: done[i] for i in step.inputs},
                          base_dir=recipe.file.parent, run_dir=run_dir, partial=partial, options=options,
                          secrets=graph.secrets, log=ui.log, progress=ui.progress)
        start = time.perf_counter()
        ui.started(step)
        try:
            stats = STEPS[step.kind].run(ctx) or {}
        except RecipeError as e:
            cache.abort(tmp)
            records.append(StepRecord(sid, "failed", fp.value, time.perf_counter() - start))
            ui.failed(name)
            write_report(recipe, graph, records, run_dir, cache)
            raise StepError(name, e.message if not e.where else str(e),
                            resume_command(recipe, name, argv, overrides)) from None
        except BaseException:
            cache.abort(tmp)
            ui.failed(name)
            raise
        seconds = time.perf_counter() - start
        before_commit(step)
        _check_balance(name, stats)
        stored = redact(stats, graph.secrets)[0]   # e.g. generated samples that echo a prompt from the environment
        manifest = {"step": name, "kind": step.kind, "recipe": graph.recipe, "fingerprint": fp.value,
                    "components": fp.components, "stats": stored, "seconds": round(seconds, 3)}
        done[sid] = cache.commit(tmp, fp.value, manifest)
        cache.remember(graph.recipe, name, fp, stats=stored)
        if step.kind == "train":
            cache.forget(graph.recipe, name, suffix=".partial")
            cache.drop_partial(fp.value)
        rec = StepRecord(sid, "ran", fp.value, seconds, stats, str(done[sid]))
        records.append(rec)
        _publish(step, done[sid], run_dir, stats)
        ui.finished(rec)
    write_report(recipe, graph, records, run_dir, cache)
    return records


def _publish(step, artifact: Path, run_dir: Path, stats: dict) -> None:
    """Steps with user-facing outputs copy them into the run directory, whether they ran or were cached."""
    publish = getattr(STEPS[step.kind], "publish", None)
    if publish is not None:
        publish(step, artifact, run_dir, stats)


def _check_balance(name: str, stats: dict) -> None:
    """Nothing is lost silently: rows in == rows out + dropped, for every data step."""
    if "rows_in" not in stats:
        return
    dropped = sum(stats.get("dropped", {}).values())
    added = sum(stats.get("added", {}).values())   # oversampling repeats rows: counted, never silent
    if stats["rows_in"] + added != stats["rows_out"] + dropped:
        raise AssertionError(f"{name}: rows_in {stats['rows_in']} + added {added} != rows_out {stats['rows_out']} "
                             f"+ dropped {dropped}")


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


# --- report ------------------------------------------------------------------------------------------

def write_report(recipe: Recipe, graph: Graph, records: list[StepRecord], run_dir: Path, cache: Cache) -> dict:
    from .report import build_report, copy_quarantine, write_markdown
    report = redact(build_report(recipe, graph, records, run_dir), graph.secrets)[0]
    copy_quarantine(report, run_dir)
    under(run_dir, "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    write_markdown(report, run_dir)
    return report
