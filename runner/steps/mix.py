"""mix.<stage>: the stage's training rows from every source's train split, by the stage's ratios
(runner/data/mixing.py says exactly what they mean). Artifact: train.jsonl.
No row-parallel part: the draw is global, on counts (mix_indices), and the drawn lines are copied."""
from __future__ import annotations

from .base import Declared, StepId

VERSION = 1


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
