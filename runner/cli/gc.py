"""`recipe gc [PATH ...]`: remove the cached artifacts no recipe under PATH still references."""
from __future__ import annotations

import argparse

from .options import add_set

HELP = "remove cached artifacts the recipes no longer reference; report bytes freed"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH", help="recipe files or folders of recipes (default: .)")
    p.add_argument("--cache-dir")
    p.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    add_set(p)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def main(args: argparse.Namespace) -> int:
    from ..dag.gc import apply, plan_sweep
    from ..recipe.document import display
    sweeps, notes = plan_sweep(args.paths, args.overrides, args.cache_dir)
    for n in notes:
        print(f"note: {n}")
    verb = "would free" if args.dry_run else "freed"
    for s in sweeps:
        if not args.dry_run:
            apply(s)
        freed = sum(b for _, b in s.removed)
        print(f"{display(s.root)}: kept {len(s.kept)} artifacts ({_mb(sum(b for _, b in s.kept))}) that "
              f"{', '.join(s.recipes) or 'no recipe'} reference; {verb} {_mb(freed)} "
              f"({len(s.removed)} {'to remove' if args.dry_run else 'removed'})")
        if s.others:   # a shared cache: gc keeps only what the recipes named here use
            k = len(s.other_recipes)
            print(f"  {s.others} of them {'are' if args.dry_run else 'were'} used by the last run of {k} other "
                  f"recipe{'s' if k > 1 else ''} sharing this cache (not given to gc); pass those recipes too "
                  "to keep them")
    if not sweeps:
        print("no recipes found, nothing to do")
    return 0
