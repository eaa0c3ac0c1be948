"""train.meta (FOMAML) and train.control (multi-task SFT, the comparison) of a meta recipe: both
on the rendered rows (render.tasks) of the training tasks of the `tasks` step (the held-out tasks are
never trained on), with the fomaml and sft trainers (runner/trainers), here or under --launcher.
Checkpoints in ctx.partial (resumable); the final adapter is the artifact, published as
runs/<recipe>/<name>/final."""
from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..recipe.model import DEEPSPEED_PRESETS
from .base import Declared, Kind, StepId, builtin_weights, model_files
from .result import Result, metrics_line

VERSION = 2


@dataclass(frozen=True)
class MetaTrainResult(Result):
    metrics: Mapping[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)   # step, loss, support/query losses, adaptation gain

    @classmethod
    def defaults(cls) -> dict:
        return {"meta_training": {}}

    def contribute(self, step, record, report: dict, run_dir: Path) -> None:
        if record is not None:
            report["meta_training"][step.id.stage] = dict(self.metrics)

    @classmethod
    def markdown_tail(cls, report: dict, run_dir: Path) -> list[str]:
        lines: list[str] = []
        for name, tm in (report.get("meta_training") or {}).items():
            lines += ["", f"## Meta-recipe training: {name}", "", metrics_line("", tm)]
            png = run_dir / f"loss_{name}.png"
            lines += ["", f"![loss]({png.name})"] if png.exists() else []
        return lines


# a meta recipe's two trainings: train.meta (FOMAML) and train.control (multi-task SFT); the tail is a role
KIND = Kind("train", per="role", trains=True, result=MetaTrainResult)


def steps(recipe) -> list[StepId]:
    if not recipe.meta:
        return []
    control = [StepId("meta_train", stage="control")] if recipe.meta.few_shot_eval.sft_control else []
    return [StepId("meta_train", stage="meta")] + control


def declare(recipe, step: StepId) -> Declared:
    """step.stage is the role: "meta" (FOMAML) or "control" (multi-task SFT); both read the same settings."""
    m, train = recipe.meta, recipe.stages[0].train
    files = ((train.deepspeed,) if train.deepspeed and train.deepspeed not in DEEPSPEED_PRESETS else ()) \
        + model_files(recipe, weights=True)
    # the control never runs the inner loop: its learning rate is not the control's parameter
    inner = m.inner if step.stage == "meta" else dataclasses.replace(m.inner, learning_rate=None)
    return Declared({"inner": inner, "outer": m.outer, "total_steps": m.total_steps,
                     "train": dataclasses.replace(train, report_to=()), "model": recipe.model,
                     "template": recipe.template, "seed": recipe.seed,
                     "save_total_limit": recipe.output.save_total_limit, "role": step.stage,
                     **builtin_weights(recipe)},
                    inputs=(StepId("tasks"), StepId("render_tasks")), files=files,
                    runtime={"report_to": train.report_to})   # loggers change no artifact (see train.py)


def _tasks(ctx) -> list[tuple[str, str]]:
    plan = json.loads((ctx.input(StepId("tasks")) / "plan.json").read_text(encoding="utf-8"))
    rendered = ctx.input(StepId("render_tasks")) / "tasks"
    return [(t["name"], str(rendered / t["dir"])) for t in plan["train"]]


def _control_rows(tasks: list[tuple[str, str]], path) -> str:
    """The control's rows: every training task's support and query rows, in the plan's order."""
    from pathlib import Path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for _, d in tasks:
            for part in ("support", "query"):
                f.write((Path(d) / f"{part}.jsonl").read_bytes())
    return str(path)


def _train(ctx) -> dict:
    from ..trainers import run
    from ..trainers.fomaml.fomaml_config import FOMAMLSpec, control_spec

    p, o = ctx.params, ctx.options
    spec = FOMAMLSpec.of(p, ctx.base_dir, stage=p["role"],
                         train=dataclasses.replace(p["train"], report_to=tuple(ctx.step.runtime["report_to"])))
    launch = dict(launcher=o.launcher, num_procs=o.num_procs, hostfile=o.hostfile, log=ctx.log, secrets=ctx.secrets)
    job = {"out_dir": str(ctx.partial), "resume": True, "trust": o.trust}
    if p["role"] == "meta":
        return run("fomaml", spec, {"tasks": _tasks(ctx), **job}, **launch)
    control = control_spec(spec, world_size=o.num_procs if o.launcher != "none" else 1)
    rows = _control_rows(_tasks(ctx), ctx.partial / "rows.jsonl")
    return run("sft", control, {"train_rows": rows, **job}, **launch)


def run(ctx) -> dict:
    ctx.partial.mkdir(parents=True, exist_ok=True)
    metrics = _train(ctx)
    shutil.move(str(ctx.partial / "final"), ctx.out / "final")
    for name in ("log_history.json", "metrics.json"):
        if (ctx.partial / name).exists():
            shutil.copy(ctx.partial / name, ctx.out / name)
    history = json.loads((ctx.out / "log_history.json").read_text())
    keep = ("step", "loss", "support_loss_first", "support_loss_last", "query_loss", "adaptation_gain")
    ctx.log(f"{ctx.step.name}: train loss {metrics.get('train_loss', float('nan')):.4f} after {metrics.get('steps')} steps")
    return {"metrics": metrics, "history": [{k: h[k] for k in keep if k in h} for h in history if "loss" in h]}


def publish(step, artifact, run_dir, result) -> None:
    from ..paths import publish_tree, safe_name
    from ..train.plot import plot_losses
    name = safe_name(step.id.stage)   # the role: meta or control
    publish_tree(run_dir, f"{name}/final", artifact / "final")
    plot_losses(run_dir, name, result.history)
