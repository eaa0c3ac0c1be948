"""FOMAML's inner loop, shared by the FOMAML trainer (runner/trainers/fomaml) and the few-shot
evaluation (few_shot.py), which adapts every model to a held-out task's shots the way training adapts
to a task's support rows."""
from __future__ import annotations

import contextlib

import torch


def batch_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's own causal-LM loss: mean over the batch's label tokens."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss


def trainable(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def adapt(model, params: list[torch.nn.Parameter], batches: list[dict], lr: float, *,
          autocast=contextlib.nullcontext) -> tuple[list[float], list[torch.Tensor]]:
    """The inner loop: one SGD step of size `lr` per support batch, on an fp32 (or wider) copy of
    `params`, whose rounded values are written into `params` before each forward. Leaves theta' in
    `params`; returns (support loss before each step, the full-precision theta')."""
    fast = [p.detach().to(torch.promote_types(p.dtype, torch.float32), copy=True) for p in params]
    losses = []
    for batch in batches:
        with autocast():
            loss = batch_loss(model, batch)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        if any(g is None for g in grads):
            missing = sum(g is None for g in grads)
            raise RuntimeError(f"FOMAML inner loop: the gradient is None for {missing} of {len(grads)} trainable "
                               "parameters. Reentrant activation checkpointing does this (use "
                               "use_reentrant=False); otherwise freeze the parameters the loss does not use")
        with torch.no_grad():
            for p, f, g in zip(params, fast, grads):
                if g is not None and lr:
                    f.sub_(g.to(f.dtype), alpha=lr)
                    p.copy_(f)
        losses.append(loss.detach().float().item())
    return losses, fast
