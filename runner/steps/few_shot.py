"""eval.few_shot: the starting model, the SFT control and FOMAML adapted to each held-out task with
k shots (several seeds), loss on the task's whole test file before and after (train/few_shot.py), on
the rows render.tasks rendered."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .base import Declared, Kind, StepId, builtin_weights, model_files
from .result import Result

VERSION = 4   # 3: the summary pairs the models by task and seed (paired, verdict); 4: the verdict says when a
              # model before adapting beats the best after it


@dataclass(frozen=True)
class FewShotResult(Result):
    few_shot: list[dict[str, Any]] = field(default_factory=list)     # one row per model, task, k and seed
    few_shot_summary: Mapping[str, Any] | None = None                 # table (mean ± sd), verdict, by_task

    @classmethod
    def defaults(cls) -> dict:
        return {"few_shot": [], "few_shot_summary": None}

    def contribute(self, step, record, report: dict, run_dir: Path) -> None:
        if record is not None:
            report["few_shot"], report["few_shot_summary"] = list(self.few_shot), self.few_shot_summary

    @classmethod
    def markdown_tail(cls, report: dict, run_dir: Path) -> list[str]:
        summary = report.get("few_shot_summary")
        if not summary:
            return []
        acc = any("accuracy" in t for t in summary["table"])
        exact = all("exact_after" in t for t in summary["table"])
        lines = ["", "## Few-shot adaptation on held-out tasks", "",
                 "Test loss on each held-out task's whole test file, before and after adapting with k shots "
                 "(FOMAML's inner loop; mean ± sd over tasks x seeds; gain = before - after).", ""]
        lines += [f"**{v}.**" for v in summary["verdict"]] + [""]
        lines += ["| model | shots | n | loss before | loss after | gain |" + (" exact before | exact after |" if exact else "")
                  + (" accuracy before | accuracy after |" if acc else ""),
                  "|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if exact else "") + ("---:|---:|" if acc else "")]
        for t in sorted(summary["table"], key=lambda t: (t["shots"], t["loss_after"])):
            lines.append(f"| {t['model']} | {t['shots']} | {t['n']} | {t['loss_before']:.4f} | "
                         f"{t['loss_after']:.4f} ± {t['loss_after_sd']:.4f} | {t['gain']:.4f} ± {t['gain_sd']:.4f} |"
                         + (f" {t['exact_before']:.1%} | {t['exact_after']:.1%} ± {t['exact_after_sd']:.1%} |" if exact else "")
                         + ((f" {t['accuracy_before']:.1%} | {t['accuracy']:.1%} ± {t['accuracy_sd']:.1%} |"
                             if "accuracy" in t else " — | — |") if acc else ""))
        if summary.get("paired"):
            lines += ["", "Paired by task and seed against the best model at each k (mean difference ± its standard "
                      "error; clear: more than twice it):", "",
                      "| shots | model − best | loss after | exact match | accuracy |", "|---:|---|---:|---:|---:|"]
            lines += [f"| {p['shots']} | {p['b']} − {p['a']} | {_diff(p.get('loss_after'), '.4f')} | "
                      f"{_diff(p.get('exact_after'), '.1%')} | {_diff(p.get('accuracy'), '.1%')} |" for p in summary["paired"]]
        if summary.get("by_task"):
            lines += ["", "Per held-out task (mean ± sd over seeds):", "",
                      "| task | shots | model | loss before | loss after |", "|---|---:|---|---:|---:|"]
            lines += [f"| {t['task']} | {t['shots']} | {t['model']} | {t['loss_before']:.4f} | "
                      f"{t['loss_after']:.4f} ± {t['loss_after_sd']:.4f} |" for t in summary["by_task"]]
        return lines


def _diff(d: dict | None, fmt: str) -> str:
    """b − a (the table's order: positive when the other model is worse on loss)."""
    if not d:
        return "—"
    return f"{-d['mean_diff']:+{fmt}} ± {d['se']:{fmt}}" + (" (clear)" if d["clear"] else "")


KIND = Kind("eval.few_shot", result=FewShotResult)


def steps(recipe) -> list[StepId]:
    return [StepId("few_shot")] if recipe.meta else []


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
