"""mix.<stage>: the stage's training rows from every source's train split, by the stage's ratios
(runner/data/mixing.py says exactly what they mean). Artifact: train.jsonl.
No row-parallel part: the draw is global, on counts (mix_indices), and the drawn lines are copied."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .base import Declared, Kind, StepId
from .result import Result, count, share, stage_entry

VERSION = 1


@dataclass(frozen=True)
class MixResult(Result):
    # requested and achieved shares, rows drawn per source (counts), total, oversampled repeats
    mix: Mapping[str, Any] = field(default_factory=dict)

    def contribute(self, step, record, report: dict, run_dir: Path) -> None:
        entry = stage_entry(report, step.stage)
        entry["mix"] = {"requested": self.mix.get("requested", dict(step.params["mix"] or {})),
                        "achieved": self.mix.get("achieved", {})}
        entry["rows"] = {"train": self.rows_out, "eval": None}   # the render step says more when it ran

    @classmethod
    def stage_markdown(cls, entry: dict, run_dir: Path) -> list[str]:
        mix = entry.get("mix") or {"requested": {}, "achieved": {}}
        lines = ["", "| source | requested | achieved |", "|---|---:|---:|"]
        for src in sorted(set(mix["requested"]) | set(mix["achieved"])):
            lines.append(f"| {src} | {share(mix['requested'].get(src))} | {share(mix['achieved'].get(src))} |")
        return lines

    def summary_lines(self, step) -> list[str]:
        lines = []
        for src, got in sorted(self.mix.get("achieved", {}).items()):
            req = self.mix.get("requested", {}).get(src)
            n = (self.by_source.get(src) or {}).get("rows_out", 0)
            lines.append(f"  {src:<12} {count(n):>8} rows  {share(got):>7}"
                         + (f" (requested {share(req)})" if req is not None else ""))
        return lines


KIND = Kind("mix", per="stage", data=True, result=MixResult)


def stage_rows(recipe, stage, result: MixResult | None, train: Mapping[str, int] | None) -> dict:
    """A stage's rows for `recipe diff`: from this exact mix's result when it ran; else computed from the
    split's train rows by this step's own arithmetic (deterministic, so the numbers agree); else unknown."""
    if result is not None and result.mix:
        return {"total": result.mix["total"], "by_source": result.mix["counts"], "basis": "cached"}
    if train is None:
        return {"total": None, "by_source": {}, "basis": "requested"}
    from ..data.mixing import Draw, plan_counts
    from ..errors import RecipeError
    try:
        _, counts, total, _ = plan_counts(Draw(stage.name, stage.mix, stage.size), recipe.groups, train)
    except RecipeError as e:
        return {"total": None, "by_source": {}, "basis": "requested", "problem": e.message}
    short = [f"{s} needs {n:,} of its {train.get(s, 0):,} train rows" for s, n in counts.items() if n > train.get(s, 0)]
    problem = None if not short or recipe.sampling.oversample else \
        "the mix step will fail: " + ", ".join(short) + " (lower size, change the ratios or set sampling.oversample)"
    return {"total": total, "by_source": counts, "basis": "computed", "problem": problem}


def steps(recipe) -> list[StepId]:
    return [] if recipe.meta else [StepId("mix", stage=st.name) for st in recipe.active_stages]


def declare(recipe, step: StepId) -> Declared:
    st = recipe.stage(step.stage)
    return Declared({
        # every mix key with the sources it stands for (a source stands for itself)
        "mix": st.mix, "groups": {k: recipe.expand(k) for k in st.mix or {}},
        "size": st.size, "sampling": recipe.sampling, "seed": recipe.seed, "sources": list(recipe.sources),
        "stage": st.name},   # the draw is seeded by the stage's name
        inputs=(StepId("split"),))


def run(ctx) -> dict:
    from ..data.io import rows_of
    from ..data.mixing import Draw, mix_indices

    p = ctx.params
    d = ctx.input(StepId("split")) / "train"
    # rows are copied line by line in the drawn order: only (source, row number) pairs are held
    train = {src: rows_of(d / f"{src}.jsonl") for src in p["sources"] if (d / f"{src}.jsonl").exists()}
    groups = {k: v for k, v in p["groups"].items() if tuple(v) != (k,)}   # the recipe's groups
    picked, report = mix_indices({s: len(r) for s, r in train.items()}, Draw(p["stage"], p["mix"], p["size"]),
                                 groups, p["sampling"], p["seed"])
    ctx.store.copy_lines("train.jsonl", train, picked)
    stats = report.pop("stats")
    ctx.log(f"{p['stage']}: {len(picked):,} rows: " + ", ".join(
        f"{s} {report['counts'][s]:,} ({report['achieved'][s]:.1%} for {report['requested'][s]:.1%})" for s in report["counts"])
        + (f"; oversampled {report['oversampled']}" if report["oversampled"] else ""))
    return {**stats, "mix": report}
