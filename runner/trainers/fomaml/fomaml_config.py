"""Configuration of the FOMAML trainer: SFT's settings plus the inner loop. The outer loop is the
ordinary optimizer (`learning_rate`, `optim`, schedule, clipping), so it needs no fields of its own.

Also the one place where a meta recipe's `meta:` settings become a trainer's configuration: FOMAMLSpec
(what a train.meta step declared) -> FOMAMLConfig (`train:` mapped as for SFT, by the SFT adapter's
`fields`, then the outer and inner loop), and the SFT control's SFTSpec (control_spec)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import SFTConfig

from ...errors import RecipeError
from ...recipe import model
from ...train.spec import Spec
from ..sft.sft_config import SFTSpec, fields


@dataclass(frozen=True, kw_only=True)
class FOMAMLSpec(Spec):
    """A meta recipe's training, as its train.meta (or train.control) step declared it."""
    train: model.Train                          # the first stage's `train:` (precision, schedule, logging...)
    inner: model.Inner                          # the inner loop
    outer: model.Outer                          # the outer loop
    total_steps: int                            # meta-training steps
    save_total_limit: int | None = None


@dataclass
class FOMAMLConfig(SFTConfig):
    """SFTConfig for [`FOMAMLTrainer`].

    One training item is one process's share of a meta-batch (`{"tasks": [{"support": [batch, ...],
    "query": batch}, ...]}`), so `per_device_train_batch_size` is always 1 and the meta-batch size is
    tasks per item x processes x `gradient_accumulation_steps`. `learning_rate` is the outer (meta)
    learning rate.

    Parameters:
        inner_learning_rate (`float`, defaults to `1e-4`):
            Step size of the inner SGD steps on the support batches (0 turns FOMAML into multi-task
            training on the query batches).
        adaptation_log_steps (`int`, defaults to `0`):
            Every this many optimizer steps, also measure the query loss at the un-adapted parameters,
            so the log shows the adaptation gain (one extra forward per task); 0 uses `logging_steps`.
    """

    inner_learning_rate: float = field(default=1e-4, metadata={"help": "Inner-loop SGD step size."})
    adaptation_log_steps: int = field(default=0, metadata={"help": "Steps between adaptation-gain measurements."})

    def __post_init__(self):
        if self.per_device_train_batch_size != 1:
            # an item already is a whole meta-batch share; a batch of items has no meaning
            raise ValueError("FOMAMLConfig: per_device_train_batch_size must be 1 (one item = one process's "
                             "share of a meta-batch)")
        # Trainer would drop the `tasks` key as an unknown model input, and TRL would tokenize it
        self.remove_unused_columns = False
        self.dataset_kwargs = {**(self.dataset_kwargs or {}), "skip_prepare_dataset": True}
        super().__post_init__()
        if self.inner_learning_rate < 0:
            raise ValueError("FOMAMLConfig: inner_learning_rate must be >= 0")
        name = checkpointing_field(self)
        if getattr(self, name):
            # Reentrant checkpointing hides the parameters from `torch.autograd.grad`: the inner
            # gradients come back as None and the inner loop would silently do nothing.
            kwargs = dict(getattr(self, f"{name}_kwargs") or {})
            if kwargs.get("use_reentrant"):
                raise ValueError("FOMAMLConfig: activation checkpointing must be non-reentrant "
                                 "(use_reentrant=False): with reentrant checkpointing the inner-loop "
                                 "gradients are None")
            kwargs["use_reentrant"] = False
            setattr(self, f"{name}_kwargs", kwargs)


def checkpointing_field(config) -> str:
    """transformers 5.x calls it activation_checkpointing; the declared floor still gradient_checkpointing."""
    return "activation_checkpointing" if hasattr(config, "activation_checkpointing") else "gradient_checkpointing"


def meta_spec(spec: FOMAMLSpec, world_size: int) -> FOMAMLSpec:
    """A meta recipe's training with the outer loop's settings: meta.total_steps optimizer steps at
    meta.outer.learning_rate, one item (a process's share of the meta-batch) per micro-step."""
    return dataclasses.replace(spec, train=dataclasses.replace(
        spec.train, max_steps=spec.total_steps, learning_rate=spec.outer.learning_rate,
        micro_batch_size=1, batch_size=world_size, world_size=world_size, packing=False))


def to_fomaml_config(spec: FOMAMLSpec, output_dir: str | Path, *, world_size: int = 1,
                     resume: str | Path | None = None, deepspeed_config: dict[str, Any] | None = None):
    """FOMAMLConfig for a meta recipe: `train:` as for SFT, the outer loop from meta_spec, the inner
    learning rate from meta.inner."""
    args = fields(meta_spec(spec, world_size), output_dir, resume, deepspeed_config)
    args.update(padding_free=False, remove_unused_columns=False)
    return FOMAMLConfig(inner_learning_rate=spec.inner.learning_rate, **args)


def control_spec(spec: FOMAMLSpec, world_size: int = 1) -> SFTSpec:
    """The SFT control: meta.total_steps optimizer steps at the outer learning rate, each on as many
    rows as one meta-step touches (meta_batch_size x (inner steps x inner batch + query batch)), in
    micro-batches of the inner batch size: the same steps, rows and compute as FOMAML."""
    inner, outer = spec.inner, spec.outer
    rows = outer.meta_batch_size * (inner.steps * inner.batch_size + outer.query_batch_size)
    micro = inner.batch_size
    while micro > 1 and rows % (micro * world_size):
        micro -= 1
    if rows % (micro * world_size):
        raise RecipeError(f"the SFT control trains {rows} rows a step, which {world_size} processes cannot share "
                          "evenly; run it with a --num-procs that divides them")
    return SFTSpec(stage="control", model=spec.model, seed=spec.seed, base_dir=spec.base_dir,
                   template=spec.template, save_total_limit=spec.save_total_limit, train=dataclasses.replace(
                       spec.train, max_steps=spec.total_steps, learning_rate=outer.learning_rate,
                       micro_batch_size=micro, batch_size=rows, world_size=world_size, packing=False))
