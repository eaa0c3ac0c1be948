"""eval.<stage>: loss/perplexity on the eval rows of every source (one row of the forgetting table)
and generation samples, with the stage's final weights."""
from __future__ import annotations

import json

VERSION = 1


def run(ctx) -> dict:
    from ..train.evaluate import evaluate_stage
    stage = ctx.recipe.stage(ctx.step.stage)
    evals = {f.stem: f for f in sorted((ctx.input(f"render.{stage.name}") / "eval").glob("*.jsonl"))
             if f.stat().st_size > 0}
    result = evaluate_stage(ctx.recipe, stage, ctx.input(f"train.{stage.name}") / "final", evals,
                            trust=ctx.options.trust)
    (ctx.out / "eval.json").write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    loss = {s: v["loss"] for s, v in result["loss"].items()}
    for src, v in sorted(loss.items()):
        ctx.log(f"eval {src}: loss {v:.4f}")
    for smp in result["samples"]:
        ctx.log(f"sample: {smp['prompt'][:40]!r} -> {smp['text'][:80]!r}")
    return {"metrics": {"loss": loss, "perplexity": {s: v["perplexity"] for s, v in result["loss"].items()},
                        "samples": [{"prompt": s["prompt"], "output": s["text"], "stopped": s.get("stopped")}
                                    for s in result["samples"]]}}
