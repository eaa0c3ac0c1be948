"""`recipe run R`: run a recipe, reusing cached steps. With --dry-run it prints what the data steps made
(rows per source through the funnel, rows/tokens per stage) after the render check passed — everything
short of training."""
from __future__ import annotations

import argparse
import sys

from ..steps.result import count
from .options import add_set, positive_int

HELP = "run a recipe"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe")
    add_set(p)
    p.add_argument("--only", metavar="STEP", help="run just this step (its inputs must be cached or are run first)")
    p.add_argument("--from", dest="from_step", metavar="STEP", help="rerun from this step on (it and everything after it)")
    p.add_argument("--force", action="store_true", help="rerun every selected step, ignoring the cache")
    p.add_argument("--dry-run", action="store_true", help="data steps + render/mask check; stop before training")
    p.add_argument("--output", metavar="DIR", help="run directory (default runs/<recipe>)")
    p.add_argument("--cache-dir", metavar="DIR", help="artifact cache (default .recipe/cache next to the recipe; env RECIPE_CACHE_DIR)")
    p.add_argument("--trust", action="store_true", help="allow model code from the hub (model.trust_remote_code)")
    p.add_argument("--launcher", choices=["none", "deepspeed", "torchrun"], default="none",
                   help="run training in N processes through a launcher")
    p.add_argument("--num-procs", type=positive_int, default=None, help="processes for --launcher (sets train.world_size)")
    p.add_argument("--hostfile", help="multi-node: passed to the deepspeed launcher")
    p.add_argument("--nnodes", type=int, default=1, help="torchrun over several machines: how many (run this on each)")
    p.add_argument("--node-rank", type=int, default=0, help="with --nnodes: this machine's number, 0 for the one that runs the data steps")
    p.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="with --nnodes: node 0's address and a free port there")
    p.add_argument("--locked", action="store_true", help="refuse to run when anything differs from R.lock (`recipe lock R`)")
    p.add_argument("--executor", default="local", metavar="NAME",
                   help="where the data steps run: local (worker processes on this machine) or ray; never part of a fingerprint")
    p.add_argument("--ray-address", metavar="HOST:PORT",
                   help="with --executor ray: join this Ray cluster (default: RAY_ADDRESS, else a local Ray runtime)")


def main(args: argparse.Namespace) -> int:
    import os

    from .. import api
    from ..errors import RecipeError
    from ..environment import environment_kept
    if args.ray_address and args.executor != "ray":
        raise RecipeError(f"--ray-address {args.ray_address}: it needs --executor ray")
    with environment_kept("RAY_ADDRESS"):    # for this run only: a caller in the same process keeps its own
        if args.ray_address:
            os.environ["RAY_ADDRESS"] = args.ray_address    # Ray's own variable: what the executor joins
        recipe, graph, records, run_dir = api.run(
            args.recipe, args.overrides, cache_dir=args.cache_dir, output=args.output, only=args.only,
            from_step=args.from_step, force=args.force, dry_run=args.dry_run, trust=args.trust,
            launcher=args.launcher, num_procs=args.num_procs, hostfile=args.hostfile, argv=tuple(args.argv),
            nnodes=args.nnodes, node_rank=args.node_rank, rdzv_endpoint=args.rdzv_endpoint, locked=args.locked,
            executor=args.executor)
    if run_dir is None:   # a node other than 0 of several: node 0 ran the steps and writes the report
        print(f"node {args.node_rank}: trained its share; the report is node 0's", file=sys.stderr)
        return 0
    if args.dry_run:
        print(summary(recipe, records), end="")
    for n in graph.notes:
        print(f"note: {n}", file=sys.stderr)
    api.warn_unpinned(recipe)
    print(f"report: {run_dir / 'report.md'}", file=sys.stderr)
    return 0


# --- the --dry-run summary --------------------------------------------------------------------------

def summary(recipe, records) -> str:
    """What the data steps made, from their results: rows of each source through every step with a column
    (KIND.column), then each stage's line and lines, then the lines of steps of no stage."""
    from ..steps import STEPS
    from ..steps.base import kind_of

    lines = ["dry run: data steps done and the render check passed; training was not started", ""]
    columns = [mod.KIND.column for mod in STEPS.values() if mod.KIND.column]
    if recipe.sources:
        lines.append(f"{'source':<14}" + "".join(f"{c:>{max(len(c) + 3, 7)}}" for c in columns))
    for src in recipe.sources:
        cells = dict.fromkeys(columns)
        for r in records:
            column = kind_of(r.id).column
            n = r.result.source_rows(r, src) if column else None
            if n is not None:
                cells[column] = n
        lines.append(f"{src:<14}" + "".join(f"{count(cells[c]) if isinstance(cells[c], int) else '-':>{max(len(c) + 3, 7)}}"
                                            for c in columns))
    for st in recipe.active_stages:
        mine = [r for r in records if r.stage == st.name]
        heads = [h for r in mine if (h := r.result.summary_head(r))]
        if heads:
            lines += ["", f"stage {st.name}: " + "; ".join(heads)]
            lines += [line for r in mine for line in r.result.summary_lines(r)]
    lines += [line for r in records if r.stage is None for line in r.result.summary_lines(r)]
    return "\n".join(lines) + "\n"
