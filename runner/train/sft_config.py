"""The one place where the recipe's `train`/`template`/`output` settings become TRL's SFTConfig
and peft's LoraConfig. Every field is set from the recipe or pinned here on purpose, because the
SFTConfig defaults differ from what a recipe means (TRL turns on bf16 and activation
checkpointing by default); nothing from the user's YAML is passed through unread."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import RecipeError
from ..recipe import model


def precision(train: model.Train) -> str:
    """'bf16', 'fp16' or 'fp32'. `auto` is bf16 where CUDA supports it, else fp32: CPU autocast in
    bf16 is slower than fp32 and fp16 on CPU is not a thing we run."""
    import torch

    cuda = torch.cuda.is_available()
    if train.precision == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if train.precision == "fp16" and not cuda:
        raise RecipeError("train.precision fp16 needs a CUDA device; use auto, fp32 or bf16 on CPU")
    return train.precision


def to_sft_config(stage: model.Stage, recipe: model.Recipe, output_dir: str | Path, *,
                  resume: str | Path | None = None,
                  deepspeed_config: dict[str, Any] | None = None):
    """SFTConfig for one stage (an EwcConfig when the stage has `ewc:`). `output_dir` holds the
    resumable checkpoints; `resume` is the checkpoint this run continues from, if any."""
    from .ewc_config import EwcConfig
    from trl import SFTConfig

    fields = _fields(stage, recipe, output_dir, resume, deepspeed_config)
    if stage.ewc is not None:
        return EwcConfig(ewc_lambda=stage.ewc.lambda_, **fields)
    return SFTConfig(**fields)


def meta_stage(recipe: model.Recipe, world_size: int) -> model.Stage:
    """The implicit stage of a meta recipe with the outer loop's settings: meta.total_steps optimizer
    steps at meta.outer.learning_rate, one item (a process's share of the meta-batch) per micro-step."""
    import dataclasses

    st = recipe.stages[0]
    return dataclasses.replace(st, train=dataclasses.replace(
        st.train, max_steps=recipe.meta.total_steps, learning_rate=recipe.meta.outer.learning_rate,
        micro_batch_size=1, batch_size=world_size, world_size=world_size, packing=False))


def to_fomaml_config(recipe: model.Recipe, output_dir: str | Path, *, world_size: int = 1,
                     resume: str | Path | None = None, deepspeed_config: dict[str, Any] | None = None):
    """FOMAMLConfig for a meta recipe: `train:` as for SFT, the outer loop from meta_stage, the inner
    learning rate from meta.inner."""
    from .fomaml_config import FOMAMLConfig

    fields = _fields(meta_stage(recipe, world_size), recipe, output_dir, resume, deepspeed_config)
    fields.update(padding_free=False, remove_unused_columns=False)
    return FOMAMLConfig(inner_learning_rate=recipe.meta.inner.learning_rate, **fields)


def _fields(stage, recipe, output_dir, resume, deepspeed_config) -> dict[str, Any]:
    import torch

    train, template = stage.train, recipe.template
    prec = precision(train)
    fields: dict[str, Any] = dict(
        output_dir=str(output_dir),
        # how long
        num_train_epochs=train.epochs,
        max_steps=train.max_steps if train.max_steps is not None else -1,
        # optimiser and schedule
        learning_rate=train.learning_rate,
        lr_scheduler_type=train.lr_scheduler,
        # transformers 5 reads a float warmup_steps < 1 as a ratio; a ratio of exactly 1 would read
        # as "1 step", so it is kept just below
        warmup_steps=min(train.warmup_ratio, 0.999999),
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        # batch: `batch_size` sequences per optimizer step across all processes
        per_device_train_batch_size=train.micro_batch_size,
        gradient_accumulation_steps=train.grad_accum,
        # numerics; TRL defaults bf16=True, which we never want implicitly
        bf16=prec == "bf16",
        fp16=prec == "fp16",
        activation_checkpointing=train.gradient_checkpointing,
        # sequences: rows arrive rendered and cut to template.max_length, so TRL's truncation is a
        # no-op; with packing, max_length is the length of a pack
        max_length=template.max_length,
        packing=train.packing,
        packing_strategy="bfd",     # best-fit decreasing, padding-free with per-sequence positions
        padding_free=train.packing,
        # reproducibility: one seed for init, data order and dropout; in-process data loading
        seed=recipe.seed,
        data_seed=recipe.seed,
        dataloader_num_workers=0,
        dataloader_drop_last=False,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
        # logging and checkpoints
        logging_strategy="steps",
        logging_steps=train.logging_steps,
        include_num_input_tokens_seen="non_padding",   # survives resume in trainer_state.json
        save_strategy="steps",
        save_steps=train.save_steps,
        save_total_limit=recipe.output.save_total_limit,
        save_only_model=False,                         # resume needs optimizer, scheduler and RNG
        report_to=list(train.report_to) or "none",
        eval_strategy="no",                            # evaluation is its own step (evaluate.py)
        disable_tqdm=True,                             # the run log gets the loss via log_history
        resume_from_checkpoint=str(resume) if resume else None,
        deepspeed=deepspeed_config,
        # our dataset holds exactly input_ids and labels; TRL keeps those (and seq_lengths when packing)
        remove_unused_columns=True,
    )
    return fields


def lora_config(adapter: model.Adapter):
    """peft LoraConfig for `model.adapter` (type lora)."""
    from peft import LoraConfig

    return LoraConfig(
        r=adapter.r,
        lora_alpha=adapter.alpha,
        lora_dropout=adapter.dropout,
        target_modules=list(adapter.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
