"""eval.<stage>: loss/perplexity on the eval rows of every source (one row of the forgetting table),
generation samples and the generation health rates (stop_rate, role_leak_rate), with the stage's
final weights. eval.before: the same for the starting model (model.init_from, else model.base),
before the first stage trains: the row "before", so every report shows what training changed."""
from __future__ import annotations

import json

VERSION = 2

BEFORE = "before"   # the step eval.before and its row in the forgetting table


def run(ctx) -> dict:
    from ..train.evaluate import evaluate_stage
    before = ctx.step.name == f"eval.{BEFORE}"
    render = next(i for i in ctx.step.inputs if i.startswith("render."))
    stage = ctx.recipe.stage(render.split(".", 1)[1])
    evals = {f.stem: f for f in sorted((ctx.input(render) / "eval").glob("*.jsonl")) if f.stat().st_size > 0}
    records = {f.stem: f for f in sorted((ctx.input("split") / "eval").glob("*.jsonl")) if f.stat().st_size > 0}
    model_dir = None if before else ctx.input(f"train.{stage.name}") / "final"
    result = evaluate_stage(ctx.recipe, stage, model_dir, evals, eval_records=records, trust=ctx.options.trust,
                            name=BEFORE if before else None)
    (ctx.out / "eval.json").write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    loss = {s: v["loss"] for s, v in result["loss"].items()}
    for src, v in sorted(loss.items()):
        ctx.log(f"eval {src}: loss {v:.4f}")
    h = result["health"]
    if h["generations"]:
        ctx.log(f"generations: stop_rate {h['stop_rate']:.2f}, role_leak_rate {h['role_leak_rate']:.2f} "
                f"({h['generations']} prompts)")
    for smp in result["samples"]:
        ctx.log(f"sample: {smp['prompt'][:40]!r} -> {smp['text'][:80]!r}")
    return {"metrics": {"loss": loss, "perplexity": {s: v["perplexity"] for s, v in result["loss"].items()},
                        "stop_rate": h["stop_rate"], "role_leak_rate": h["role_leak_rate"],
                        "generations": h["generations"],
                        "samples": [{"prompt": s["prompt"], "output": s["text"], "stopped": s["stopped"],
                                     "leaked": s["leaked"]} for s in result["samples"]]}}
