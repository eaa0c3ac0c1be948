"""render.tasks: a meta recipe's tasks -> token ids and labels, with the recipe's chat template and
the same render check as an SFT stage's render step (runner/steps/render.py, whose `_render_file`
this calls): every task's support, query and test rows, so FOMAML, the SFT control and the few-shot
evaluation all read rows rendered once, here, and nothing is rendered at training time.

As for an SFT stage, the check covers the rows that are trained on: support and query rows (FOMAML's
inner and outer loop, the control, and the few-shot adaptation to a held-out task's shots), all of them
together as one training set (some row must train the end-of-turn token); test rows are measured, like
a stage's eval rows, and rendered without it.

out/tasks/<dir>/{support,query,test}.jsonl   {id, source, input_ids, labels} per row, in the split's order
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

from .base import Declared, Kind, StepId, model_files, template_files
from .result import Result, count

VERSION = 1
PARTS = ("support", "query", "test")
CHECKED = ("support", "query")


@dataclass(frozen=True)
class RenderTasksResult(Result):
    tasks: int = 0                                               # how many tasks were rendered
    rows: Mapping[str, int] = field(default_factory=dict)        # rows per part (support, query, test)
    tokens: Mapping[str, Any] = field(default_factory=dict)      # all, trained, truncated

    def summary_lines(self, step) -> list[str]:
        t = self.tokens
        return ["", f"tasks rendered: {count(sum(self.rows.values()))} rows "
                    f"({', '.join(f'{count(self.rows.get(x, 0))} {x}' for x in PARTS)}), {count(t.get('all', 0))} tokens "
                    f"({count(t.get('trained', 0))} trained), {count(t.get('truncated', 0))} truncated"]


KIND = Kind("render.tasks", data=True, result=RenderTasksResult)


def steps(recipe) -> list[StepId]:
    return [StepId("render_tasks")] if recipe.meta else []


class _Together:
    """The render check with its last verdict (is the end-of-turn token ever trained?) over every file
    it sees, given by `finish()` once they all are rendered, instead of over each file."""

    def __init__(self, check) -> None:
        self.check, self.rows, self.eot_rows = check, 0, 0
        self.cheap, self.example = check.cheap, check.example

    def finish(self, rows: int, eot_rows: int) -> None:
        self.rows, self.eot_rows = self.rows + rows, self.eot_rows + eot_rows

    def done(self) -> None:
        self.check.finish(self.rows, self.eot_rows)


def declare(recipe, step: StepId) -> Declared:
    m = recipe.model
    return Declared({"model": m.base, "trust_remote_code": m.trust_remote_code, "template": recipe.template},
                    inputs=(StepId("split"),),
                    files=template_files(recipe) + model_files(recipe, weights=False))


def run(ctx) -> dict:
    from ..chat import chat_name, tokenizer_for
    from ..chat.templates import RenderCheck
    from .render import _render_file

    p, t = ctx.params, ctx.params["template"]
    tok = tokenizer_for(p["model"], ctx.base_dir, trust_remote_code=p["trust_remote_code"] and ctx.options.trust)
    chat = chat_name(t.chat, ctx.base_dir)
    check = _Together(RenderCheck(tok, chat=chat, train_on=t.train_on))
    tasks = sorted(d for d in (ctx.input(StepId("split")) / "tasks").iterdir() if d.is_dir())
    total: Counter = Counter()
    rows: dict[str, int] = Counter()
    for d in tasks:
        for part in PARTS:
            src = d / f"{part}.jsonl"
            if not src.exists():
                continue
            n = _render_file(src, ctx.store.path(f"tasks/{d.name}/{src.name}"), tok, t, chat,
                             check=check if part in CHECKED else None, executor=ctx.executor)
            rows[part] += n["rows"]
            total.update({k: n[k] for k in ("tokens", "trained_tokens", "truncated", "checked")})
    check.done()
    ctx.log(f"{len(tasks)} tasks, {sum(rows.values()):,} rows ({', '.join(f'{rows[x]:,} {x}' for x in PARTS)}), "
            f"{total['tokens']:,} tokens ({total['trained_tokens']:,} trained), {total['truncated']:,} truncated at "
            f"{t.max_length}; render check: every support and query row's counters, {total['checked']:,} rows in full")
    return {"tasks": len(tasks), "rows": dict(rows),
            "tokens": {"all": total["tokens"], "trained": total["trained_tokens"], "truncated": total["truncated"]}}
