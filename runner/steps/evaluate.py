"""eval.<stage>: loss/perplexity on the eval rows of every source (one row of the forgetting table),
generation samples and the generation health rates (stop_rate, role_leak_rate), with the stage's
final weights. eval.before: the same for the starting model (model.init_from, else model.base),
before the first stage trains: the row "before", so every report shows what training changed."""
from __future__ import annotations

import dataclasses
import json

from .base import BEFORE, Declared, StepId, builtin_weights, model_files, template_files

VERSION = 2


def declare(recipe, step: StepId) -> Declared:
    from ..train.evaluate import eval_batch   # light: the module's heavy imports are inside its functions
    # every_stage and before shape the graph only
    evaluate = dataclasses.replace(recipe.evaluate, every_stage=True, before=True)
    if step.stage == BEFORE:
        first = next(st for st in recipe.stages if not st.skip)
        init = recipe.model.init_from
        return Declared(
            {"evaluate": evaluate, "template": recipe.template,
             # the starting model: model.init_from, else model.base (no adapter of its own)
             "model": dataclasses.replace(recipe.model, adapter=None), "seed": recipe.seed,
             **builtin_weights(recipe)},
            inputs=(StepId("render", stage=first.name), StepId("split")),
            files=((init,) if init else ()) + template_files(recipe) + model_files(recipe, weights=True),
            # the loss is token-weighted: the micro batch changes no number, only memory and speed
            runtime={"batch_size": eval_batch(first.train)})
    st = recipe.stage(step.stage)
    return Declared(
        {"evaluate": evaluate, "template": recipe.template,
         "model": dataclasses.replace(recipe.model, init_from=None, adapter=None),   # loads a final/ as it is
         "seed": recipe.seed, **builtin_weights(recipe)},
        inputs=(StepId("train", stage=st.name), StepId("render", stage=st.name), StepId("split")),
        runtime={"batch_size": eval_batch(st.train)})   # token-weighted loss, as above


def run(ctx) -> dict:
    from ..train.evaluate import evaluate_stage
    from ..train.spec import EvalSpec
    p, step = ctx.params, ctx.step.id
    before = step.stage == BEFORE
    render = next(i for i in ctx.step.inputs if i.kind == "render")   # eval.before: the first stage's
    evals = {f.stem: f for f in sorted((ctx.input(render) / "eval").glob("*.jsonl")) if f.stat().st_size > 0}
    records = {f.stem: f for f in sorted((ctx.input(StepId("split")) / "eval").glob("*.jsonl"))
               if f.stat().st_size > 0}
    model_dir = None if before else ctx.input(StepId("train", stage=step.stage)) / "final"
    result = evaluate_stage(EvalSpec.of(p, ctx.base_dir, stage=step.stage), model_dir, evals,
                            eval_records=records, batch_size=ctx.step.runtime["batch_size"],
                            trust=ctx.options.trust, name=BEFORE if before else None)
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
