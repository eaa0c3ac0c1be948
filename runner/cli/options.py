"""Options several subcommands share."""
from __future__ import annotations

import argparse


def add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, e.g. --set train.epochs=1 (repeatable)")


def positive_int(text: str) -> int:
    """argparse type for counts (--n, --num-procs): 0 or -1 is a mistake to say, not an empty result."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} is not allowed: it must be at least 1")
    return n
