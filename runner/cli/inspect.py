"""`recipe inspect`: rendered training examples with the trained (label) tokens highlighted — the check
to make before a long run that prompts and role markers are not trained and the end-of-turn token is."""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from .options import add_set, positive_int

HELP = "rendered examples with trained tokens highlighted"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe")
    p.add_argument("--stage", help="the stage to show (a meta recipe: the task; default the first)")
    p.add_argument("--n", type=positive_int, default=3, help="how many examples (default 3)")
    p.add_argument("--cache-dir")
    add_set(p)


def main(args: argparse.Namespace) -> int:
    inspect(args.recipe, args.overrides, stage=args.stage, n=args.n, cache_dir=args.cache_dir)
    return 0


def inspect(path: str, overrides=(), *, stage: str | None = None, n: int = 3, cache_dir: str | None = None,
            console=None) -> None:
    from rich.console import Console
    from rich.text import Text

    from .. import api
    from ..chat import tokenizer_for
    from ..chat.templates import Rendered, highlight

    recipe = api.load(path, overrides)
    render = _render_step(recipe, stage)
    with tempfile.TemporaryDirectory() as scratch:   # a look, not a run: leave runs/<recipe> as it is
        _, graph, records, _ = api.run(path, overrides, cache_dir=cache_dir, only=str(render), dry_run=True,
                                       output=scratch)
    art = Path(next(r.artifact for r in records if r.id == render))
    rows = _task_rows(art, stage) if recipe.meta else art / "train.jsonl"
    tok = tokenizer_for(recipe.model.base, recipe.file.parent, trust_remote_code=False)
    console = console or Console(highlight=False)
    plain = not console.is_terminal
    with open(rows, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= n:
                break
            row = json.loads(line)
            r = Rendered(input_ids=row["input_ids"], labels=row["labels"], truncated=False)
            text = Text()
            for piece, trained in highlight(r, tok):
                if plain and trained:
                    piece = f"«{piece}»"   # no colours in a pipe: mark trained spans with guillemets
                text.append(piece, style="bold green" if trained else "dim")
            n_trained = sum(x != -100 for x in row["labels"])
            console.rule(f"{row['id']} ({row.get('source')}) {len(row['input_ids'])} tokens, {n_trained} trained")
            console.print(text)
    console.print("trained tokens are " + ("«marked»" if plain else "[bold green]green[/]") +
                  "; prompts, system text and role markers must not be")


def _render_step(recipe, stage: str | None):
    """The step whose rendered rows are shown: a stage's last data step (its render step), or for a meta
    recipe the last data step of no stage (the one that renders the tasks, whose task is picked from what
    it rendered)."""
    from ..dag.compile import compile_recipe
    from ..errors import RecipeError
    from ..recipe.validate import did_you_mean
    from ..steps.base import kind_of

    if recipe.meta:
        stage = None
    else:
        stages = [s.name for s in recipe.active_stages]
        stage = stage or stages[0]
        if stage not in stages:
            raise RecipeError(f"--stage: no stage '{stage}'{did_you_mean(stage, stages)}")
    return [s.id for s in compile_recipe(recipe).steps if s.stage == stage and kind_of(s.id).data][-1]


def _task_rows(art: Path, task: str | None) -> Path:
    """A meta recipe's rendered rows to show: the support rows of --stage (a task's folder name), else of
    the first task."""
    from ..errors import RecipeError
    from ..recipe.validate import did_you_mean

    tasks = sorted(d.name for d in (art / "tasks").iterdir() if d.is_dir())
    task = task or tasks[0]
    if task not in tasks:
        raise RecipeError(f"--stage: a meta recipe shows a task, and it has no task '{task}'{did_you_mean(task, tasks)}")
    return art / "tasks" / task / "support.jsonl"
