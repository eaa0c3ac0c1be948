"""What every trainer's driver does around `Trainer.train`, whichever trainer it is: the process-wide
state of one training call (undone after it), the resumable checkpoints, and a quiet run log."""
from __future__ import annotations

import gc
import json
import os
import re
import shutil
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


_SMALLEST_SUBNORMAL = struct.unpack("<d", struct.pack("<Q", 1))[0]


def subnormals_flushed() -> bool:
    """Whether this thread computes subnormal floats as zero (x86 FTZ/DAZ): a subnormal then equals 0.0."""
    return _SMALLEST_SUBNORMAL == 0.0


@contextmanager
def flushing_subnormals():
    """Subnormal floats flushed to zero while a model trains or evaluates, and the thread's float mode as
    it was after.

    Tiny activations underflow to subnormals, which x86 CPUs compute ~100x slower: measured 1.7 s vs 18 ms
    per forward+backward of builtin:tiny after a stage of training. Flushing them changes no result that
    matters (they are < 1e-38) and is a no-op for CUDA kernels. The mode outlives the call, so it is put
    back: a run in the caller's process (the api, a notebook, the test suite) must not leave its float
    arithmetic non-IEEE (hypothesis, for one, refuses to draw floats then)."""
    import torch

    before = subnormals_flushed()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if not before:
            torch.set_flush_denormal(False)


@contextmanager
def process_state(*, single_process_group: bool):
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
        with _deepspeed_state(single_process_group=single_process_group), flushing_subnormals():
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


def last_checkpoint(folder: Path, *, clean: bool) -> Path | None:
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


def checkpoint_step(checkpoint: Path | None) -> int:
    """The step a checkpoint was saved at; 0 for none (a fresh start)."""
    return int(CHECKPOINT.match(checkpoint.name).group(1)) if checkpoint else 0


def tokens_seen(checkpoint: Path | None) -> int:
    if checkpoint is None:
        return 0
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return int(state.get("num_input_tokens_seen", 0))


@contextmanager
def quiet_environment() -> Iterator[None]:
    """For one training call (and the processes it starts), put back after it: an in-process caller's later
    work must not inherit a training run's settings."""
    # No telemetry pings from TRL/hub (runs are often offline), no tokenizer thread warnings, and
    # DeepSpeed (imported by transformers whether used or not) told it is on CPU instead of
    # warning while it guesses.
    import torch

    from ..environment import environment_kept

    with environment_kept("HF_HUB_DISABLE_TELEMETRY", "TOKENIZERS_PARALLELISM", "DS_ACCELERATOR", "OMP_NUM_THREADS"):
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
            # accelerate sets the CPU threads itself when this is unset, and warns on every run that it did;
            # say what torch already uses (what accelerate would pick for one process)
            os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
        yield


def quiet_progress(trainer) -> None:
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
