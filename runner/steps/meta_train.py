"""train.meta (FOMAML) and train.control (multi-task SFT, the comparison) of a meta recipe: both
on the training tasks of the `tasks` step (the held-out tasks are never trained on). Checkpoints in
ctx.partial (resumable); the final adapter is the artifact, published as runs/<recipe>/<name>/final."""
from __future__ import annotations

import json
import shutil

VERSION = 1


def _tasks(ctx) -> list:
    plan = json.loads((ctx.input("tasks") / "plan.json").read_text(encoding="utf-8"))
    return [(t["name"], ctx.input("split") / "tasks" / t["dir"]) for t in plan["train"]]


def run(ctx) -> dict:
    from ..errors import RecipeError
    from ..train.run_fomaml import train_control, train_meta

    if ctx.options.launcher != "none":
        raise RecipeError("meta recipes train in one process in this version; run without --launcher")
    ctx.partial.mkdir(parents=True, exist_ok=True)
    if ctx.step.params["role"] == "meta":
        metrics = train_meta(ctx.recipe, _tasks(ctx), ctx.partial, trust=ctx.options.trust)
    else:
        metrics = train_control(ctx.recipe, _tasks(ctx), ctx.partial, trust=ctx.options.trust)
    shutil.move(str(ctx.partial / "final"), ctx.out / "final")
    for name in ("log_history.json", "metrics.json"):
        if (ctx.partial / name).exists():
            shutil.copy(ctx.partial / name, ctx.out / name)
    history = json.loads((ctx.out / "log_history.json").read_text())
    keep = ("step", "loss", "support_loss_first", "support_loss_last", "query_loss", "adaptation_gain")
    ctx.log(f"{ctx.step.name}: train loss {metrics.get('train_loss', float('nan')):.4f} after {metrics.get('steps')} steps")
    return {"metrics": metrics, "history": [{k: h[k] for k in keep if k in h} for h in history if "loss" in h]}


def publish(step, artifact, run_dir, stats) -> None:
    from ..train.plot import plot_losses

    from ..paths import under
    name = step.name.split(".", 1)[1]
    under(run_dir, name)   # the name comes from the recipe: refuse anything that would leave the run dir
    if (run_dir / name / "final").exists():
        shutil.rmtree(run_dir / name / "final")
    shutil.copytree(artifact / "final", run_dir / name / "final")
    plot_losses(run_dir, name, stats.get("history", []))
