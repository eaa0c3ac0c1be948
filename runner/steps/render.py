"""render.<stage>: conversations -> token ids and labels with the recipe's chat template, for the
stage's training mix and every source's eval rows; then the render check, which refuses to start a
run whose labels would teach the model the wrong thing (role markers trained, end-of-turn never
trained, pad == EOS, an example with nothing to learn)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

VERSION = 1


def _render_file(src: Path, dst: Path, tok, recipe, chat: str, keep: list | None = None) -> dict:
    from ..data.io import read_jsonl
    from ..chat.templates import render
    t = recipe.template
    n = tokens = trained = truncated = 0
    by_source: Counter = Counter()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "w", encoding="utf-8") as f:
        for row in read_jsonl(src):
            r = render(row["messages"], tok, chat=chat, system=t.system, train_on=t.train_on, max_length=t.max_length)
            f.write(json.dumps({"id": row["id"], "source": row.get("source"), "input_ids": r.input_ids,
                                "labels": r.labels}, separators=(",", ":")) + "\n")
            if keep is not None:
                keep.append((row["id"], r))
            n += 1
            tokens += len(r.input_ids)
            trained += sum(1 for x in r.labels if x != -100)
            truncated += r.truncated
            by_source[row.get("source")] += 1
    return {"rows": n, "tokens": tokens, "trained_tokens": trained, "truncated": truncated,
            "by_source": dict(by_source)}


def run(ctx) -> dict:
    from ..chat import chat_name, tokenizer_for
    from ..chat.templates import check_rendered
    recipe = ctx.recipe
    tok = tokenizer_for(recipe, ctx.options.trust)
    chat = chat_name(recipe)
    examples: list = []
    train = _render_file(ctx.input(f"mix.{ctx.step.stage}") / "train.jsonl", ctx.out / "train.jsonl", tok, recipe,
                         chat, keep=examples)
    check_rendered(examples, tok, chat=chat, train_on=recipe.template.train_on)
    evals = {}
    for f in sorted((ctx.input("split") / "eval").glob("*.jsonl")):
        evals[f.stem] = _render_file(f, ctx.out / "eval" / f.name, tok, recipe, chat)
    ctx.log(f"{train['rows']:,} train rows, {train['tokens']:,} tokens ({train['trained_tokens']:,} trained), "
            f"{train['truncated']:,} truncated at {recipe.template.max_length}")
    return {"rows_in": train["rows"], "rows_out": train["rows"], "dropped": {},
            "by_source": {s: {"rows_in": c, "rows_out": c, "dropped": {}} for s, c in train["by_source"].items()},
            "rows": {"train": train["rows"], "eval": {k: v["rows"] for k, v in evals.items()}},
            "tokens": {"train": train["tokens"], "trained": train["trained_tokens"], "truncated": train["truncated"],
                       "eval": {k: v["tokens"] for k, v in evals.items()}}}
