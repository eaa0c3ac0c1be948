"""The library API: what the CLI and the tests call, with typed results. Stops before `execute` for
validate/show/schema/plan, so those never import torch, transformers, datasets, trl, peft or deepspeed."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import yaml

from .recipe import model
from .recipe.canonical import canonical
from .recipe.load import load_document
from .recipe import secrets
from .recipe.secrets import mask  # noqa: F401  (the library API)
from .recipe.validate import validate

if TYPE_CHECKING:
    from .dag.cache import Cache
    from .dag.compile import Graph
    from .dag.execute import StepRecord
    from .dag.plan import PlannedStep


class Plan(NamedTuple):
    """What `recipe plan` shows: the compiled graph, every step's status and why, and the cache checked."""
    graph: Graph
    steps: list[PlannedStep]
    cache: Cache


class Run(NamedTuple):
    """What a run did: the recipe as run, its graph, one record per visited step, and the run directory."""
    recipe: model.Recipe
    graph: Graph
    records: list[StepRecord]
    run_dir: Path


def load(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> model.Recipe:
    """Read, merge, override, interpolate and validate a recipe -> frozen Recipe (or ValidationError)."""
    return validate(load_document(Path(path), tuple(overrides)))


def show(recipe: model.Recipe, fmt: str = "yaml") -> str:
    doc = canonical(recipe)
    if fmt == "json":
        import json
        return json.dumps(doc, ensure_ascii=False, indent=2)
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=100)


def schema_text() -> str:
    from .recipe.schema import schema_text as text
    return text()


# --- plan / run --------------------------------------------------------------------------------------

def plan(path: str | Path, overrides=(), cache_dir: str | None = None) -> Plan:
    """The plan of a recipe against its cache. Light: no heavy imports."""
    from .dag.cache import Cache, default_dir
    from .dag.compile import compile_recipe
    from .dag.fingerprint import fingerprint_graph
    from .dag.plan import plan as make_plan
    from .paths import folder_option
    from .steps import versions
    recipe = load(path, overrides)
    graph = compile_recipe(recipe)
    cache = Cache(folder_option(default_dir(recipe.file, cache_dir), "--cache-dir"))
    fps = fingerprint_graph(graph, recipe.file.parent, versions(), cache.digests)
    # what a source kind knows beyond the recipe (the commit an unpinned hub source stands for, a remote
    # file whose server says nothing that follows its bytes) is a fact of the cache or the server
    graph = dataclasses.replace(graph, notes=graph.notes + tuple(shown(recipe, n) for n in _source_notes(recipe, graph, fps)))
    return Plan(graph, make_plan(graph, fps, cache), cache)


def _source_notes(recipe: model.Recipe, graph: Graph, fps) -> list[str]:
    from . import sources
    out = sources.notes(recipe.sources)
    for step in graph.steps:
        for entry, value in fps[step.name].components["files"].items():
            n = sources.note(entry, value)
            if n:
                out.append(f"{step.name}: {n}")
    return out


def warn_unpinned(recipe: model.Recipe) -> None:
    """What the source kinds warn about from local state alone: a hub source that follows a branch (which
    commit it stands for today and how to pin it)."""
    import sys

    from . import sources
    for n in sources.notes(recipe.sources):
        print(f"warning: {shown(recipe, n)}", file=sys.stderr)


def warn_missing(recipe: model.Recipe) -> None:
    import sys
    for n in missing(recipe):
        print(f"warning: {shown(recipe, n)}", file=sys.stderr)


def shown(recipe: model.Recipe, text: str) -> str:
    """A message about a recipe as the screen shows it: its values from the environment as ***."""
    from .recipe import secrets
    return secrets.scrub(text, secrets.texts(recipe.document, recipe.secrets))


def missing(recipe: model.Recipe) -> list[str]:
    """What a valid recipe needs that is not there yet. `model.init_from` names the weights of an earlier
    run (runs/<recipe>/<stage>/final): a recipe may be validated before that run, so it is a warning,
    but one that `validate` and `plan` must say rather than let `run` find out at its first train step."""
    init = recipe.model.init_from
    if init and not recipe.path(init).exists():
        return [f"model.init_from: no saved weights at {init} yet; `recipe run` stops at the first train step "
                "until the run that writes them has finished"]
    return []


def run(path: str | Path, overrides=(), *, cache_dir: str | None = None, output: str | None = None,
        only: str | None = None, from_step: str | None = None, force: bool = False, dry_run: bool = False,
        trust: bool = False, launcher: str = "none", num_procs: int | None = None, hostfile: str | None = None,
        console=None, argv: tuple[str, ...] | None = None, executor: str = "local", nnodes: int = 1,
        node_rank: int = 0, rdzv_endpoint: str | None = None, locked: bool = False) -> Run:
    """Execute a recipe (cached steps are reused); writes the run directory's recipe.yaml and report.
    `executor` (runner/executors/) is where the data steps' batches run: no part of any fingerprint.
    With nnodes > 1 (torchrun), node 0 does all that and a node of node_rank > 0 only trains its share of
    node 0's training steps (runner/train/nodes.py): its Run has no graph, records or run directory."""
    from .dag.cache import Cache, default_dir
    from .dag.compile import compile_recipe
    from .dag.execute import Selection, execute
    from .errors import RecipeError
    from .paths import folder_option, publish_files, under
    from .steps.base import RunOptions
    from .train.launch import check as check_launcher
    overrides = tuple(overrides) + ((f"train.world_size={num_procs}",) if num_procs else ())
    recipe = load(path, overrides)
    if recipe.model.trust_remote_code and not trust:
        raise RecipeError("model.trust_remote_code is true: running model code from the hub needs an explicit "
                          "--trust on the command line")
    if num_procs is not None and num_procs < 1:
        raise RecipeError(f"--num-procs {num_procs}: it must be at least 1")
    from .train.nodes import Nodes
    nodes = Nodes(nnodes, node_rank, rdzv_endpoint)
    check_launcher(launcher, num_procs, hostfile, nodes)
    from .executors import get as get_executor
    get_executor(executor)     # an unknown executor is one line before anything runs
    if only and from_step:
        raise RecipeError("--only and --from cannot be combined: --only runs one step, --from reruns a step "
                          "and everything after it")
    from .train.versions import check as check_versions
    check_versions()   # a library outside the declared range is one line now, not a traceback mid-training
    import sys

    if nodes.follower:
        return _follow(recipe, nodes, cache_dir, num_procs)
    from . import sources
    # which commit each hub source's branch names now, before anything is fingerprinted
    sources.refresh(recipe.sources, lambda m: print(f"note: {m}", file=sys.stderr))
    graph = compile_recipe(recipe)
    run_dir = folder_option(output, "--output") if output else under("runs", secrets.folder(recipe))
    cache_root = default_dir(recipe.file, cache_dir)
    if locked:   # every difference from R.lock, one line each, before anything runs
        from .dag.lock import check as check_lock
        check_lock(path, overrides, Cache(cache_root).digests)
    folder_option(cache_root, "--cache-dir" if cache_dir else "the cache folder")
    publish_files(run_dir, "recipe.yaml", {"recipe.yaml": show(recipe).encode("utf-8")})
    options = RunOptions(dry_run=dry_run, force=force, trust=trust, launcher=launcher, num_procs=num_procs or 1,
                         hostfile=hostfile, executor=executor)
    from .train.nodes import leading
    with leading(nodes, _hello(recipe, nodes, num_procs), cache_root,
                 log=lambda m: print(f"note: {m}", file=sys.stderr)):
        records = execute(recipe, graph, cache=Cache(cache_root), run_dir=run_dir,
                          options=options, sel=Selection(only=only, from_step=from_step), overrides=overrides,
                          argv=argv, console=console)
    return Run(recipe, graph, records, run_dir)


def _hello(recipe: model.Recipe, nodes, num_procs: int | None) -> dict:
    """What every node of a run must agree on (runner/train/nodes.py compares it when a node joins)."""
    from .train.nodes import digest
    return {"recipe": digest(show(recipe)), "num_procs": num_procs, "nnodes": nodes.nnodes}


def _follow(recipe: model.Recipe, nodes, cache_dir: str | None, num_procs: int | None) -> Run:
    """A node other than 0: no step runs here (node 0 runs them once); this node trains its share."""
    import sys

    from .dag.cache import default_dir
    from .recipe import secrets
    from .train.launch import follow
    follow(nodes, _hello(recipe, nodes, num_procs), default_dir(recipe.file, cache_dir),
           secrets=tuple(secrets.texts(recipe.document, recipe.secrets)),
           log=lambda m: print(f"note: {m}", file=sys.stderr))
    return Run(recipe, None, [], None)
