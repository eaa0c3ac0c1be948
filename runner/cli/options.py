"""Options several subcommands share."""
from __future__ import annotations

import argparse


def add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, e.g. --set train.epochs=1 (repeatable)")
