"""`recipe plan R`: the step graph with each step's status (cached / stale / new) and, when stale, why."""
from __future__ import annotations

import argparse
import dataclasses

from .options import add_set

HELP = "show the step graph and cache status"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe")
    p.add_argument("--format", choices=["text", "json", "mermaid"], default="text")
    p.add_argument("--cache-dir")
    add_set(p)


def main(args: argparse.Namespace) -> int:
    from .. import api
    from ..dag.plan import render_json, render_mermaid, render_text
    from ..recipe import secrets
    graph, steps, cache = api.plan(args.recipe, args.overrides, args.cache_dir)
    recipe = api.load(args.recipe, args.overrides)
    graph = dataclasses.replace(graph, recipe=secrets.name(recipe))   # the header and JSON's "recipe" show the name
    if args.format == "json":
        print(render_json(steps, graph), end="")
    elif args.format == "mermaid":
        print(render_mermaid(steps), end="")
    else:
        from ..recipe.document import display
        print(render_text(graph, steps, display(cache.root)), end="")
    api.warn_missing(recipe)   # a fact of this checkout, not of the plan
    return 0
