"""Poems for the benchmarks (a helper, not a benchmark: the smoke test skips `_*.py`).

    USER                  the instruction recipes/poetry_lora.yaml puts before a poem's first line
    poems(n, real=...)    n poems as lists of lines: the real ones first (real=True), then, or only, new
                          ones made of lines from different poems (as the data-scale runs need)
    write_messages(path, n, real=...)   those poems as {id, messages} rows, mapped as poetry_lora maps them
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
USER = "以下是一首唐詩的第一句話，請用你的知識判斷並完成整首詩。\n"


def poems(n: int, *, real: bool = True, seed: int = 7) -> Iterator[list[str]]:
    base = [json.loads(line)["paragraphs"] for line in (REPO / "data" / "tang_poems.jsonl").open(encoding="utf-8")]
    base = [p for p in base if len(p) > 1]
    lines = [x for p in base for x in p]
    rnd = random.Random(seed)
    for i in range(n):
        yield base[i] if real and i < len(base) else [rnd.choice(lines) for _ in range(rnd.choice((2, 4, 4, 6, 8)))]


def write_messages(path: Path, n: int, *, real: bool = True, source: str | None = None) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, paras in enumerate(poems(n, real=real)):
            msgs = [{"role": "user", "content": USER + paras[0]}, {"role": "assistant", "content": "\n".join(paras[1:])}]
            row = {"id": f"p{i}", "messages": msgs, **({"source": source} if source else {})}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def rendered(recipe, records: Path, dst: Path) -> Path:
    """`records` as the recipe's render step would write them (token ids and labels, render-checked): the
    rows the trainers read."""
    from runner.chat import chat_name, tokenizer_for
    from runner.chat.templates import RenderCheck
    from runner.steps.render import _render_file

    t, base = recipe.template, recipe.file.parent
    tok = tokenizer_for(recipe.model.base, base, trust_remote_code=False)
    chat = chat_name(t.chat, base)
    _render_file(records, dst, tok, t, chat, check=RenderCheck(tok, chat=chat, train_on=t.train_on))
    return dst
