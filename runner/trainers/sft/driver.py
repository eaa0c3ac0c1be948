"""The SFT trainer's driver: SFTSpec + rendered rows -> a trained stage. The train step calls `train`
(in this process, or in each of N launched processes through runner/train/worker.py).

out_dir/
  checkpoints/checkpoint-<step>/   resumable (weights, optimizer, scheduler, RNG, trainer state)
  final/                           the adapter (or full model) + tokenizer [+ ewc_state.safetensors]
  log_history.json                 Trainer's log: loss, grad norm, lr per logged step
  metrics.json                     what train returns
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ...errors import RecipeError
from ...train.process import (checkpoint_step, last_checkpoint, process_state, quiet_environment,
                              quiet_progress, tokens_seen)
from .sft_config import SFTSpec

Spec = SFTSpec   # what the worker rebuilds from a spec file


def train(spec: SFTSpec, train_rows: str | Path, out_dir: str | Path, *,
                init_from: str | Path | None = None, ewc_state: str | Path | None = None,
                resume: bool = True, trust: bool = False) -> dict[str, Any]:
    """Train the stage `spec` describes on the rows in `train_rows` (JSONL, as the render step wrote them)
    into `out_dir`. spec.ewc (this stage's EWC anchor) and spec.fisher_for (leave a Fisher behind for a
    later stage) are as the train step declared them.

    init_from: the weights to start from (a previous stage's final/ dir: adapter or full model);
        None starts from model.base with a new adapter.
    ewc_state: the previous stage's ewc_state.safetensors, for a stage with `ewc:` (defaults to the
        one inside init_from).
    resume: continue from the last complete checkpoint in out_dir/checkpoints, if any; False
        discards old checkpoints and starts over.
    trust: the user passed --trust, so model.trust_remote_code takes effect.
    Returns train_loss, steps, tokens, tokens_per_second, seconds (this call's training time),
    resumed_from (the step it continued from, 0 for a fresh start).
    """
    with quiet_environment():
        from ...train.distributed import bind_device, world_size

        train = spec.train
        if world_size() != train.world_size:
            raise RecipeError(f"stage {spec.stage}: running in {world_size()} processes but train.world_size is "
                              f"{train.world_size}; set it with --num-procs so batch_size divides correctly")
        bind_device()
        with process_state(single_process_group=bool(train.deepspeed) and "RANK" not in os.environ):
            return _train(spec, train_rows, out_dir, init_from=init_from, ewc_state=ewc_state,
                          resume=resume, trust=trust)


def _train(spec: SFTSpec, train_rows, out_dir, *, init_from, ewc_state, resume, trust):
    from ...train import loading
    from ...train.batch import resolve
    from ...train.distributed import deepspeed_config
    from ...train.devices import check_kernels, precision
    from ...train.ewc import EWC_FILE, consolidate, estimate_fisher
    from ...train.rows import dataset, pairs
    from .sft_config import check_compile, describe, to_sft_config
    from .sft_trainer import trainer_class

    out_dir = Path(out_dir)
    checkpoints = out_dir / "checkpoints"
    is_main = int(os.environ.get("RANK", "0")) == 0
    anchor = _anchor(spec, init_from, ewc_state)
    last = last_checkpoint(checkpoints, clean=is_main) if resume else None
    if not resume and is_main and checkpoints.exists():
        shutil.rmtree(checkpoints)

    check_kernels(spec.train)   # before minutes of model loading
    check_compile(spec.train)
    net, tokenizer, peft_config = loading.for_training(spec, init_from, trust=trust)
    rows = pairs(train_rows)
    if not rows:
        raise RecipeError(f"stage {spec.stage}: no training rows in {train_rows}")
    prec = precision(spec.train)
    spec = dataclasses.replace(spec, train=resolve(spec.train, net, peft_config, rows, precision=prec,
                                                   pad_id=tokenizer.pad_token_id))
    ds_config = None
    if spec.train.deepspeed:
        ds_config = deepspeed_config(spec.train.deepspeed, spec.train, spec.base_dir)
        if spec.ewc is not None and ds_config.get("zero_optimization", {}).get("stage") == 3:
            raise RecipeError(f"stage {spec.stage}: ewc needs whole parameters on every process; "
                              "use ZeRO-1/2 (zero3 shards them)")
    if is_main:
        print(f"    training {spec.stage}: {describe(spec.train, prec, ds_config)}", flush=True)
    args = to_sft_config(spec, checkpoints, resume=last, deepspeed_config=ds_config)
    # the adapter's random init happens inside the trainer, before Trainer seeds (older TRL): seed here so
    # it never depends on what ran earlier in this process
    from transformers import set_seed
    set_seed(spec.seed)
    kwargs: dict[str, Any] = dict(model=net, args=args, train_dataset=dataset(rows), processing_class=tokenizer,
                                  peft_config=peft_config)
    if anchor is not None:
        kwargs["ewc_state"] = anchor
    trainer = trainer_class(ewc=anchor is not None, wraps_lm_head=spec.model.adapter.wraps_lm_head)(**kwargs)
    quiet_progress(trainer)
    batches = _count_batches(trainer, spec, tokenizer.pad_token_id)
    if ds_config is not None:
        # Trainer gives Accelerate an accumulation of 1 (it counts micro batches itself) while DeepSpeed's
        # engine must count them too; Accelerate would warn about the mismatch and then take DeepSpeed's
        # value. Giving it that value up front is the same state, without the warning.
        trainer.accelerator.gradient_accumulation_steps = ds_config["gradient_accumulation_steps"]

    tokens_before = tokens_seen(last)
    start = time.perf_counter()
    with _static_shapes(spec.train, spec.template.max_length):
        result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    seconds = time.perf_counter() - start
    final = out_dir / "final"
    trainer.save_model(str(final))   # the main process writes; adapter (or model) + tokenizer

    successor = spec.fisher_for
    if successor is not None and is_main:
        # On a freshly loaded copy of what was saved: the trained model may sit inside DeepSpeed,
        # whose gradient hooks must not see these backward passes.
        fresh = loading.to_device(loading.for_training(spec, final, trust=trust)[0])
        fisher = estimate_fisher(fresh, rows, samples=successor.fisher_samples, seed=spec.seed)
        consolidate(anchor, fresh, fisher, gamma=successor.gamma, stage=spec.stage).save(final / EWC_FILE)
    trainer.accelerator.wait_for_everyone()

    metrics = _metrics(trainer, spec, result, batches, seconds=seconds, tokens_before=tokens_before, last=last)
    if is_main:
        (out_dir / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def _count_batches(trainer, spec: SFTSpec, pad_id: int):
    """The trainer's collator wrapped to count padding and, for train.shapes bucketed, pad to buckets."""
    from ...train.batch import Batches

    bucketed = spec.train.shapes == "bucketed"
    trainer.data_collator = Batches(trainer.data_collator, pad_id=pad_id,
                                    micro=spec.train.micro_batch_size if bucketed else None,
                                    max_length=spec.template.max_length)
    return trainer.data_collator


def _static_shapes(train, max_length: int):
    """Compiled bucketed batches: one static graph per bucket. Dynamo's default would compile a
    shape-generic graph on the second shape it sees (slower kernels, and no CUDA graph replay), and its
    recompile limit (8) must leave room for every bucket."""
    import contextlib

    if not (train.torch_compile and train.shapes == "bucketed"):
        return contextlib.nullcontext()
    import torch._dynamo
    from ...train.batch import buckets

    limit = max(torch._dynamo.config.recompile_limit, 2 * len(buckets(max_length)))
    return torch._dynamo.config.patch(automatic_dynamic_shapes=False, recompile_limit=limit)


def _metrics(trainer, spec: SFTSpec, result, batches, *, seconds: float, tokens_before: int, last) -> dict:
    from ...train.stats import parameters, stage_stats

    tokens = int(trainer.state.num_input_tokens_seen)
    rate = (tokens - tokens_before) / seconds if seconds > 0 else 0.0
    steps = trainer.state.global_step
    return {
        "train_loss": result.training_loss,
        "steps": steps,
        "tokens": tokens,
        "tokens_per_second": rate,
        "seconds": seconds,
        "resumed_from": checkpoint_step(last),
        **stage_stats(tokens=tokens - tokens_before, steps=steps - checkpoint_step(last), tokens_per_second=rate,
                      padding_share=batches.padding_share,
                      recompiles=trainer.recompiles if spec.train.torch_compile else None,
                      params=parameters(trainer.model), world_size=spec.train.world_size),
    }


def _anchor(spec: SFTSpec, init_from, ewc_state):
    """The EwcState this stage's penalty pulls toward (None without `ewc:`): the previous stage's Fisher."""
    from ...train.ewc import EWC_FILE, EwcState

    if spec.ewc is None:
        return None
    path = ewc_state or (Path(init_from) / EWC_FILE if init_from else None)
    if path is None or not Path(path).is_file():
        raise RecipeError(f"stage {spec.stage} has ewc: but no earlier stage's Fisher was found "
                          f"({path or 'no init_from'}); ewc needs a stage to start from")
    return EwcState.load(path)
