"""Train a meta recipe: FOMAML on the training tasks, and the multi-task SFT control on the same
tasks' rows with the same number of optimizer steps. Output folders as run_sft's (checkpoints/,
final/, log_history.json, metrics.json).

Each task folder holds the split step's support.jsonl and query.jsonl (records, rendered here with
the recipe's template). Meta-training runs in one process here (train.world_size 1); FOMAMLTrainer
itself also runs under DDP and DeepSpeed ZeRO-1/2 (tests/test_fomaml_trainer.py)."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from ..errors import RecipeError
from .spec import StageSpec


def train_meta(spec: StageSpec, tasks: list[tuple[str, Path]], out_dir: str | Path, *,
               resume: bool = True, trust: bool = False) -> dict[str, Any]:
    """FOMAML on `tasks` ((name, folder) pairs) into out_dir."""
    from .distributed import deepspeed_config, world_size
    from .run_sft import _process_state, _quiet_environment

    _quiet_environment()
    if world_size() != 1:
        raise RecipeError("meta-training runs in one process in this version; drop --num-procs/--launcher")
    from .sft_config import meta_spec
    train = meta_spec(spec, 1).train
    ds_config = deepspeed_config(train.deepspeed, train, spec.base_dir) if train.deepspeed else None
    with _process_state(single_process_group=ds_config is not None):
        return _train_meta(spec, tasks, Path(out_dir), resume=resume, trust=trust, ds_config=ds_config)


def _train_meta(spec: StageSpec, tasks, out_dir: Path, *, resume, trust, ds_config):
    import shutil

    from . import loading
    from .fomaml_trainer import FOMAMLTrainer
    from .meta_data import MetaDataset, TaskRows
    from .rows import pairs
    from .run_sft import CHECKPOINT, _last_checkpoint, _quiet_progress
    from .sft_config import to_fomaml_config

    checkpoints = out_dir / "checkpoints"
    last = _last_checkpoint(checkpoints, clean=True) if resume else None
    if not resume and checkpoints.exists():
        shutil.rmtree(checkpoints)
    net, tok, peft_config = loading.for_training(spec, None, trust=trust)
    rows = [TaskRows(name, pairs(d / "support.jsonl", spec, tok), pairs(d / "query.jsonl", spec, tok))
            for name, d in tasks]
    data = MetaDataset(rows, steps=spec.total_steps, meta_batch_size=spec.outer.meta_batch_size, slots=1,
                       inner_steps=spec.inner.steps, inner_batch_size=spec.inner.batch_size,
                       query_batch_size=spec.outer.query_batch_size, seed=spec.seed, pad_id=_pad_id(tok))
    args = to_fomaml_config(spec, checkpoints, resume=last, deepspeed_config=ds_config)
    trainer = FOMAMLTrainer(model=net, args=args, train_dataset=data, processing_class=tok, peft_config=peft_config)
    _quiet_progress(trainer)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    seconds = time.perf_counter() - start
    trainer.save_model(str(out_dir / "final"))
    history = trainer.state.log_history
    metrics = {"train_loss": result.training_loss, "steps": trainer.state.global_step, "seconds": seconds,
               "tasks": len(rows), "resumed_from": int(CHECKPOINT.match(last.name).group(1)) if last else 0}
    for key in ("support_loss_first", "support_loss_last", "query_loss", "adaptation_gain"):
        vals = [h[key] for h in history if key in h]
        if vals:
            metrics[f"{key}_first_logged"], metrics[f"{key}_last_logged"] = vals[0], vals[-1]
    (out_dir / "log_history.json").write_text(json.dumps(history, indent=1))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def control_spec(spec: StageSpec) -> StageSpec:
    """The SFT control: meta.total_steps optimizer steps at the outer learning rate, each on as many
    rows as one meta-step touches (meta_batch_size x (inner steps x inner batch + query batch)), in
    micro-batches of the inner batch size: the same steps, rows and compute as FOMAML."""
    inner, outer = spec.inner, spec.outer
    rows = outer.meta_batch_size * (inner.steps * inner.batch_size + outer.query_batch_size)
    micro = inner.batch_size
    while rows % micro:
        micro -= 1
    return dataclasses.replace(spec, stage="control", ewc=None, fisher_for=None, train=dataclasses.replace(
        spec.train, max_steps=spec.total_steps, learning_rate=outer.learning_rate, micro_batch_size=micro,
        batch_size=rows, world_size=1, packing=False))


def train_control(spec: StageSpec, tasks: list[tuple[str, Path]], out_dir: str | Path, *,
                  trust: bool = False) -> dict[str, Any]:
    """Multi-task SFT on the support and query rows of `tasks`, through run_sft."""
    from ..data.io import read_jsonl, write_jsonl
    from .run_sft import train_stage

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [r for _, d in tasks for part in ("support", "query") for r in read_jsonl(d / f"{part}.jsonl")]
    write_jsonl(out_dir / "rows.jsonl", rows)
    return train_stage(control_spec(spec), out_dir / "rows.jsonl", out_dir, resume=True, trust=trust)


def _pad_id(tok) -> int:
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if pad is None:
        raise RecipeError("the tokenizer has neither a pad nor an eos token to pad meta-batches with")
    return pad
