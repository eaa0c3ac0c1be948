"""render.tasks: a meta recipe's tasks -> token ids and labels, with the recipe's chat template and
the same render check as an SFT stage's render step (runner/steps/render.py, whose `_render_file`
this calls): every task's support, query and test rows, so FOMAML, the SFT control and the few-shot
evaluation all read rows that passed the check, and nothing is rendered at training time.

out/tasks/<dir>/{support,query,test}.jsonl   {id, source, input_ids, labels} per row, in the split's order
"""
from __future__ import annotations

from collections import Counter

from .base import Declared, StepId, model_files, template_files

VERSION = 1
PARTS = ("support", "query", "test")


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
    check = RenderCheck(tok, chat=chat, train_on=t.train_on)
    tasks = sorted(d for d in (ctx.input(StepId("split")) / "tasks").iterdir() if d.is_dir())
    total: Counter = Counter()
    rows: dict[str, int] = Counter()
    for d in tasks:
        for part in PARTS:
            src = d / f"{part}.jsonl"
            if not src.exists():
                continue
            n = _render_file(src, ctx.out / "tasks" / d.name / src.name, tok, t, chat, check=check)
            rows[part] += n["rows"]
            total.update({k: n[k] for k in ("tokens", "trained_tokens", "truncated", "checked")})
    ctx.log(f"{len(tasks)} tasks, {sum(rows.values()):,} rows ({', '.join(f'{rows[x]:,} {x}' for x in PARTS)}), "
            f"{total['tokens']:,} tokens ({total['trained_tokens']:,} trained), {total['truncated']:,} truncated at "
            f"{t.max_length}; render check: every row's counters, {total['checked']:,} rows in full")
    return {"tasks": len(tasks), "rows": dict(rows),
            "tokens": {"all": total["tokens"], "trained": total["trained_tokens"], "truncated": total["truncated"]}}
