"""The FOMAML trainer's driver: FOMAMLSpec + the training tasks' rendered rows -> a meta-trained adapter.
Output folders as the SFT driver's (checkpoints/, final/, log_history.json, metrics.json). The SFT
control of a meta recipe is the SFT trainer, on the spec fomaml_config.control_spec maps.

Each task folder holds the render.tasks step's support.jsonl and query.jsonl (rendered rows). It runs
in this process or in each of N launched processes (runner/train/worker.py): a meta-step's draw depends
only on the seed and the step (meta_data.py), each process takes its share of the meta-batch and DDP
(or DeepSpeed ZeRO-1/2) averages the gradients, so N processes train what one does."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ...errors import RecipeError
from ...train.process import (checkpoint_step, last_checkpoint, process_state, quiet_environment,
                              quiet_progress)
from .fomaml_config import FOMAMLSpec, meta_spec

Spec = FOMAMLSpec   # what the worker rebuilds from a spec file


def train(spec: FOMAMLSpec, tasks: list[tuple[str, str | Path]], out_dir: str | Path, *,
          resume: bool = True, trust: bool = False) -> dict[str, Any]:
    """FOMAML on `tasks` ((name, folder) pairs) into out_dir. resume: continue from the last complete
    checkpoint in out_dir/checkpoints; False starts over."""
    from ...train.distributed import bind_device, deepspeed_config, world_size

    with quiet_environment():
        procs = world_size()
        if spec.outer.meta_batch_size % procs:
            raise RecipeError(f"meta.outer.meta_batch_size {spec.outer.meta_batch_size} is not a multiple of the "
                              f"{procs} processes; choose a --num-procs that divides it")
        train_ = meta_spec(spec, procs).train
        ds_config = deepspeed_config(train_.deepspeed, train_, spec.base_dir) if train_.deepspeed else None
        bind_device()
        with process_state(single_process_group=ds_config is not None and "RANK" not in os.environ):
            return _train(spec, [(n, Path(d)) for n, d in tasks], Path(out_dir), procs=procs, resume=resume,
                          trust=trust, ds_config=ds_config)


def _train(spec: FOMAMLSpec, tasks, out_dir: Path, *, procs, resume, trust, ds_config):
    from ...train import loading
    from ...train.meta_data import MetaDataset, TaskRows, pad_id
    from ...train.rows import pairs
    from .fomaml_config import to_fomaml_config
    from .fomaml_trainer import FOMAMLTrainer

    is_main = int(os.environ.get("RANK", "0")) == 0
    checkpoints = out_dir / "checkpoints"
    last = last_checkpoint(checkpoints, clean=is_main) if resume else None
    if not resume and is_main and checkpoints.exists():
        shutil.rmtree(checkpoints)
    net, tok, peft_config = loading.for_training(spec, None, trust=trust)
    rows = [TaskRows(name, pairs(d / "support.jsonl"), pairs(d / "query.jsonl")) for name, d in tasks]
    data = MetaDataset(rows, steps=spec.total_steps, meta_batch_size=spec.outer.meta_batch_size, slots=procs,
                       inner_steps=spec.inner.steps, inner_batch_size=spec.inner.batch_size,
                       query_batch_size=spec.outer.query_batch_size, seed=spec.seed, pad_id=pad_id(tok))
    args = to_fomaml_config(spec, checkpoints, world_size=procs, resume=last, deepspeed_config=ds_config)
    # The adapter's random init happens inside the trainer, before Trainer seeds, and torch seeds every new
    # process at random: seed here (as the SFT driver does), or each run (and each process) starts elsewhere
    from transformers import set_seed
    set_seed(spec.seed)
    trainer = FOMAMLTrainer(model=net, args=args, train_dataset=data, processing_class=tok, peft_config=peft_config)
    quiet_progress(trainer)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    seconds = time.perf_counter() - start
    trainer.save_model(str(out_dir / "final"))
    history = trainer.state.log_history
    metrics = {"train_loss": result.training_loss, "steps": trainer.state.global_step, "seconds": seconds,
               "tasks": len(rows), "resumed_from": checkpoint_step(last)}
    for key in ("support_loss_first", "support_loss_last", "query_loss", "adaptation_gain"):
        vals = [h[key] for h in history if key in h]
        if vals:
            metrics[f"{key}_first_logged"], metrics[f"{key}_last_logged"] = vals[0], vals[-1]
    trainer.accelerator.wait_for_everyone()
    if is_main:
        (out_dir / "log_history.json").write_text(json.dumps(history, indent=1))
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics
