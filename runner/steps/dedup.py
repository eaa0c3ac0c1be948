"""dedup: exact and near-duplicate removal across all sources (runner/data/dedup.py).
Inputs: filter.<src> or load.<src> per source. Artifact: records/<src>.jsonl, dropped.jsonl (each
dropped row with reason, duplicate_of and duplicate_of_source)."""
from __future__ import annotations

from . import filter
from .base import Declared, StepId

VERSION = 1


def wanted(recipe) -> bool:
    return any(f.kind == "dedup" for f in recipe.filters)


def declare(recipe, step: StepId) -> Declared:
    return Declared({"filters": [f for f in recipe.filters if f.kind == "dedup"],
                     "priority": {k: s.priority for k, s in recipe.sources.items()}, "order": list(recipe.sources)},
                    inputs=tuple(filter.tip(recipe, s) for s in recipe.sources))


def source_inputs(ctx) -> dict[str, list[dict]]:
    """{source: records} from per-source upstream steps (load.<src> / filter.<src>), in the declared order."""
    from ..data.io import read_jsonl

    by_source = {i.source: i for i in ctx.step.inputs}
    return {src: read_jsonl(ctx.input(by_source[src]) / "records.jsonl")
            for src in ctx.params["order"] if src in by_source}


def run(ctx) -> dict:
    from ..data.dedup import dedup
    from ..data.io import write_jsonl

    p = ctx.params
    kept, dropped, stats = dedup(source_inputs(ctx), p["filters"], p["priority"], p["order"])
    for src, rows in kept.items():
        write_jsonl(ctx.out / "records" / f"{src}.jsonl", rows)
    write_jsonl(ctx.out / "dropped.jsonl", dropped)
    for m in stats.get("minhash", []):
        ctx.log(f"minhash: threshold {m['threshold']}, {m['bands']} bands x {m['rows']} rows "
                f"(curve midpoint ~{m['curve_midpoint']}); P(candidate) by Jaccard: {m['candidate_probability']}")
    ctx.log(f"dedup: kept {stats['rows_out']:,} of {stats['rows_in']:,}"
            + (f"; dropped {', '.join(f'{k} {v}' for k, v in stats['dropped'].items())}" if dropped else ""))
    return stats
