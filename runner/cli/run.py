"""`recipe run R`: run a recipe, reusing cached steps. With --dry-run it prints what the data steps made
(rows per source through the funnel, rows/tokens per stage) after the render check passed — everything
short of training."""
from __future__ import annotations

import argparse
import sys

from ..recipe.secrets import count, share
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


def main(args: argparse.Namespace) -> int:
    from .. import api
    recipe, graph, records, run_dir = api.run(
        args.recipe, args.overrides, cache_dir=args.cache_dir, output=args.output, only=args.only,
        from_step=args.from_step, force=args.force, dry_run=args.dry_run, trust=args.trust,
        launcher=args.launcher, num_procs=args.num_procs, hostfile=args.hostfile, argv=tuple(args.argv))
    if args.dry_run:
        print(summary(recipe, records), end="")
    for n in graph.notes:
        print(f"note: {n}", file=sys.stderr)
    api.warn_unpinned(recipe)
    print(f"report: {run_dir / 'report.md'}", file=sys.stderr)
    return 0


# --- the --dry-run summary --------------------------------------------------------------------------

def _record(records, step):
    return next((r for r in records if r.id == step), None)


def _rows(records, step, src: str | None = None):
    rec = _record(records, step)
    if rec is None:
        return None
    s = rec.stats or {}
    if src is None:
        return s.get("rows_out")
    return s.get("by_source", {}).get(src, {}).get("rows_out")


def summary(recipe, records) -> str:
    from ..steps.base import StepId
    lines = ["dry run: data steps done and the render check passed; training was not started", ""]
    split = _record(records, StepId("split"))
    ev = (split.stats or {}).get("eval", {}) if split else {}
    if recipe.sources:
        lines.append(f"{'source':<14}{'loaded':>9}{'filtered':>10}{'deduped':>9}{'eval':>7}")
    for src in recipe.sources:
        loaded = _rows(records, StepId("load", source=src))
        filtered = _rows(records, StepId("filter", source=src))
        deduped = _rows(records, StepId("dedup"), src)
        fmt = lambda v: f"{v:,}" if isinstance(v, int) else "-"  # noqa: E731
        lines.append(f"{src:<14}{fmt(loaded):>9}{fmt(filtered):>10}{fmt(deduped):>9}{fmt(ev.get(src)):>7}")
    for st in recipe.stages:
        r = _record(records, StepId("render", stage=st.name))
        if r is None:
            continue
        s = r.stats
        t = s.get("tokens", {})
        lines += ["", f"stage {st.name}: {count(s['rows']['train'])} train rows, {count(t.get('train', 0))} tokens "
                      f"({count(t.get('trained', 0))} trained), {count(t.get('truncated', 0))} truncated at "
                      f"{recipe.template.max_length}"]
        m = _record(records, StepId("mix", stage=st.name))
        mix = (m.stats or {}).get("mix", {}) if m else {}
        for src, got in sorted(mix.get("achieved", {}).items()):
            req = mix.get("requested", {}).get(src)
            n = s.get("by_source", {}).get(src, {}).get("rows_out", 0)
            lines.append(f"  {src:<12} {count(n):>8} rows  {share(got):>7}" +
                         (f" (requested {share(req)})" if req is not None else ""))
    tasks = _record(records, StepId("tasks"))
    if split is not None and tasks is not None:
        index = (split.stats or {}).get("tasks", [])
        held = set((tasks.stats or {}).get("held_out", []))
        lines += ["", f"meta: {len(index)} tasks, {len(index) - len(held)} to train on, held out for few-shot "
                      f"evaluation: {', '.join(sorted(held))}",
                  f"  {'task':<20}{'support':>9}{'query':>8}{'test':>7}"]
        for t in index:
            rows = t["rows"]
            lines.append(f"  {t['name'][:19]:<20}{rows['support']:>9,}{rows['query']:>8,}{rows['test']:>7,}"
                         + ("  held out" if t["name"] in held else ""))
        lines.append("  the tasks in the prompt/response/metadata layout and the k-shot sets are in the run "
                     "directory: tasks/, few_shot/")
    return "\n".join(lines) + "\n"
