"""mix.<stage>: the stage's training rows from every source's train split, by the stage's ratios
(runner/data/mixing.py says exactly what they mean). Artifact: train.jsonl."""
from __future__ import annotations

VERSION = 1


def run(ctx) -> dict:
    from ..data.io import read_jsonl, write_jsonl
    from ..data.mixing import mix

    recipe = ctx.recipe
    stage = recipe.stage(ctx.step.stage)
    d = ctx.input("split") / "train"
    train = {src: read_jsonl(d / f"{src}.jsonl") for src in recipe.sources if (d / f"{src}.jsonl").exists()}
    rows, report = mix(train, stage, recipe.groups, recipe.sampling, recipe.seed)
    write_jsonl(ctx.out / "train.jsonl", rows)
    stats = report.pop("stats")
    ctx.log(f"{stage.name}: {len(rows):,} rows: " + ", ".join(
        f"{s} {report['counts'][s]:,} ({report['achieved'][s]:.1%} for {report['requested'][s]:.1%})" for s in report["counts"])
        + (f"; oversampled {report['oversampled']}" if report["oversampled"] else ""))
    return {**stats, "mix": report}
