"""Elastic weight consolidation (online EWC, Schwarz et al. 2018) across curriculum stages.

After a stage whose successor asks for `ewc:`, we estimate the diagonal Fisher of the trainable
parameters (the LoRA weights, or all weights without an adapter) on that stage's training rows,
and save it with theta* (the parameters the stage ended with) next to the stage's weights. The
next stage adds  lambda/2 * sum_i F_i (theta_i - theta*_i)^2  to its loss (ewc_trainer.py).

- Fisher: the empirical Fisher of the sequence likelihood, the mean over `fisher_samples` rows
  of the squared gradient of  sum_t log p(y_t | y_<t)  over the row's trained tokens, one row per
  backward pass so the squares are per sequence (a batch gradient squared is not the Fisher).
  Computed with dropout off, accumulated in fp32.
- Normalisation: divided by its mean over all entries, so mean(F) = 1. The raw scale depends on
  the model size, the loss scale and the sequence lengths, so without it the same lambda means
  something different on every model; after it, lambda is the L2 strength on a parameter of
  average importance. (Dividing by the max instead lets a few outliers shrink every other entry
  toward 0: the Fisher of a network is heavy-tailed.)
- Online accumulation: F = gamma * F_previous + F_this_stage, each term normalised, so every
  stage counts equally when gamma = 1 and older stages fade when gamma < 1; theta* is always the
  latest stage's parameters, which is the online-EWC approximation.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..errors import RecipeError

EWC_FILE = "ewc_state.safetensors"


@dataclass
class EwcState:
    """Fisher diagonal and theta* by parameter name (fp32, CPU), and the stages they cover."""
    fisher: dict[str, Any]
    anchor: dict[str, Any]
    stages: list[str]

    def penalty(self, model) -> Any:
        """sum_i F_i (theta_i - theta*_i)^2 over the trainable parameters of `model` (without
        lambda/2). Differentiable; computed in fp32 whatever the parameters' dtype."""
        import torch

        total = None
        for name, p in _trainable(model).items():
            f, a = self._on(name, p.device)
            term = (f * (p.float() - a).pow(2)).sum()
            total = term if total is None else total + term
        return total if total is not None else torch.zeros(())

    def _on(self, name: str, device) -> tuple[Any, Any]:
        # moved once per device and kept there: the penalty runs every micro-batch
        f, a = self.fisher[name], self.anchor[name]
        if f.device != device:
            f = self.fisher[name] = f.to(device)
            a = self.anchor[name] = a.to(device)
        return f, a

    def check(self, model) -> None:
        """The model must have exactly the parameters the state was built on (same adapter)."""
        names = set(_trainable(model))
        if names != set(self.fisher):
            missing, extra = sorted(set(self.fisher) - names)[:3], sorted(names - set(self.fisher))[:3]
            raise RecipeError(
                "the EWC state does not match the model's trainable parameters (was the adapter "
                f"changed between stages?); missing {missing}, unexpected {extra}")

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        tensors = {f"fisher/{k}": v.cpu().contiguous() for k, v in self.fisher.items()}
        tensors.update({f"anchor/{k}": v.cpu().contiguous() for k, v in self.anchor.items()})
        save_file(tensors, str(path), metadata={"stages": json.dumps(self.stages), "normalisation": "mean=1"})

    @classmethod
    def load(cls, path: str | Path) -> "EwcState":
        from safetensors import safe_open

        fisher, anchor = {}, {}
        with safe_open(str(path), framework="pt") as f:
            stages = json.loads(f.metadata()["stages"])
            for key in f.keys():
                kind, name = key.split("/", 1)
                (fisher if kind == "fisher" else anchor)[name] = f.get_tensor(key)
        return cls(fisher=fisher, anchor=anchor, stages=stages)


def estimate_fisher(model, rows: Sequence[tuple[list[int], list[int]]], *, samples: int,
                    seed: int) -> dict[str, Any]:
    """Diagonal empirical Fisher over the trainable parameters, normalised to mean 1.
    `rows` are (input_ids, labels) pairs; `samples` of them are drawn with `seed`."""
    import torch

    params = _trainable(model)
    pick = random.Random(seed).sample(range(len(rows)), min(samples, len(rows)))
    fisher = {n: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for n, p in params.items()}
    device = next(iter(params.values())).device
    was_training = model.training
    model.eval()                      # no dropout: the Fisher of the model as it will be used
    used = 0
    for i in pick:
        ids, labels = rows[i]
        labels_t = torch.tensor([labels], device=device)
        n_tokens = int((labels_t[:, 1:] != -100).sum())   # the model shifts labels by one
        if n_tokens == 0:
            continue
        model.zero_grad(set_to_none=True)
        out = model(input_ids=torch.tensor([ids], device=device), labels=labels_t, use_cache=False)
        (out.loss * n_tokens).backward()   # mean token NLL -> the sequence's log-likelihood
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach().float().pow(2)
        used += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    if used == 0:
        raise RecipeError("no row with trained tokens to estimate the EWC Fisher from")
    # the mean over rows and the normalisation to mean 1 together are one division by the mean
    mean = torch.cat([f.flatten() for f in fisher.values()]).mean()
    if mean <= 0:
        raise RecipeError("the EWC Fisher is zero: the trainable parameters get no gradient")
    return {n: (f / mean).cpu() for n, f in fisher.items()}


def consolidate(previous: EwcState | None, model, fisher: dict[str, Any], *, gamma: float,
                stage: str) -> EwcState:
    """Online accumulation: gamma * F_previous + F, anchored at the model's current parameters."""
    anchor = {n: p.detach().float().cpu().clone() for n, p in _trainable(model).items()}
    if previous is not None:
        previous.check(model)
        fisher = {n: gamma * previous.fisher[n].cpu() + f for n, f in fisher.items()}
    return EwcState(fisher=fisher, anchor=anchor, stages=[*(previous.stages if previous else []), stage])


def _trainable(model) -> dict[str, Any]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}
