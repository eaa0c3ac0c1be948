"""eval.<stage>: loss/perplexity on the eval rows of every source (one row of the forgetting table),
generation samples and the generation health rates (stop_rate, role_leak_rate), with the stage's
final weights. eval.before: the same for the starting model (model.init_from, else model.base),
before the first stage trains: the row "before", so every report shows what training changed."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .base import BEFORE, Declared, Kind, StepId, builtin_weights, model_files, template_files
from .result import Result, count, number, samples_markdown, share, stage_entry

VERSION = 2


@dataclass(frozen=True)
class EvalResult(Result):
    # loss and perplexity per source, stop_rate, role_leak_rate, generations, samples
    metrics: Mapping[str, Any] = field(default_factory=dict)

    def health(self) -> dict:
        return {k: self.metrics.get(k) for k in ("stop_rate", "role_leak_rate", "generations")}

    @classmethod
    def defaults(cls) -> dict:
        return {"before": None, "forgetting": {}, "generation_health": {}}

    def contribute(self, step, record, report: dict, run_dir: Path) -> None:
        m = dict(self.metrics)
        if step.id.stage == BEFORE:
            if not m:
                return
            report["before"], name = m, BEFORE
        else:
            entry = stage_entry(report, step.stage)
            entry.setdefault("metrics", {"train": {}, "eval": {}})["eval"] = m
            name = step.stage
        if m:   # one row of the forgetting table, and of generation health
            report["forgetting"][name] = m.get("loss", {})
            report["generation_health"][name] = self.health()

    @classmethod
    def stage_markdown(cls, entry: dict, run_dir: Path) -> list[str]:
        return samples_markdown(((entry.get("metrics") or {}).get("eval") or {}).get("samples") or [])

    @classmethod
    def markdown_head(cls, report: dict, run_dir: Path) -> list[str]:
        if not report.get("before"):
            return []
        return ["", "## Before training (the starting model)"] + samples_markdown(report["before"].get("samples") or [])

    @classmethod
    def markdown_tail(cls, report: dict, run_dir: Path) -> list[str]:
        lines: list[str] = []
        if report["forgetting"]:
            srcs = sorted({s for row in report["forgetting"].values() for s in row})
            lines += ["", "## Forgetting (eval loss by stage and source)", "", "| stage | " + " | ".join(srcs) + " |",
                      "|---|" + "---:|" * len(srcs)]
            lines += [f"| {stage} | " + " | ".join(number(row.get(s)) for s in srcs) + " |"
                      for stage, row in report["forgetting"].items()]
        if report.get("generation_health"):
            lines += ["", "## Generation health", "",
                      "stop_rate: share of generations that ended with the end-of-turn/EOS token; role_leak_rate: "
                      "share that wrote a role marker or special token. Over the recipe's prompts plus a few eval "
                      "rows' prompts.", "", "| stage | stop_rate | role_leak_rate | generations |", "|---|---:|---:|---:|"]
            lines += [f"| {stage} | {share(h['stop_rate'])} | {share(h['role_leak_rate'])} | {count(h['generations'])} |"
                      for stage, h in report["generation_health"].items()]
        return lines


KIND = Kind("eval", per="stage", result=EvalResult)


def steps(recipe) -> list[StepId]:
    """eval.before (when asked), then one per stage (every stage, or the last)."""
    active = recipe.active_stages
    if recipe.meta or not active:
        return []
    out = [StepId("evaluate", stage=BEFORE)] if recipe.evaluate.before else []
    return out + [StepId("evaluate", stage=st.name) for st in active
                  if recipe.evaluate.every_stage or st is active[-1]]


def declare(recipe, step: StepId) -> Declared:
    from ..train.evaluate import eval_batch   # light: the module's heavy imports are inside its functions
    # every_stage and before shape the graph only
    evaluate = dataclasses.replace(recipe.evaluate, every_stage=True, before=True)
    if step.stage == BEFORE:
        first = recipe.active_stages[0]
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
    from ..recipe.secrets import redact
    # a sample echoes its prompt, which may be a value from the environment: stored as *** (numbers as they are)
    stored = redact(result, ctx.secrets, numbers=False)[0]
    (ctx.out / "eval.json").write_text(json.dumps(stored, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
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
