"""DeepSpeed configs and the process-group environment.

`train.deepspeed` names a shipped preset (deepspeed/<name>.json) or a JSON file. The presets leave
every value the recipe decides as "auto", and `deepspeed_config` fills them from the recipe, so the
batch sizes, accumulation, clipping and precision can never disagree with `train:`; a user file
that sets one of them to something else is refused. Model-size dependent "auto"s (bucket sizes)
are left for transformers' integration to fill from the model config.

DeepSpeed on a machine without CUDA: it picks its CPU accelerator (the drivers set DS_ACCELERATOR=cpu
to say so instead of letting it warn while guessing), communicates over gloo (oneCCL is not
installed), and on first use JIT-builds its shared-memory all-reduce op (deepspeed_shm_comm,
about 30 s, needs ninja; cached under ~/.cache/torch_extensions or $TORCH_EXTENSIONS_DIR).
All five presets train there (checked with LoRA on builtin:tiny); the offload presets also JIT-build
DeepSpeedCPUAdam on first use (about 80 s, cached the same way).
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from ..errors import RecipeError
from ..recipe import model
from .devices import precision

PRESETS, PRESET_DIR = model.DEEPSPEED_PRESETS, model.DEEPSPEED_PRESET_DIR


def deepspeed_config(name_or_path: str, train: model.Train, recipe_dir: Path) -> dict[str, Any]:
    """The DeepSpeed config dict for `train.deepspeed`, with the recipe's values filled in."""
    if name_or_path in PRESETS:
        path = PRESET_DIR / f"{name_or_path}.json"
    else:
        path = (Path(recipe_dir) / name_or_path).resolve()
        if not path.is_file():
            raise RecipeError(f"train.deepspeed: {name_or_path!r} is neither a preset ({', '.join(PRESETS)}) "
                              f"nor a JSON file (looked for {path})")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RecipeError(f"train.deepspeed: {path} is not valid JSON: {e}") from None

    prec = precision(train)
    recipe_values = {
        ("train_micro_batch_size_per_gpu",): train.micro_batch_size,
        ("gradient_accumulation_steps",): train.grad_accum,
        ("train_batch_size",): train.batch_size,
        ("gradient_clipping",): train.max_grad_norm,
        ("bf16", "enabled"): prec == "bf16",
        ("fp16", "enabled"): prec == "fp16",
    }
    for keys, value in recipe_values.items():
        *parents, leaf = keys
        node = config
        for k in parents:
            node = node.setdefault(k, {})
        if node.get(leaf, "auto") == "auto":
            node[leaf] = value
        elif node[leaf] != value:
            raise RecipeError(f"train.deepspeed: {path.name} sets {'.'.join(keys)} = {node[leaf]!r} but the "
                              f"recipe gives {value!r}; set it to \"auto\" (filled from train:) or change train:")
    return config


def ensure_dist_env() -> None:
    """DeepSpeed always initialises a process group. Launchers (deepspeed, torchrun) set its
    environment; a plain `python` run gets a single-process group on a free local port."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK=os.environ.get("LOCAL_RANK", "0"))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))


def bind_device() -> None:
    """On CUDA, pin this process to the GPU its launcher gave it (LOCAL_RANK), and with several
    processes create the NCCL group bound to that device (as DeepSpeed itself would; Accelerate and
    DeepSpeed reuse an existing group), so collectives never guess the device. A single-process
    group stays unbound, as DeepSpeed leaves it (binding makes every later new_group an
    ncclCommSplit with no peer): torch's barrier would then warn that it uses "the device under
    current context", which set_device has just made the right one, so that warning is dropped."""
    import warnings

    import torch

    if not torch.cuda.is_available():
        return
    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    warnings.filterwarnings("ignore", message=r"barrier\(\): using the device under current context")
    import torch.distributed as dist
    if world_size() > 1 and not dist.is_initialized():
        dist.init_process_group("nccl", device_id=torch.device("cuda", local))


def world_size() -> int:
    """Processes in this run, as the launcher says (1 without one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def free_port(everywhere: bool = False) -> int:
    """A port free on this machine's loopback, or on all its addresses (one other nodes will connect to)."""
    with socket.socket() as s:
        s.bind(("" if everywhere else "127.0.0.1", 0))
        return s.getsockname()[1]


def shutdown() -> None:
    """End this process's part of a multi-process run: destroy the process group before the interpreter
    exits. A gloo group left to interpreter shutdown can abort the process after training has finished
    (`terminate called without an active exception`, exit -6), which the launcher reports as a failure."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
