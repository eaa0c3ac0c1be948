"""`recipe` command line: parse, call the library, print, map errors to exit codes (0 ok, 1 differences
for `diff --exit-code`, 2 user error). A traceback here means a bug in our code.

One module per subcommand, each with HELP, configure(parser) and main(args) -> exit code. Modules import
what they need inside main(), so `recipe validate` never loads what `recipe run` needs."""
from __future__ import annotations

import argparse
import errno
import sys

from ..errors import RecipeError, ValidationError
from . import compare, diff, gc, inspect, lock, plan, run, runs, schema, show, validate

HELP = """\
recipe: declarative fine-tuning recipes

  recipe validate R...          check recipes (schema + meaning); all errors at once
  recipe show R                 print the resolved recipe (extends, ${...}, --set and defaults applied)
  recipe schema                 print the JSON Schema
  recipe plan R                 the step graph and what is cached / stale / new, and why
  recipe run R                  run the recipe (--dry-run: data steps + render check, no training)
  recipe inspect R              rendered examples with trained tokens highlighted
  recipe diff A B | --git REV   what a recipe change means: settings, rows, steps to rerun
  recipe gc [PATH ...]          remove cached artifacts the recipes under PATH no longer reference
  recipe runs [R]               finished runs (the run index in the cache) and their metrics
  recipe compare A B            two runs (ids or recipes): settings diff and metric deltas
  recipe lock R                 write R.lock: every input's digest and the training libraries' versions
"""

COMMANDS = {"validate": validate, "show": show, "schema": schema, "plan": plan, "run": run, "inspect": inspect,
            "diff": diff, "gc": gc, "runs": runs, "compare": compare, "lock": lock}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="recipe", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    from .. import __version__
    ap.add_argument("--version", action="version", version=f"recipe {__version__}")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")
    for name, mod in COMMANDS.items():
        mod.configure(sub.add_parser(name, help=mod.HELP))
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
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise   # any other OSError is a bug of ours: its traceback says where
        print(f"error: no space left on the device ({e.filename or 'writing'}); the cache holds only finished "
              "steps (nothing was half-committed): free space (`recipe gc` removes old artifacts) and rerun the "
              "same command to go on from there", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    return COMMANDS[args.cmd].main(args)


if __name__ == "__main__":
    sys.exit(main())
