"""Rows for training and evaluation: (input_ids, labels) pairs, the labels being exactly what
templates.render masked (-100 on prompts and role headers, the end-of-turn token trained).

A rows file is JSONL as a render step writes it (runner/steps/render.py, render_tasks.py): every row
already rendered, and checked by the render check, so nothing is rendered at training time."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..chat import chat_name
from ..data.io import iter_jsonl
from .spec import Spec

Pair = tuple[list[int], list[int]]


def pairs(path: str | Path, *, limit: int | None = None) -> list[Pair]:
    """The (input_ids, labels) of the first `limit` rows of a rendered rows file."""
    out: list[Pair] = []
    for row in iter_jsonl(path):
        if limit is not None and len(out) >= limit:
            break
        out.append((row["input_ids"], row["labels"]))
    return out


def dataset(rows: list[Pair]):
    """A datasets.Dataset with just `input_ids` and `labels`: SFTTrainer sees it is tokenized and
    uses the labels as they are (no chat template, no re-masking)."""
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [r[0] for r in rows], "labels": [r[1] for r in rows]})


def prompt_ids(prompt: str, spec: Spec, tokenizer: Any) -> list[int]:
    """Token ids of a user prompt with the recipe's template and system prompt, ending with the
    assistant header, as at generation time (templates.render_prompt: the same cut as in training)."""
    from ..chat.templates import render_prompt

    return render_prompt([{"role": "user", "content": prompt}], tokenizer,
                         chat=chat_name(spec.template.chat, spec.base_dir), system=spec.template.system)
