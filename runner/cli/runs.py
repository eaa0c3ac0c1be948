"""`recipe runs [R | DIR]`: the runs in the run index (runner/dag/runindex.py), oldest first."""
from __future__ import annotations

import argparse
import sys

from .options import add_set

HELP = "list finished runs (the run index in the cache)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", nargs="?", metavar="R", help="a recipe (its runs; * marks runs of it as it is now) "
                                                          "or a folder (default: the current one)")
    p.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    p.add_argument("--cache-dir")
    add_set(p)


def main(args: argparse.Namespace) -> int:
    from ..diff.runs import list_runs, render_runs
    lines, current = list_runs(args.target, tuple(args.overrides), args.cache_dir)
    sys.stdout.write(render_runs(lines, current, args.format))
    return 0
