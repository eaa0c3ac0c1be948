"""Train one stage: what the train step calls (in this process, or in each of N launched processes
through worker.py).

out_dir/
  checkpoints/checkpoint-<step>/   resumable (weights, optimizer, scheduler, RNG, trainer state)
  final/                           the adapter (or full model) + tokenizer [+ ewc_state.safetensors]
  log_history.json                 Trainer's log: loss, grad norm, lr per logged step
  metrics.json                     what train_stage returns
"""
from __future__ import annotations

import dataclasses
import gc
import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import RecipeError
from .spec import StageSpec

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def train_stage(spec: StageSpec, train_rows_path: str | Path, out_dir: str | Path, *,
                init_from: str | Path | None = None, ewc_state: str | Path | None = None,
                resume: bool = True, trust: bool = False) -> dict[str, Any]:
    """Train the stage `spec` describes on the rows in `train_rows_path` (JSONL, rendered or records)
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
    _quiet_environment()
    from .distributed import bind_device, world_size

    train = spec.train
    if world_size() != train.world_size:
        raise RecipeError(f"stage {spec.stage}: running in {world_size()} processes but train.world_size is "
                          f"{train.world_size}; set it with --num-procs so batch_size divides correctly")
    bind_device()
    with _process_state(single_process_group=bool(train.deepspeed) and "RANK" not in os.environ):
        return _train(spec, train_rows_path, out_dir, init_from=init_from, ewc_state=ewc_state,
                      resume=resume, trust=trust)


def _train(spec: StageSpec, train_rows_path, out_dir, *, init_from, ewc_state, resume, trust):
    from . import loading
    from .batch import resolve
    from .distributed import deepspeed_config
    from .ewc import EWC_FILE, EwcState, consolidate, estimate_fisher
    from .rows import dataset, pairs
    from .sft_config import check_kernels, describe, precision, to_sft_config

    out_dir = Path(out_dir)
    checkpoints = out_dir / "checkpoints"
    is_main = int(os.environ.get("RANK", "0")) == 0

    anchor = None
    if spec.ewc is not None:
        path = ewc_state or (Path(init_from) / EWC_FILE if init_from else None)
        if path is None or not Path(path).is_file():
            raise RecipeError(f"stage {spec.stage} has ewc: but no earlier stage's Fisher was found "
                              f"({path or 'no init_from'}); ewc needs a stage to start from")
        anchor = EwcState.load(path)

    last = _last_checkpoint(checkpoints, clean=is_main) if resume else None
    if not resume and is_main and checkpoints.exists():
        shutil.rmtree(checkpoints)

    check_kernels(spec.train)   # before minutes of model loading
    net, tokenizer, peft_config = loading.for_training(spec, init_from, trust=trust)
    rows = pairs(train_rows_path, spec, tokenizer)
    if not rows:
        raise RecipeError(f"stage {spec.stage}: no training rows in {train_rows_path}")
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
    trainer = _trainer_class(spec, anchor is not None)(**kwargs, **({"ewc_state": anchor} if anchor is not None else {}))
    _quiet_progress(trainer)
    if ds_config is not None:
        # Trainer gives Accelerate an accumulation of 1 (it counts micro batches itself) while DeepSpeed's
        # engine must count them too; Accelerate would warn about the mismatch and then take DeepSpeed's
        # value. Giving it that value up front is the same state, without the warning.
        trainer.accelerator.gradient_accumulation_steps = ds_config["gradient_accumulation_steps"]

    tokens_before = _tokens_seen(last)
    start = time.perf_counter()
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

    tokens = int(trainer.state.num_input_tokens_seen)
    metrics = {
        "train_loss": result.training_loss,
        "steps": trainer.state.global_step,
        "tokens": tokens,
        "tokens_per_second": (tokens - tokens_before) / seconds if seconds > 0 else 0.0,
        "seconds": seconds,
        "resumed_from": int(CHECKPOINT.match(last.name).group(1)) if last else 0,
    }
    if is_main:
        (out_dir / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


@contextmanager
def _process_state(*, single_process_group: bool):
    """Process-wide settings for one training call, undone after it (later stages and evaluation run
    in the same process)."""
    import torch

    # cuDNN's attention builds an execution plan for every new sequence shape (hundreds of ms of CPU),
    # and a training batch's shape changes with every step, so that cost never stops. Measured on an
    # H200 (bench/gpu_throughput.py, the liger variant): 0.536 s per optimizer step with it, 0.234 s
    # without; the flash and memory-efficient kernels take over, with the same loss.
    cudnn_sdp = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(False)
    try:
        with _deepspeed_state(single_process_group=single_process_group):
            yield
    finally:
        torch.backends.cuda.enable_cudnn_sdp(cudnn_sdp)


@contextmanager
def _deepspeed_state(*, single_process_group: bool):
    """DeepSpeed outside a launcher needs a process group of one (ensure_dist_env). Accelerate and
    transformers keep DeepSpeed in process-wide state (singletons, environment variables), so a
    later stage in this process would silently train with DeepSpeed too: undo all of it after."""
    if not single_process_group:
        yield
        return
    from .distributed import ensure_dist_env

    env = dict(os.environ)
    ensure_dist_env()
    try:
        yield
    finally:
        import deepspeed.comm
        import torch.distributed as dist
        from accelerate.state import AcceleratorState, GradientState
        from transformers.integrations.deepspeed import unset_hf_deepspeed_config

        # the finished engine sits in reference cycles; collected after the group is gone, DeepSpeed's
        # destructors raise "backend not set" (an unraisable error at some later, random point)
        gc.collect()
        if dist.is_initialized():
            deepspeed.comm.destroy_process_group()   # also drops DeepSpeed's references to the group
        # newer DeepSpeed also forgets its clone of the world group there; 0.18 (our floor) keeps it, and the
        # next engine in this process fails on a group that is no longer registered
        import deepspeed.utils.groups as ds_groups
        ds_groups._WORLD_GROUP = None
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        unset_hf_deepspeed_config()
        os.environ.clear()
        os.environ.update(env)


def _last_checkpoint(folder: Path, *, clean: bool) -> Path | None:
    """The newest checkpoint that was completely written. Trainer writes trainer_state.json last,
    so a directory without it was cut off by a crash mid-save: removed (by the main process) so
    that it is neither resumed from nor counted by save_total_limit."""
    found = sorted(((int(m.group(1)), p) for p in folder.glob("checkpoint-*")
                    if (m := CHECKPOINT.match(p.name)) and p.is_dir()), reverse=True)
    for _, path in found:
        if (path / "trainer_state.json").is_file():
            return path
        if clean:
            shutil.rmtree(path, ignore_errors=True)
    return None


def _trainer_class(spec: StageSpec, ewc: bool) -> type:
    """SFTTrainer, with EWC's penalty and/or the model's own loss (trainable token rows wrap the LM head)."""
    from trl import SFTTrainer

    bases = []
    if ewc:
        from .ewc_trainer import EwcTrainer
        bases.append(EwcTrainer)
    if spec.model.adapter.wraps_lm_head:
        from .plain_head_trainer import PlainHeadSFTTrainer
        bases.append(PlainHeadSFTTrainer)
    if len(bases) < 2:
        return bases[0] if bases else SFTTrainer
    return type("EwcPlainHeadSFTTrainer", tuple(bases), {})


def _tokens_seen(checkpoint: Path | None) -> int:
    if checkpoint is None:
        return 0
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return int(state.get("num_input_tokens_seen", 0))


def _quiet_environment() -> None:
    # No telemetry pings from TRL/hub (runs are often offline), no tokenizer thread warnings, and
    # DeepSpeed (imported by transformers whether used or not) told it is on CPU instead of
    # warning while it guesses.
    import torch

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def _quiet_progress(trainer) -> None:
    """Trainer prints every log as a dict when tqdm is off; a run log wants a short line now and then."""
    from transformers.trainer_callback import PrinterCallback, TrainerCallback

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            every = max(1, state.max_steps // 20)
            if state.is_world_process_zero and logs and "loss" in logs and (
                    state.global_step % every == 0 or state.global_step == state.max_steps):
                print(f"    step {state.global_step}/{state.max_steps}  loss {float(logs['loss']):.4f}  "
                      f"lr {float(logs.get('learning_rate', 0)):.3g}", flush=True)

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(Progress())
