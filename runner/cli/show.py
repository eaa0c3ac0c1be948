"""`recipe show R`: the resolved canonical document (extends, ${...}, --set and schema defaults applied)."""
from __future__ import annotations

import argparse

from .options import add_set

HELP = "print the resolved recipe"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe")
    p.add_argument("--format", choices=["yaml", "json"], default="yaml")
    add_set(p)


def main(args: argparse.Namespace) -> int:
    from .. import api
    print(api.show(api.load(args.recipe, args.overrides), args.format), end="")
    return 0
