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
    """Row-parallel: each source's lines in batches -> 16-byte digests / shingle hashes (data.dedup.state_batch);
    group-bys on that compact state, on the executor too: exact dedup by digest, MinHash candidates by band key
    (data.groupby); here: band keys, the candidates' exact Jaccard and the keep-order decisions."""
    from ..data.dedup import CHUNK, dedup_indices, dropped_row
    from ..data.io import Lines

    p = ctx.params
    rows = source_inputs(ctx)
    n = sum(len(r) for r in rows.values())
    kept, dropped, stats = dedup_indices(rows, p["filters"], p["priority"], p["order"],
                                         chunks=lambda src: (lines for _, lines in Lines(rows[src].path, CHUNK)),
                                         executor=ctx.executor, big=n > 4 * CHUNK)
    for src, idx in kept.items():
        ctx.store.copy_lines(f"records/{src}.jsonl", rows[src], idx)
    ctx.store.write_jsonl("dropped.jsonl", (dropped_row(rows, entry) for entry in dropped))
    for m in stats.get("minhash", []):
        ctx.log(f"minhash: threshold {m['threshold']}, {m['bands']} bands x {m['rows']} rows "
                f"(curve midpoint ~{m['curve_midpoint']}); P(candidate) by Jaccard: {m['candidate_probability']}")
    ctx.log(f"dedup: kept {stats['rows_out']:,} of {stats['rows_in']:,}"
            + (f"; dropped {', '.join(f'{k} {v}' for k, v in stats['dropped'].items())}" if dropped else ""))
    return stats
