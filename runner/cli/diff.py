"""`recipe diff A B` / `recipe diff --git REV [PATH ...]`: what a recipe change means (see runner/diff/)."""
from __future__ import annotations

import argparse
import sys

from .options import add_set

HELP = "what a recipe change means"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*")
    p.add_argument("--git", metavar="REV", help="compare recipes at REV with the working tree")
    p.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when there are differences")
    p.add_argument("--cache-dir")
    add_set(p)  # --set: both sides
    p.add_argument("--set-a", action="append", default=[], metavar="KEY=VALUE", help="override on the before side only")
    p.add_argument("--set-b", action="append", default=[], metavar="KEY=VALUE",
                   help="override on the after side only: `recipe diff R.yaml --set-b train.epochs=3` shows what the override changes")


def main(args: argparse.Namespace) -> int:
    from ..diff import diff_files, diff_git, render
    from ..diff.output import print_rich
    from ..errors import RecipeError
    common = tuple(args.overrides)
    set_a, set_b = tuple(args.set_a), tuple(args.set_b)
    if args.git:
        diffs = diff_git(args.git, args.paths, common, args.cache_dir, set_a, set_b)
        where = ", ".join(args.paths) if args.paths else "the repository"
        header = f"recipe changes since {args.git}" if diffs else f"no recipe changes in {where} since {args.git}"
    elif 1 <= len(args.paths) <= 2:
        a, b = args.paths[0], args.paths[-1]  # one path: compare it with itself under --set-a/--set-b
        diffs, header = [diff_files(a, b, common + set_a, common + set_b, args.cache_dir)], None
    else:
        raise RecipeError("recipe diff takes two recipes (A.yaml B.yaml), one recipe with --set-a/--set-b, "
                          "or --git REV [PATH ...]")
    if args.format == "text" and sys.stdout.isatty():
        print_rich(diffs, header)
    else:
        sys.stdout.write(render(diffs, args.format, header))
    return 1 if args.exit_code and any(d.differs for d in diffs) else 0
