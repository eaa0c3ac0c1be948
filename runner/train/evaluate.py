"""Evaluate a trained stage (or the starting model, row "before"): loss and perplexity on every
source's eval rows (one row of the forgetting table), generation samples for
`evaluate.generate.prompts`, and two health rates over those prompts plus a few eval rows' prompts:

  stop_rate       share of generations that ended with the end-of-turn/EOS token before max_new_tokens
  role_leak_rate  share that wrote a role marker or special token of the template (`<|im_start|>`,
                  `user:`, `### Instruction:` ...): the model goes on writing the conversation itself

The eval loss uses the training masks (rows rendered by the same template, -100 on prompts), so it
is directly comparable with the training loss: the mean negative log-likelihood per trained token.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..recipe import model
from .process import flushing_subnormals
from .spec import EvalSpec


@flushing_subnormals()
def evaluate_stage(spec: EvalSpec, model_dir: str | Path | None, eval_sets: Mapping[str, str | Path],
                   prompts: Sequence[str] | None = None, *, eval_records: Mapping[str, str | Path] | None = None,
                   batch_size: int = 8, trust: bool = False, name: str | None = None) -> dict[str, Any]:
    """{"stage", "loss": {source: {loss, perplexity, tokens, rows}}, "samples": [{prompt, text,
    tokens, stopped, leaked}], "health": {stop_rate, role_leak_rate, generations, stopped, leaked}}.
    `model_dir` None is the starting model (model.init_from, else model.base). `prompts` defaults to
    evaluate.generate.prompts; `eval_sets` maps each source to its eval rows file (rendered JSONL), read up to evaluate.max_rows; `eval_records` maps sources to eval records (with
    messages), whose first `generate.eval_prompts` rows' prompts are generated for the rates."""
    import torch

    from .loading import for_inference, load_base

    if model_dir is None and spec.model.init_from is None:
        from .loading import to_device
        net, tokenizer = load_base(spec, trust=trust)
        net = to_device(net).eval()
    else:
        net, tokenizer = for_inference(spec, model_dir or spec.path(spec.model.init_from), trust=trust)
    from .rows import pairs
    losses = {}
    for source, path in sorted(eval_sets.items()):
        rows = pairs(path, limit=spec.evaluate.max_rows)
        losses[source] = _loss(net, rows, batch_size=batch_size, pad_id=tokenizer.pad_token_id)
    conversations = [("prompt", [{"role": "user", "content": p}])
                     for p in (spec.evaluate.generate.prompts if prompts is None else prompts)]
    conversations += _eval_prompts(eval_records or {}, spec.evaluate.generate.eval_prompts)
    with torch.no_grad():
        gens = [{**_generate(net, tokenizer, spec, messages), "from": origin} for origin, messages in conversations]
    return {"stage": name or spec.stage, "loss": losses,
            "samples": [g for g in gens if g["from"] == "prompt"], "generations": gens, "health": health(gens)}


def health(generations: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """stop_rate and role_leak_rate over generations (None when there are none)."""
    n = len(generations)
    stopped = sum(1 for g in generations if g["stopped"])
    leaked = sum(1 for g in generations if g["leaked"])
    return {"stop_rate": stopped / n if n else None, "role_leak_rate": leaked / n if n else None,
            "generations": n, "stopped": stopped, "leaked": leaked}


# A role written as text at the start of a line ("user:", "Assistant :", "### Instruction:"), as a
# model that learned to write the whole conversation does.
_ROLE_LINE = re.compile(r"(?im)^[ \t]*(?:(?:system|user|assistant|tool|human|gpt|function_call|observation)"
                        r"|###[ \t]*(?:instruction|response|input|observation))[ \t]*:")


def role_leak(text: str, tokenizer: Any, stops: Sequence[int] = ()) -> bool:
    """Whether generated text (decoded with its special tokens) holds a role marker or a special token
    other than the stop tokens."""
    from ..chat.templates import special_tokens

    allowed = {tokenizer.convert_ids_to_tokens(i) for i in stops}
    if any(t in text for t in special_tokens(tokenizer) if t not in allowed):
        return True
    return _ROLE_LINE.search(text) is not None


def _eval_prompts(eval_records: Mapping[str, str | Path], per_source: int) -> list[tuple[str, list[dict]]]:
    """(source, conversation before its last answer) for the first `per_source` eval rows of each source."""
    from ..data.io import iter_jsonl

    out: list[tuple[str, list[dict]]] = []
    for source, path in sorted(eval_records.items()):
        if per_source <= 0:
            break
        n = 0
        for row in iter_jsonl(path):
            msgs = row["messages"]
            last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
            if not last:            # no answer, or nothing before it to prompt with
                continue
            out.append((source, msgs[:last]))
            n += 1
            if n >= per_source:
                break
    return out


def eval_batch(train: model.Train) -> int:
    """The eval step's batch: the stage's micro batch; with micro_batch_size auto, a forward pass without
    gradients fits a training step's whole share."""
    t = train
    return t.micro_batch_size if t.micro_batch_size != "auto" else max(1, t.batch_size // t.world_size)


def _loss(net, rows: list[tuple[list[int], list[int]]], *, batch_size: int, pad_id: int) -> dict[str, Any]:
    """Token-weighted mean NLL over the trained tokens of all rows (not a mean of row means, which
    would weigh a short answer like a long one)."""
    import torch
    import torch.nn.functional as F

    device = next(net.parameters()).device
    total, tokens = 0.0, 0
    # sorted by length so batches pad little; the sum does not depend on the order
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    with torch.no_grad():
        for k in range(0, len(order), batch_size):
            batch = [rows[i] for i in order[k:k + batch_size]]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for j, (x, y) in enumerate(batch):
                ids[j, :len(x)], labels[j, :len(y)], mask[j, :len(x)] = torch.tensor(x), torch.tensor(y), 1
            logits = net(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            target = labels[:, 1:].to(device)
            total += F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), target.reshape(-1),
                                     ignore_index=-100, reduction="sum").item()
            tokens += int((target != -100).sum())
    loss = total / tokens if tokens else float("nan")
    return {"loss": loss, "perplexity": math.exp(loss) if tokens and loss < 700 else float("inf"),
            "tokens": tokens, "rows": len(rows)}


def _generate(net, tokenizer, spec: EvalSpec, messages: list[dict[str, str]]) -> dict[str, Any]:
    """One sample, stopping at the template's end-of-turn token or EOS. Seeded per prompt, so a
    prompt's sample does not depend on which prompts come before it."""
    import torch

    from ..chat import chat_name
    from ..chat.templates import render_prompt, stop_token_ids

    g = spec.evaluate.generate
    chat = chat_name(spec.template.chat, spec.base_dir)
    stops = stop_token_ids(chat, tokenizer)
    prompt = render_prompt(messages, tokenizer, chat=chat, system=spec.template.system)
    ids = torch.tensor([prompt], device=next(net.parameters()).device)
    sample = g.temperature > 0
    torch.manual_seed(spec.seed)
    out = net.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=g.max_new_tokens,
        do_sample=sample, temperature=g.temperature if sample else None, top_p=g.top_p if sample else None,
        top_k=0 if sample else None, no_repeat_ngram_size=g.no_repeat_ngram_size or None,
        eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)[0, ids.size(1):].tolist()
    stopped = bool(out) and out[-1] in stops
    body = out[:-1] if stopped else out
    return {"prompt": messages[-1]["content"], "text": tokenizer.decode(body, skip_special_tokens=True),
            "tokens": len(out), "stopped": stopped,
            "leaked": role_leak(tokenizer.decode(body, skip_special_tokens=False), tokenizer, stops)}
