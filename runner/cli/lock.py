"""`recipe lock R`: write R.lock next to the recipe (runner/dag/lock.py); `recipe run --locked` checks it."""
from __future__ import annotations

import argparse
import sys

from .options import add_set

HELP = "write R.lock: every input's digest and the training libraries' versions"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe")
    p.add_argument("--check", action="store_true", help="write nothing: list the differences from R.lock, exit 1 if any")
    add_set(p)


def main(args: argparse.Namespace) -> int:
    from ..dag import lock
    from ..api import load
    from ..sources import refresh
    # which commit each hub source's branch names now, as `recipe run` resolves it before fingerprinting
    refresh(load(args.recipe, args.overrides).sources, lambda m: print(f"note: {m}", file=sys.stderr))
    if args.check:
        diffs = lock.differences(lock.read(lock.lock_path(args.recipe)), lock.build(args.recipe, tuple(args.overrides)))
        sys.stdout.write("".join(f"{d}\n" for d in diffs))
        return 1 if diffs else 0
    print(f"wrote {lock.write(args.recipe, tuple(args.overrides))}", file=sys.stderr)
    return 0
