"""dedup: exact and near-duplicate removal across all sources (runner/data/dedup.py).
Inputs: filter.<src> or load.<src> per source. Artifact: records/<src>.jsonl, dropped.jsonl (each
dropped row with reason, duplicate_of and duplicate_of_source)."""
from __future__ import annotations

from . import filter
from dataclasses import dataclass, field
from typing import Any

from .base import Declared, Kind, StepId
from .result import Result

VERSION = 1


@dataclass(frozen=True)
class DedupResult(Result):
    minhash: list[dict[str, Any]] = field(default_factory=list)   # each MinHash filter's bands and curve


KIND = Kind("dedup", data=True, result=DedupResult, column="deduped")


def steps(recipe) -> list[StepId]:
    return [StepId("dedup")] if wanted(recipe) else []


def wanted(recipe) -> bool:
    return any(f.kind == "dedup" for f in recipe.filters)


def declare(recipe, step: StepId) -> Declared:
    return Declared({"filters": [f for f in recipe.filters if f.kind == "dedup"],
                     "priority": {k: s.priority for k, s in recipe.sources.items()}, "order": list(recipe.sources)},
                    inputs=tuple(filter.tip(recipe, s) for s in recipe.sources))


def source_inputs(ctx) -> dict:
    """{source: its rows} from per-source upstream steps (load.<src> / filter.<src>), in the declared
    order, as io.JsonlRows: read by row number, never held."""
    from ..data.io import rows_of

    by_source = {i.source: i for i in ctx.step.inputs}
    return {src: rows_of(ctx.input(by_source[src]) / "records.jsonl")
            for src in ctx.params["order"] if src in by_source}


def run(ctx) -> dict:
    from ..data.dedup import CHUNK, dedup_indices, dropped_row
    from ..data.io import dumps
    from ..data.parallel import cpus, line_chunks

    p = ctx.params
    rows = source_inputs(ctx)
    n = sum(len(r) for r in rows.values())
    kept, dropped, stats = dedup_indices(rows, p["filters"], p["priority"], p["order"],
                                         chunks=lambda src: (lines for _, lines in line_chunks(rows[src].path, CHUNK)),
                                         workers=cpus() if n > 4 * CHUNK else 1)
    for src, idx in kept.items():
        rows[src].write(ctx.out / "records" / f"{src}.jsonl", idx)
    with open(ctx.out / "dropped.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for entry in dropped:
            f.write(dumps(dropped_row(rows, entry)) + "\n")
    for m in stats.get("minhash", []):
        ctx.log(f"minhash: threshold {m['threshold']}, {m['bands']} bands x {m['rows']} rows "
                f"(curve midpoint ~{m['curve_midpoint']}); P(candidate) by Jaccard: {m['candidate_probability']}")
    ctx.log(f"dedup: kept {stats['rows_out']:,} of {stats['rows_in']:,}"
            + (f"; dropped {', '.join(f'{k} {v}' for k, v in stats['dropped'].items())}" if dropped else ""))
    return stats
