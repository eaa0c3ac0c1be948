"""`recipe` command line: parse, call api, print, map errors to exit codes (0 ok, 1 differences for
`diff --exit-code`, 2 user error). A traceback here means a bug in our code."""
from __future__ import annotations

import argparse
import sys

from .errors import RecipeError, ValidationError

HELP = """\
recipe: declarative fine-tuning recipes

  recipe validate R...          check recipes (schema + meaning); all errors at once
  recipe show R                 print the resolved recipe (extends, ${...}, --set and defaults applied)
  recipe schema                 print the JSON Schema
  recipe plan R                 the step graph and what is cached / stale / new, and why
  recipe run R                  run the recipe (--dry-run: data steps + render check, no training)
  recipe inspect R              rendered examples with trained tokens highlighted
  recipe diff A B | --git REV   what a recipe change means: settings, rows, steps to rerun
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, e.g. --set train.epochs=1 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="recipe", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__
    ap.add_argument("--version", action="version", version=f"recipe {__version__}")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")

    p = sub.add_parser("validate", help="check recipes")
    p.add_argument("recipes", nargs="+")
    _common(p)

    p = sub.add_parser("show", help="print the resolved recipe")
    p.add_argument("recipe")
    p.add_argument("--format", choices=["yaml", "json"], default="yaml")
    _common(p)

    sub.add_parser("schema", help="print the JSON Schema")

    p = sub.add_parser("plan", help="show the step graph and cache status")
    p.add_argument("recipe")
    p.add_argument("--format", choices=["text", "json", "mermaid"], default="text")
    p.add_argument("--cache-dir")
    _common(p)

    p = sub.add_parser("run", help="run a recipe")
    p.add_argument("recipe")
    _common(p)
    p.add_argument("--only", metavar="STEP", help="run just this step (its inputs must be cached or are run first)")
    p.add_argument("--from", dest="from_step", metavar="STEP", help="rerun from this step on (it and everything after it)")
    p.add_argument("--force", action="store_true", help="rerun every selected step, ignoring the cache")
    p.add_argument("--dry-run", action="store_true", help="data steps + render/mask check; stop before training")
    p.add_argument("--output", metavar="DIR", help="run directory (default runs/<recipe>)")
    p.add_argument("--cache-dir", metavar="DIR", help="artifact cache (default .recipe/cache next to the recipe; env RECIPE_CACHE_DIR)")
    p.add_argument("--trust", action="store_true", help="allow model code from the hub (model.trust_remote_code)")
    p.add_argument("--launcher", choices=["none", "deepspeed", "torchrun"], default="none",
                   help="run training in N processes through a launcher")
    p.add_argument("--num-procs", type=int, default=None, help="processes for --launcher (sets train.world_size)")
    p.add_argument("--hostfile", help="multi-node: passed to the deepspeed launcher")

    p = sub.add_parser("inspect", help="rendered examples with trained tokens highlighted")
    p.add_argument("recipe")
    p.add_argument("--stage")
    p.add_argument("--n", type=int, default=3)
    p.add_argument("--cache-dir")
    _common(p)

    p = sub.add_parser("diff", help="what a recipe change means")
    p.add_argument("paths", nargs="*")
    p.add_argument("--git", metavar="REV", help="compare recipes at REV with the working tree")
    p.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when there are differences")
    p.add_argument("--cache-dir")
    _common(p)  # --set: both sides
    p.add_argument("--set-a", action="append", default=[], metavar="KEY=VALUE", help="override on the before side only")
    p.add_argument("--set-b", action="append", default=[], metavar="KEY=VALUE",
                   help="override on the after side only: `recipe diff R.yaml --set-b train.epochs=3` shows what the override changes")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)   # for "resume with: ..." hints
    if not args.cmd:
        print(HELP)
        return 0
    try:
        return _dispatch(args)
    except ValidationError as e:
        print(str(e), file=sys.stderr)
        return e.exit_code
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from . import api
    if args.cmd == "validate":
        failed = 0
        for r in args.recipes:
            try:
                rec = api.load(r, args.overrides)
            except ValidationError as e:
                print(str(e), file=sys.stderr)
                failed += 1
                continue
            stages = [s.name for s in rec.stages if not s.skip]
            kind = "meta (fomaml)" if rec.meta else f"{len(stages)} stage{'s' * (len(stages) != 1)}"
            print(f"ok: {r} ({rec.name}: {len(rec.sources)} source{'s' * (len(rec.sources) != 1)}, {kind})")
        return 2 if failed else 0
    if args.cmd == "show":
        print(api.show(api.load(args.recipe, args.overrides), args.format), end="")
        return 0
    if args.cmd == "schema":
        print(api.schema_text(), end="")
        return 0
    handler = getattr(api, f"cli_{args.cmd}", None)
    if handler is None:
        raise RecipeError(f"`recipe {args.cmd}` is not available in this version yet")
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
