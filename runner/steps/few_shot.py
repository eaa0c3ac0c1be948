"""eval.few_shot: the starting model, the SFT control and FOMAML adapted to each held-out task with
k shots (several seeds), loss on the task's whole test file before and after (train/few_shot.py), on
the rows render.tasks rendered."""
from __future__ import annotations

import json

from .base import Declared, StepId, builtin_weights, model_files

VERSION = 2


def declare(recipe, step: StepId) -> Declared:
    m = recipe.meta
    models = [StepId("meta_train", stage="meta")] + ([StepId("meta_train", stage="control")]
                                                     if m.few_shot_eval.sft_control else [])
    return Declared({"few_shot_eval": m.few_shot_eval, "inner": m.inner, "model": recipe.model,
                     "template": recipe.template, "seed": recipe.seed, **builtin_weights(recipe)},
                    inputs=(StepId("tasks"), StepId("render_tasks"), StepId("split"), *models), files=model_files(recipe, weights=True))


def run(ctx) -> dict:
    from ..train.few_shot import evaluate, summarise
    from ..train.spec import FewShotSpec

    plan = json.loads((ctx.input(StepId("tasks")) / "plan.json").read_text(encoding="utf-8"))
    models = {"start": None}
    control = StepId("meta_train", stage="control")
    if control in ctx.step.inputs:
        models["sft_control"] = ctx.input(control) / "final"
    models["fomaml"] = ctx.input(StepId("meta_train", stage="meta")) / "final"
    spec = FewShotSpec.of(ctx.params, ctx.base_dir)
    rows = evaluate(spec, models, plan["held_out"], ctx.input(StepId("render_tasks")) / "tasks",
                    ctx.input(StepId("split")) / "tasks", trust=ctx.options.trust, log=ctx.log)
    summary = summarise(rows)
    for line in summary["verdict"]:
        ctx.log(line)
    (ctx.out / "few_shot.json").write_text(json.dumps({"rows": rows, **summary}, indent=1) + "\n")
    return {"few_shot": rows, "few_shot_summary": summary}
