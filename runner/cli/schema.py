"""`recipe schema`: the JSON Schema every recipe is checked against."""
from __future__ import annotations

import argparse

HELP = "print the JSON Schema"


def configure(p: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    from .. import api
    print(api.schema_text(), end="")
    return 0
