"""train.<stage>: SFT (+ LoRA, + EWC, + DeepSpeed) on the stage's rendered rows, starting from the
previous stage's final weights (or model.init_from). Checkpoints go to ctx.partial, which survives a
kill -9, so running again resumes at the last saved step; the finished adapter is the artifact.

This module decides, once, where a stage starts (start), whether its EWC is on, and whether it must
leave a Fisher behind for a later stage (fisher_for); the SFT trainer gets those values in its
SFTSpec (runner/trainers/sft) and never recomputes them."""
from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import RecipeError
from ..recipe.model import DEEPSPEED_PRESETS
from .base import Declared, Kind, StepId, builtin_weights, model_files
from .result import Result, metrics_line, stage_entry

VERSION = 1


@dataclass(frozen=True)
class TrainResult(Result):
    metrics: Mapping[str, Any] = field(default_factory=dict)   # train_loss, steps, tokens, tokens_per_second, ...
    history: list[dict[str, Any]] = field(default_factory=list)   # logged (step, loss)

    def contribute(self, step, record, report: dict, run_dir: Path) -> None:
        entry = stage_entry(report, step.stage)
        entry.setdefault("metrics", {"train": {}, "eval": {}})["train"] = dict(self.metrics)
        entry["checkpoint"] = str(run_dir / step.stage / "final") if record is not None else None

    @classmethod
    def stage_markdown(cls, entry: dict, run_dir: Path) -> list[str]:
        tm = (entry.get("metrics") or {}).get("train")
        lines = ["", metrics_line("train: ", tm)] if tm else []
        png = run_dir / f"loss_{entry['name']}.png"
        return lines + (["", f"![loss]({png.name})"] if png.exists() else [])


KIND = Kind("train", per="stage", trains=True, result=TrainResult)


def steps(recipe) -> list[StepId]:
    return [] if recipe.meta else [StepId("train", stage=st.name) for st in recipe.active_stages]


def start(recipe, stage) -> str | None:
    """The active stage `stage` starts from: its `from:`, else the previous active stage. None when it
    starts from model.base, or from model.init_from (a `from:` naming a skipped stage: a corrective rerun)."""
    active = [s.name for s in recipe.active_stages]
    i = active.index(stage.name)
    wanted = stage.from_ if stage.from_ is not None else (active[i - 1] if i else None)
    return wanted if wanted in active[:i] else None


def fisher_for(recipe, stage):
    """What of the `ewc:` of a later stage that starts from `stage` shapes the Fisher `stage` leaves behind
    (whether, from how many rows, with which decay); not lambda, so a lambda sweep reuses the trained stage."""
    from ..train.spec import Fisher
    ewc = next((s.ewc for s in recipe.active_stages if s.ewc is not None and s.name != stage.name
                and start(recipe, s) == stage.name), None)
    return None if ewc is None else Fisher(fisher_samples=ewc.fisher_samples, gamma=ewc.gamma)


def declare(recipe, step: StepId) -> Declared:
    st = recipe.stage(step.stage)
    begin = start(recipe, st)
    init_from = None if begin else recipe.model.init_from
    # EWC anchors to the stage this one starts from: a stage trained in this run, or a saved one
    # (model.init_from, whose final/ carries ewc_state.safetensors when a later stage asked for it)
    ewc = st.ewc if (begin or init_from) else None
    notes = (f"stage {st.name}: ewc needs an earlier stage's weights and Fisher, and this run starts from the "
             "base model; EWC is off for this stage",) if st.ewc is not None and ewc is None else ()
    t = st.train
    files = ((t.deepspeed,) if t.deepspeed and t.deepspeed not in DEEPSPEED_PRESETS else ()) \
        + ((init_from,) if init_from else ()) + model_files(recipe, weights=True)
    # Of `output`, only the checkpoints kept matter here (merge is the export's business).
    params = {"train": dataclasses.replace(t, report_to=()), "model": dataclasses.replace(recipe.model, init_from=init_from),
              "template": recipe.template, "ewc": ewc, "fisher_for": fisher_for(recipe, st), "seed": recipe.seed,
              "save_total_limit": recipe.output.save_total_limit, **builtin_weights(recipe)}
    inputs = (StepId("render", stage=st.name),) + ((StepId("train", stage=begin),) if begin else ())
    # report_to only adds loggers: it changes no artifact, so it does not invalidate a trained stage
    return Declared(params, inputs, files, notes, runtime={"report_to": t.report_to})


def _spec(params, runtime, base_dir: Path, stage: str):
    from ..trainers import driver
    # train.trainer names the registry's trainer (runner/trainers), whose spec type takes what it reads
    train = dataclasses.replace(params["train"], report_to=tuple(runtime["report_to"]))
    return driver(train.trainer).Spec.of(params, base_dir, stage=stage, train=train)


def spec(ctx):
    """The spec train.trainer's trainer gets (SFTSpec): the declared parameters, with the loggers back in."""
    return _spec(ctx.params, ctx.step.runtime, ctx.base_dir, ctx.step.stage)


def stage_spec(recipe, stage: str):
    """The spec a run's train.<stage> step would give its trainer (benchmarks train with it)."""
    d = declare(recipe, StepId("train", stage=stage))
    return _spec(d.params, d.runtime, recipe.file.parent, stage)


def _start(ctx) -> Path | None:
    prev = [i for i in ctx.step.inputs if i.kind == "train"]
    if prev:
        return ctx.input(prev[0]) / "final"
    init = ctx.params["model"].init_from
    if init is None:
        return None
    path = ctx.path(init)
    if not path.is_dir():
        raise RecipeError(f"model.init_from: no checkpoint at {init} (resolved to {path}); run the recipe that "
                          "produces it first, or fix the path (relative to the recipe file)")
    return path


def _train(ctx, spec, rows: Path, init_from: Path | None) -> dict:
    from ..trainers import run
    o = ctx.options
    job = {"train_rows": str(rows), "out_dir": str(ctx.partial), "init_from": str(init_from) if init_from else None,
           "resume": True, "trust": o.trust}
    # every trainer of train.<stage> steps takes this job: the stage's rendered rows, where to start from
    return run(spec.train.trainer, spec, job, launcher=o.launcher, num_procs=o.num_procs, hostfile=o.hostfile,
               log=ctx.log, secrets=ctx.secrets)


def run(ctx) -> dict:
    stage = spec(ctx)   # its loggers were checked, and TensorBoard's folder set, by the engine (KIND.trains)
    rows = ctx.input(StepId("render", stage=stage.stage)) / "train.jsonl"
    init_from = _start(ctx)
    ctx.partial.mkdir(parents=True, exist_ok=True)
    metrics = _train(ctx, stage, rows, init_from)
    if metrics.get("resumed_from"):
        ctx.log(f"resumed from checkpoint step {metrics['resumed_from']}")
    shutil.move(str(ctx.partial / "final"), ctx.out / "final")
    for name in ("log_history.json", "metrics.json"):
        if (ctx.partial / name).exists():
            shutil.copy(ctx.partial / name, ctx.out / name)
    history = json.loads((ctx.out / "log_history.json").read_text()) if (ctx.out / "log_history.json").exists() else []
    ctx.log(f"train loss {metrics.get('train_loss', float('nan')):.4f} after {metrics.get('steps')} steps, "
            f"{metrics.get('tokens_per_second', 0):,.0f} tokens/s")
    if "tokens_per_step" in metrics:   # what makes a stage slow (runner/train/stats.py)
        from ..train.stats import line
        ctx.log(line(metrics))
    return {"metrics": metrics, "history": [{k: h[k] for k in ("step", "loss") if k in h} for h in history if "loss" in h]}


def publish(step, artifact: Path, run_dir: Path, result: TrainResult) -> None:
    """What the user (and a later recipe's model.init_from) points at: runs/<recipe>/<stage>/final, the
    data fingerprint that trained it, and the loss curve. Also for a cached step, so every run dir is whole."""
    from ..paths import publish_files, publish_tree
    from ..train.plot import plot_losses
    publish_tree(run_dir, f"{step.stage}/final", artifact / "final")
    components = json.loads((artifact / "manifest.json").read_text())["components"]
    fp = components["inputs"][str(StepId("render", stage=step.stage))]
    publish_files(run_dir, f"{step.stage}/data_fingerprint.txt",
                  {f"{step.stage}/data_fingerprint.txt": (fp + "\n").encode()})
    plot_losses(run_dir, step.stage, result.history)
