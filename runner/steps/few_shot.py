"""eval.few_shot: the starting model, the SFT control and FOMAML adapted to each held-out task with
k shots (several seeds), loss on the task's whole test file before and after (train/few_shot.py)."""
from __future__ import annotations

import json

VERSION = 1


def run(ctx) -> dict:
    from ..train.few_shot import evaluate, summarise

    plan = json.loads((ctx.input("tasks") / "plan.json").read_text(encoding="utf-8"))
    models = {"start": None}
    if "train.control" in ctx.step.inputs:
        models["sft_control"] = ctx.input("train.control") / "final"
    models["fomaml"] = ctx.input("train.meta") / "final"
    rows = evaluate(ctx.recipe, models, plan["held_out"], ctx.input("split") / "tasks", trust=ctx.options.trust,
                    log=ctx.log)
    summary = summarise(rows)
    for line in summary["verdict"]:
        ctx.log(line)
    (ctx.out / "few_shot.json").write_text(json.dumps({"rows": rows, **summary}, indent=1) + "\n")
    return {"few_shot": rows, "few_shot_summary": summary}
