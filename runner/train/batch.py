"""`micro_batch_size: auto`: the largest micro batch that fits, chosen when training starts.

Only how the effective batch is cut changes: the candidates are the divisors of batch_size /
world_size, so gradient accumulation = batch_size / (micro x world_size) stays whole and every
optimizer step still sees batch_size sequences (Trainer normalises the loss by the trained tokens
of the whole step, so the cut does not change the gradient beyond floating-point rounding).

On CUDA each candidate, largest first, runs one forward+backward pass of the longest rows with the
recipe's adapter, precision and checkpointing; it fits when that peak plus the optimizer's state for
the trainable parameters stays under 90% of the device's memory (Liger, torch.compile and ZeRO only
lower the real peak, so the choice errs on the safe side). The probe's adapter is removed again and
the RNG restored, so the run that follows starts exactly as with a fixed micro batch. A CPU has no
out-of-memory signal to probe, so there the choice is the largest micro batch of at most
CPU_TOKENS tokens. With several processes every rank probes and the smallest choice wins.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from ..errors import RecipeError
from ..recipe import model

CPU_TOKENS = 8192
HEADROOM = 0.9
OPTIMIZER_BYTES = 16   # per trainable parameter: fp32 gradient + AdamW's two moments + a master copy


def candidates(train: model.Train) -> list[int]:
    """Micro batch sizes that keep accumulation whole, largest first."""
    per_process = train.batch_size // train.world_size
    return [n for n in range(per_process, 0, -1) if per_process % n == 0]


def pick(sizes: Sequence[int], fits: Callable[[int], bool]) -> int | None:
    """The first (largest) size that fits, or None."""
    return next((n for n in sizes if fits(n)), None)


def resolve(train: model.Train, net, peft_config, rows: list[tuple[list[int], list[int]]], *,
            precision: str, pad_id: int) -> model.Train:
    """`train` with micro_batch_size a number (unchanged when it already is one)."""
    if train.micro_batch_size != "auto":
        return train
    import torch

    sizes = candidates(train)
    longest = sorted(rows, key=lambda r: len(r[0]), reverse=True)[:sizes[0]]
    if torch.cuda.is_available():
        chosen = pick(sizes, lambda n: _fits_cuda(net, peft_config, longest[:n], train, precision, pad_id))
        chosen = _agree(chosen or 0)
        if not chosen:
            raise RecipeError("train.micro_batch_size auto: not even one sequence of the longest rows fits in GPU "
                              "memory; turn on train.gradient_checkpointing, shorten template.max_length, or use "
                              "a deepspeed offload preset")
    else:
        width = len(longest[0][0]) if longest else 1
        chosen = pick(sizes, lambda n: n * width <= CPU_TOKENS) or 1
    return dataclasses.replace(train, micro_batch_size=chosen)


def _agree(n: int) -> int:
    """The smallest choice across processes: they must all cut the batch the same way."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return n
    t = torch.tensor([n], device="cuda")
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def _fits_cuda(net, peft_config, rows, train: model.Train, precision: str, pad_id: int) -> bool:
    import torch

    device = torch.device("cuda", torch.cuda.current_device())
    rng, cuda_rng = torch.random.get_rng_state(), torch.cuda.get_rng_state_all()
    probe = net
    if peft_config is not None:
        from peft import get_peft_model
        probe = get_peft_model(net, peft_config)
    if train.gradient_checkpointing:
        net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if peft_config is not None:
            net.enable_input_require_grads()
    probe.to(device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    try:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        batch = _batch(rows, pad_id, device, padding_free=train.packing or train.padding_free)
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = probe(**batch).loss
        loss.backward()
        trainable = sum(p.numel() for p in probe.parameters() if p.requires_grad)
        need = torch.cuda.max_memory_allocated(device) + OPTIMIZER_BYTES * trainable
        return need <= HEADROOM * torch.cuda.get_device_properties(device).total_memory
    except torch.cuda.OutOfMemoryError:
        return False
    finally:
        loss = batch = None
        for p in probe.parameters():
            p.grad = None
        if train.gradient_checkpointing:
            net.gradient_checkpointing_disable()
            if peft_config is not None:
                net.disable_input_require_grads()
        if peft_config is not None:
            probe.unload()          # the base model again, without the probe's adapter
        torch.cuda.empty_cache()
        torch.random.set_rng_state(rng)
        torch.cuda.set_rng_state_all(cuda_rng)


def _batch(rows, pad_id: int, device, *, padding_free: bool) -> dict[str, Any]:
    import torch

    if padding_free:    # one row, positions restarting per sequence, as TRL's collator builds it
        ids = [t for r in rows for t in r[0]]
        labels = [t for r in rows for t in r[1]]
        pos = [i for r in rows for i in range(len(r[0]))]
        return {"input_ids": torch.tensor([ids], device=device), "labels": torch.tensor([labels], device=device),
                "position_ids": torch.tensor([pos], device=device)}
    width = max(len(r[0]) for r in rows)
    ids = [r[0] + [pad_id] * (width - len(r[0])) for r in rows]
    labels = [r[1] + [-100] * (width - len(r[1])) for r in rows]
    mask = [[1] * len(r[0]) + [0] * (width - len(r[0])) for r in rows]
    return {"input_ids": torch.tensor(ids, device=device), "labels": torch.tensor(labels, device=device),
            "attention_mask": torch.tensor(mask, device=device)}


# --- batch shapes (train.shapes) -----------------------------------------------------------------------

MIN_BUCKET = 16


def buckets(max_length: int) -> tuple[int, ...]:
    """The lengths a bucketed micro batch is padded to: powers of two from MIN_BUCKET, and max_length
    itself (the render step cuts every row to it), so a run sees at most ~log2(max_length) shapes."""
    sizes, n = [], MIN_BUCKET
    while n < max_length:
        sizes.append(n)
        n *= 2
    return tuple(sizes) + (max_length,)


class Batches:
    """The trainer's collator, wrapped: counts the real and the padded tokens of every micro batch it
    builds (the run's padding share), and with `micro` set (train.shapes: bucketed) pads each micro
    batch to its bucket and to `micro` rows. Filler rows have labels -100 and an attention mask of
    zeros: no loss, no gradient and no counted tokens, so every step trains exactly what it did
    unbucketed (Trainer normalises by the labelled tokens, which filler does not add to). Counting
    happens here, on the CPU, so it costs the device no synchronisation."""

    def __init__(self, collate: Callable[[list], dict], *, pad_id: int, micro: int | None = None,
                 max_length: int | None = None):
        self.collate, self.pad_id, self.micro = collate, pad_id, micro
        self.sizes = buckets(max_length) if micro else ()
        self.real = self.total = 0

    def __call__(self, examples: list) -> dict:
        batch = self.collate(examples)
        if self.micro:
            batch = self._bucketed(batch)
        ids = batch["input_ids"]
        self.total += ids.numel()
        self.real += int(batch["attention_mask"].sum()) if "attention_mask" in batch else ids.numel()
        return batch

    def _bucketed(self, batch: dict) -> dict:
        import torch

        rows, width = batch["input_ids"].shape
        length = next((b for b in self.sizes if b >= width), width)
        fill = {"input_ids": self.pad_id, "labels": -100, "attention_mask": 0}
        if set(batch) - set(fill):
            raise RecipeError(f"train.shapes bucketed: the collator also built {sorted(set(batch) - set(fill))}, "
                              "which bucketing cannot pad; use train.shapes: dynamic")
        out = {}
        for key, value in batch.items():
            grown = torch.full((max(self.micro, rows), length), fill[key], dtype=value.dtype)
            grown[:rows, :width] = value
            out[key] = grown
        return out

    @property
    def padding_share(self) -> float:
        return 1 - self.real / self.total if self.total else 0.0
