"""Row filters, one module per kind; FILTERS is the only registry. Each `make(f, ctx)` returns a
callable record -> (drop reason or None, record), the record possibly modified (pii masking).
Dedup is not here: it compares rows across sources (runner/data/dedup.py)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from ..stats import Stats
from . import exclude, incomplete, length, pii, refusal, regex, repetition, toxicity
from .context import FilterContext, RowFilter, Verdict

FILTERS = {
    "length": length.make,
    "repetition": repetition.make,
    "incomplete": incomplete.make,
    "refusal": refusal.make,
    "regex": regex.make,
    "pii": pii.make,
    "toxicity": toxicity.make,
    "exclude": exclude.make,
}

__all__ = ["FILTERS", "FilterContext", "RowFilter", "Verdict", "run_filters"]


def run_filters(source: str, records: list[dict], filters: Sequence[Any], ctx: FilterContext,
                progress: Callable[[int, int | None], None] | None = None) -> tuple[list[dict], list[dict], Stats]:
    """Apply filters in order; the first that objects drops the row. -> (kept, dropped rows each
    with its "reason", stats). `progress(done, total)` is told every 1,024 rows."""
    checks = [FILTERS[f.kind](f, ctx) for f in filters]
    kept, dropped = [], []
    stats = Stats([source])
    for i, record in enumerate(records):
        if progress and not i % 1024:
            progress(i, len(records))
        stats.seen(source)
        for check in checks:
            reason, record = check(record)
            if reason:
                dropped.append({**record, "reason": reason})
                stats.dropped(source, reason)
                break
        else:
            kept.append(record)
            stats.kept(source)
    stats.assert_balanced()
    return kept, dropped, stats
