"""train.<stage>: SFT (+ LoRA, + EWC, + DeepSpeed) on the stage's rendered rows, starting from the
previous stage's final weights (or model.init_from). Checkpoints go to ctx.partial, which survives a
kill -9, so running again resumes at the last saved step; the finished adapter is the artifact."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from ..errors import RecipeError

VERSION = 1


def _start(ctx) -> Path | None:
    prev = [i for i in ctx.step.inputs if i.startswith("train.")]
    if prev:
        return ctx.input(prev[0]) / "final"
    init = ctx.recipe.model.init_from
    if init is None:
        return None
    path = ctx.recipe.path(init)
    if not path.is_dir():
        raise RecipeError(f"model.init_from: no checkpoint at {init} (resolved to {path}); run the recipe that "
                          "produces it first, or fix the path (relative to the recipe file)")
    return path


def _check_loggers(report_to) -> None:
    import importlib.util
    for name in report_to:
        if importlib.util.find_spec(name) is None and not (name == "tensorboard" and importlib.util.find_spec("tensorboardX")):
            raise RecipeError(f"train.report_to: {name} is not installed; `pip install {name}` or remove it "
                              "from report_to (the run report always gets the losses)")


def _train(ctx, stage, rows: Path, init_from: Path | None) -> dict:
    if ctx.options.launcher != "none":
        from ..train.launch import launch
        from ..train.worker import write_spec
        spec = write_spec(ctx.partial / "spec.json", ctx.recipe, stage, rows, ctx.partial, init_from=init_from,
                          resume=True, trust=ctx.options.trust)
        return launch(spec, launcher=ctx.options.launcher, num_procs=ctx.options.num_procs,
                      hostfile=ctx.options.hostfile, log=ctx.log)
    from ..train.run_sft import train_stage
    return train_stage(ctx.recipe, stage, rows, ctx.partial, init_from=init_from, resume=True,
                       trust=ctx.options.trust)


def run(ctx) -> dict:
    stage = ctx.recipe.stage(ctx.step.stage)
    _check_loggers(stage.train.report_to)
    if ctx.step.params["ewc"] is None and stage.ewc is not None:
        stage = dataclasses.replace(stage, ewc=None)   # the compiler turned it off (see the plan's notes)
    rows = ctx.input(f"render.{stage.name}") / "train.jsonl"
    init_from = _start(ctx)
    ctx.partial.mkdir(parents=True, exist_ok=True)
    # tensorboard logs go next to the run report, not under the checkpoints (removed once the stage is
    # done); one folder per stage unless the user chose one
    tb = "tensorboard" in stage.train.report_to and "TENSORBOARD_LOGGING_DIR" not in os.environ
    if tb:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str((ctx.run_dir / stage.name / "tensorboard").resolve())
    try:
        metrics = _train(ctx, stage, rows, init_from)
    finally:
        if tb:
            del os.environ["TENSORBOARD_LOGGING_DIR"]
    if metrics.get("resumed_from"):
        ctx.log(f"resumed from checkpoint step {metrics['resumed_from']}")
    shutil.move(str(ctx.partial / "final"), ctx.out / "final")
    for name in ("log_history.json", "metrics.json"):
        if (ctx.partial / name).exists():
            shutil.copy(ctx.partial / name, ctx.out / name)
    history = json.loads((ctx.out / "log_history.json").read_text()) if (ctx.out / "log_history.json").exists() else []
    ctx.log(f"train loss {metrics.get('train_loss', float('nan')):.4f} after {metrics.get('steps')} steps, "
            f"{metrics.get('tokens_per_second', 0):,.0f} tokens/s")
    return {"metrics": metrics, "history": [{k: h[k] for k in ("step", "loss") if k in h} for h in history if "loss" in h]}


def publish(step, artifact: Path, run_dir: Path, stats: dict) -> None:
    """What the user (and a later recipe's model.init_from) points at: runs/<recipe>/<stage>/final, the
    data fingerprint that trained it, and the loss curve. Also for a cached step, so every run dir is whole."""
    from ..train.plot import plot_losses
    from ..paths import under
    stage_dir = under(run_dir, step.stage)
    if (stage_dir / "final").exists():
        shutil.rmtree(stage_dir / "final")
    shutil.copytree(artifact / "final", stage_dir / "final")
    components = json.loads((artifact / "manifest.json").read_text())["components"]
    (stage_dir / "data_fingerprint.txt").write_text(components["inputs"][f"render.{step.stage}"] + "\n")
    plot_losses(run_dir, step.stage, stats.get("history", []))
