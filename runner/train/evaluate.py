"""Evaluate a trained stage: loss and perplexity on every source's eval rows (one row of the
forgetting table), and generation samples for `evaluate.generate.prompts`.

The eval loss uses the training masks (rows rendered by the same template, -100 on prompts), so it
is directly comparable with the training loss: the mean negative log-likelihood per trained token.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..recipe import model


def evaluate_stage(recipe: model.Recipe, stage: model.Stage, model_dir: str | Path,
                   eval_sets: Mapping[str, str | Path], prompts: Sequence[str] | None = None, *,
                   trust: bool = False) -> dict[str, Any]:
    """{"stage", "loss": {source: {loss, perplexity, tokens, rows}}, "samples": [{prompt, text,
    tokens, stopped}]}. `prompts` defaults to evaluate.generate.prompts; `eval_sets` maps each
    source to its eval rows file (JSONL, rendered or records), read up to evaluate.max_rows."""
    import torch

    from .loading import for_inference
    from .rows import pairs

    net, tokenizer = for_inference(recipe, model_dir, trust=trust)
    losses = {}
    for source, path in sorted(eval_sets.items()):
        rows = pairs(path, recipe, tokenizer, limit=recipe.evaluate.max_rows)
        losses[source] = _loss(net, rows, batch_size=stage.train.micro_batch_size, pad_id=tokenizer.pad_token_id)
    with torch.no_grad():
        samples = [_generate(net, tokenizer, recipe, p)
                   for p in (recipe.evaluate.generate.prompts if prompts is None else prompts)]
    return {"stage": stage.name, "loss": losses, "samples": samples}


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


def _generate(net, tokenizer, recipe: model.Recipe, prompt: str) -> dict[str, Any]:
    """One sample, stopping at the template's end-of-turn token or EOS. Seeded per prompt, so a
    prompt's sample does not depend on which prompts come before it."""
    import torch

    from ..chat import chat_name
    from ..chat.templates import stop_token_ids
    from .rows import prompt_ids

    g = recipe.evaluate.generate
    stops = stop_token_ids(chat_name(recipe), tokenizer)
    ids = torch.tensor([prompt_ids(prompt, recipe, tokenizer)], device=next(net.parameters()).device)
    sample = g.temperature > 0
    torch.manual_seed(recipe.seed)
    out = net.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=g.max_new_tokens,
        do_sample=sample, temperature=g.temperature if sample else None, top_p=g.top_p if sample else None,
        top_k=0 if sample else None, no_repeat_ngram_size=g.no_repeat_ngram_size or None,
        eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)[0, ids.size(1):].tolist()
    stopped = bool(out) and out[-1] in stops
    return {"prompt": prompt, "text": tokenizer.decode(out[:-1] if stopped else out, skip_special_tokens=True),
            "tokens": len(out), "stopped": stopped}
