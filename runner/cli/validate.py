"""`recipe validate R [R ...]`: schema + meaning checks, every error at once; one `ok:` line per good recipe."""
from __future__ import annotations

import argparse
import sys

from .options import add_set

HELP = "check recipes"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipes", nargs="+")
    add_set(p)


def main(args: argparse.Namespace) -> int:
    from .. import api
    from ..errors import ValidationError
    from ..recipe import secrets
    failed = 0
    for r in args.recipes:
        try:
            rec = api.load(r, args.overrides)
        except ValidationError as e:
            print(str(e), file=sys.stderr)
            failed += 1
            continue
        stages = [s.name for s in rec.active_stages]
        kind = "meta (fomaml)" if rec.meta else f"{len(stages)} stage{'s' * (len(stages) != 1)}"
        print(f"ok: {r} ({secrets.name(rec)}: {len(rec.sources)} source{'s' * (len(rec.sources) != 1)}, {kind})")
        api.warn_unpinned(rec)
        api.warn_missing(rec)
    return 2 if failed else 0
