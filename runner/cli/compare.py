"""`recipe compare A B` / `recipe compare --git REV [PATH ...]`: two runs' settings diff and metric deltas
(runner/diff/runs.py). A and B are run ids or recipes (each one's latest run as resolved)."""
from __future__ import annotations

import argparse
import sys

from .options import add_set

HELP = "two runs: settings diff and metric deltas"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("refs", nargs="*", metavar="A B", help="run ids (`recipe runs`) or recipe files; one recipe "
                                                          "with --set-a/--set-b compares it with itself")
    p.add_argument("--git", metavar="REV", help="each recipe changed since REV: its latest run at REV and now")
    p.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    p.add_argument("--cache-dir")
    add_set(p)  # --set: both sides
    p.add_argument("--set-a", action="append", default=[], metavar="KEY=VALUE", help="override on the A side only")
    p.add_argument("--set-b", action="append", default=[], metavar="KEY=VALUE", help="override on the B side only")


def main(args: argparse.Namespace) -> int:
    from ..diff.runs import compare_git, compare_refs, render_compare
    from ..errors import RecipeError
    common, set_a, set_b = tuple(args.overrides), tuple(args.set_a), tuple(args.set_b)
    if args.git:
        items = compare_git(args.git, args.refs, common, set_a, set_b, args.cache_dir)
        if not items:
            print(f"no recipe changes since {args.git}", file=sys.stderr)
    elif 1 <= len(args.refs) <= 2:
        a, b = args.refs[0], args.refs[-1]
        items = [compare_refs(a, b, common + set_a, common + set_b, args.cache_dir)]
    else:
        raise RecipeError("recipe compare takes two runs or recipes (A B), one recipe with --set-a/--set-b, "
                          "or --git REV [PATH ...]")
    sys.stdout.write(render_compare(items, args.format))
    return 0
