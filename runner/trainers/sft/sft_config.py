"""The one place where the recipe's `train`/`template`/`output` settings become TRL's SFTConfig (the
SFT trainer's spec, SFTSpec, is what a train step declared). Every field is set from the recipe or pinned
here on purpose, because the SFTConfig defaults differ from what a recipe means (TRL turns on bf16 and
activation checkpointing by default); nothing from the user's YAML is passed through unread. A trainer
whose config extends SFTConfig (FOMAML's) starts from `fields` and adds its own.

Upstream renames are absorbed here, by looking at the fields SFTConfig actually has (`supported`),
so every version in pyproject.toml's range gets the same meaning: transformers 5.18 renamed
gradient_checkpointing to activation_checkpointing, and transformers 5 reads a float warmup_steps
< 1 as a ratio where 4.x had warmup_ratio."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import SFTConfig

from ...errors import RecipeError
from ...recipe import model
from ...train.devices import check_kernels, precision
from ...train.spec import Fisher, Spec


@dataclass(frozen=True, kw_only=True)
class SFTSpec(Spec):
    """One SFT stage, as the train step declared it."""
    train: model.Train                          # training settings
    ewc: model.Ewc | None = None                # this stage's EWC anchor; None: EWC is off
    fisher_for: Fisher | None = None            # a later stage's ewc: leave a Fisher behind, this big
    save_total_limit: int | None = None


@dataclass
class EwcConfig(SFTConfig):
    """SFTConfig for [`EwcTrainer`]. The anchor (Fisher and theta*) is data, not configuration, so it is
    passed to the trainer, not stored here.

    Parameters:
        ewc_lambda (`float`, defaults to `0.5`):
            Strength of the penalty `ewc_lambda / 2 * sum_i F_i (theta_i - theta*_i)^2`, added once per optimizer
            step. The Fisher is normalised to mean 1, so `ewc_lambda` is the L2 strength on a parameter of average
            importance.
    """

    ewc_lambda: float = field(default=0.5, metadata={"help": "Strength of the EWC penalty."})


def to_sft_config(spec: SFTSpec, output_dir: str | Path, *,
                  resume: str | Path | None = None,
                  deepspeed_config: dict[str, Any] | None = None):
    """SFTConfig for one stage (an EwcConfig when the stage has `ewc:`). `output_dir` holds the
    resumable checkpoints; `resume` is the checkpoint this run continues from, if any."""
    args = fields(spec, output_dir, resume, deepspeed_config)
    if spec.model.adapter.wraps_lm_head:
        # trainable token rows wrap the LM head, which TRL's chunked loss (the default up to TRL 1.15) reads
        # around: the plain loss (and PlainHeadSFTTrainer for the fused head of later versions)
        args["loss_type"] = "nll"
    if spec.ewc is not None:
        return EwcConfig(ewc_lambda=spec.ewc.lambda_, **args)
    return SFTConfig(**args)


def fields(spec: Spec, output_dir, resume, deepspeed_config) -> dict[str, Any]:
    """SFTConfig's fields from a spec with `train`, `template`, `seed` and `save_total_limit`."""
    import torch

    train, template = spec.train, spec.template
    if train.micro_batch_size == "auto":
        raise RecipeError("train.micro_batch_size is auto: resolve it first (runner.train.batch.resolve)")
    prec = precision(train)
    check_kernels(train)
    check_compile(train)
    has = supported(SFTConfig)
    # padding-free without packing: TRL refuses a max_length it would not enforce; the rows are already
    # cut to template.max_length by the render step, so there is nothing left for it to enforce
    padding_free = train.packing or train.padding_free
    fields: dict[str, Any] = dict(
        output_dir=str(output_dir),
        # how long
        num_train_epochs=train.epochs,
        max_steps=train.max_steps if train.max_steps is not None else -1,
        # optimiser and schedule
        learning_rate=train.learning_rate,
        lr_scheduler_type=train.lr_scheduler,
        **_warmup(train.warmup_ratio, has),
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        # batch: `batch_size` sequences per optimizer step across all processes
        per_device_train_batch_size=train.micro_batch_size,
        gradient_accumulation_steps=train.grad_accum,
        # numerics; TRL defaults bf16=True, which we never want implicitly
        bf16=prec == "bf16",
        fp16=prec == "fp16",
        **{_checkpointing(has): train.gradient_checkpointing},
        # kernels
        use_liger_kernel=train.use_liger_kernel,
        torch_compile=bool(train.torch_compile),
        # CUDA graphs: each compiled step is recorded once per shape and replayed
        torch_compile_mode="reduce-overhead" if train.torch_compile == "reduce-overhead" else None,
        # sequences: rows arrive rendered and cut to template.max_length, so TRL's truncation is a
        # no-op; with packing, max_length is the length of a pack
        max_length=template.max_length if train.packing or not padding_free else None,
        packing=train.packing,
        packing_strategy="bfd",     # best-fit decreasing, padding-free with per-sequence positions
        padding_free=padding_free,
        # reproducibility: one seed for init, data order and dropout; in-process data loading
        seed=spec.seed,
        data_seed=spec.seed,
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
        save_total_limit=spec.save_total_limit,
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


def supported(config_class) -> dict[str, Any]:
    """{field name: annotation} of this installed version's SFTConfig (or TrainingArguments)."""
    import dataclasses

    return {f.name: f.type for f in dataclasses.fields(config_class)}


def _checkpointing(has: dict[str, Any]) -> str:
    return "activation_checkpointing" if "activation_checkpointing" in has else "gradient_checkpointing"


def _warmup(ratio: float, has: dict[str, Any]) -> dict[str, float]:
    if "float" not in str(has["warmup_steps"]):    # transformers 4.x: warmup_steps counts steps
        return {"warmup_ratio": ratio, "warmup_steps": 0}
    # transformers 5 reads a float warmup_steps < 1 as a ratio; a ratio of exactly 1 would read as
    # "1 step", so it is kept just below
    return {"warmup_steps": min(ratio, 0.999999)}


def describe(train: model.Train, prec: str, ds_config: dict[str, Any] | None) -> str:
    """One line for the run log: how this stage trains."""
    def on(flag: bool) -> str:
        return "on" if flag else "off"

    zero = f"deepspeed {train.deepspeed} (ZeRO-{ds_config['zero_optimization']['stage']})" \
        if ds_config and "zero_optimization" in ds_config else ("deepspeed " + train.deepspeed if train.deepspeed else "no deepspeed")
    return (f"{prec}, world size {train.world_size}, micro batch {train.micro_batch_size} x accumulation "
            f"{train.grad_accum} x {train.world_size} = batch {train.batch_size}; packing {on(train.packing)}, "
            f"padding-free {on(train.packing or train.padding_free)}, liger {on(train.use_liger_kernel)}, "
            f"compile {_compile(train.torch_compile)}, gradient checkpointing {on(train.gradient_checkpointing)}, "
            f"{zero}" + ("; shapes bucketed" if train.shapes == "bucketed" else ""))


def _compile(setting: bool | str) -> str:
    return setting if isinstance(setting, str) else ("on" if setting else "off")


def check_compile(train: model.Train) -> None:
    """torch_compile: reduce-overhead replays CUDA graphs: refused where there is no CUDA device."""
    import torch

    if train.torch_compile == "reduce-overhead" and not torch.cuda.is_available():
        raise RecipeError("train.torch_compile reduce-overhead replays CUDA graphs and needs a CUDA device; "
                          "on this machine use torch_compile: true (or false)")


