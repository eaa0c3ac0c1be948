"""Row filters, one module per kind; FILTERS is the only registry. Each `make(f, ctx)` returns a
callable record -> (drop reason or None, record), the record possibly a modified copy (pii masking).
Dedup is not here: it compares rows across sources (runner/data/dedup.py).

Scored kinds (SCORED: length, repetition, decontaminate) decide by `rules` on numbers `measure` records per row. The
filter step keeps those numbers for every row (also rows an earlier filter dropped) and every other
filter's verdict where it ran (Scores), so `whatif` can say exactly what other thresholds would keep,
from the cache, without reading a row."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..stats import Stats
from . import decontaminate, exclude, incomplete, length, pii, refusal, regex, repetition, toxicity
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
    "decontaminate": decontaminate.make,
}

__all__ = ["FILTERS", "FilterContext", "RowFilter", "Verdict", "filter_rows", "run_filters"]


SCORED = {"length": length, "repetition": repetition, "decontaminate": decontaminate}
NOT_RUN, KEPT, DROPPED = -1, 0, 1      # a verdict per row of an unscored filter


class Scores:
    """Per filter of a chain, per row in input order: the scored kinds' measures, the others' verdicts.
    Saved as one .npy file per column (np.save writes the same bytes for the same array)."""

    def __init__(self, filters: Sequence[Any]):
        from array import array
        self.filters = filters
        self.columns: list[dict[str, Any]] = [
            {name: array("d") for name in SCORED[f.kind].measures(f)} if f.kind in SCORED else {"verdict": array("b")}
            for f in filters]

    def add(self, k: int, values: Mapping[str, Any]) -> None:
        for name, col in self.columns[k].items():
            col.append(values[name])

    def extend(self, columns: Sequence[Mapping[str, Any]]) -> None:
        """Append another Scores' columns (a later chunk of the same rows)."""
        for mine, theirs in zip(self.columns, columns):
            for name, values in theirs.items():
                mine[name].extend(values)

    def save(self, folder: Path) -> None:
        import numpy as np
        folder.mkdir(parents=True, exist_ok=True)
        for k, cols in enumerate(self.columns):
            for name, col in cols.items():
                np.save(folder / f"{k}.{name}.npy", np.frombuffer(col, dtype=np.int8 if name == "verdict" else np.float64))


def filter_rows(source: str, records: Iterable[dict], filters: Sequence[Any], ctx: FilterContext,
                keep: Callable[[dict], Any], drop: Callable[[dict], Any],
                progress: Callable[[int, int | None], None] | None = None, total: int | None = None,
                scores: Scores | None = None) -> Stats:
    """Apply filters in order, one row at a time; the first that objects drops the row: kept rows go
    to keep(), dropped ones to drop() with their "reason". `progress(done, total)` is told every 1,024
    rows. `scores`, when given, records what every filter measured or decided of every row."""
    checks = []
    for f in filters:
        if f.kind in SCORED:
            checks.append((SCORED[f.kind], f, SCORED[f.kind].measure(f, ctx)))
        else:
            checks.append((None, f, FILTERS[f.kind](f, ctx)))
    stats = Stats([source])
    for i, record in enumerate(records):
        if progress and not i % 1024:
            progress(i, total)
        stats.seen(source)
        reason = None
        for k, (scored, f, fn) in enumerate(checks):
            if scored is not None:
                if scores is None and reason is not None:
                    break
                m = fn(record)       # measured even after a drop: another threshold may keep the row
                if scores is not None:
                    scores.add(k, m)
                if reason is None:
                    reason = next((r for r, hit in scored.rules(f, ctx, m) if hit), None)
            elif reason is None:
                reason, record = fn(record)
                if scores is not None:
                    scores.add(k, {"verdict": DROPPED if reason else KEPT})
            elif scores is not None:
                scores.add(k, {"verdict": NOT_RUN})
            else:
                break
        if reason:
            drop({**record, "reason": reason})
            stats.dropped(source, reason.split(" ", 1)[0])   # a reason's detail (where) is the row's, not a count
        else:
            keep(record)
            stats.kept(source)
    stats.assert_balanced()
    return stats


def whatif(old: Sequence[Any], new: Sequence[Any], folder: Path, ctx: FilterContext) -> dict[str, Any] | None:
    """What the chain `new` keeps of the rows the chain `old` scored into `folder`, from the scores
    alone. None when the chains differ in more than scored thresholds (kinds, fields, sources, an
    unscored filter's settings) or `new` needs a number `old` did not measure. -> {rows_in, rows_out,
    dropped {reason: n}, unknown}: exact when unknown is 0; otherwise `unknown` rows would reach an unscored
    filter that never ran on them: rows_out counts them as kept (an upper bound; the rest is exact) and the
    drop counts leave them out."""
    import numpy as np

    if len(old) != len(new) or not old:
        return None
    first = SCORED[old[0].kind].measures(old[0])[0] if old[0].kind in SCORED else "verdict"
    n = len(np.load(folder / f"0.{first}.npy"))
    alive, unknown = np.ones(n, dtype=bool), np.zeros(n, dtype=bool)
    dropped: dict[str, int] = {}
    for k, (a, b) in enumerate(zip(old, new)):
        if (a.kind, a.field, a.sources) != (b.kind, b.field, b.sources):
            return None
        if a.kind in SCORED:
            mod = SCORED[a.kind]
            if not set(mod.measures(b)) <= set(mod.measures(a)):
                return None
            cols = {name: np.load(folder / f"{k}.{name}.npy") for name in mod.measures(b)}
            hits = mod.rules(b, ctx, cols)
        else:
            if a != b:
                return None
            verdict = np.load(folder / f"{k}.verdict.npy")
            hits = [(b.kind, verdict == DROPPED)]     # its own reasons are in the step's stats
            # rows this filter never saw (an earlier one dropped them): its verdict is unknown, and so is
            # what later filters would measure (a pii mask changes the text), so they leave the count
            blind = alive & (verdict == NOT_RUN)
            unknown |= blind
            alive &= ~blind
        for reason, hit in hits:
            hit = alive & np.asarray(hit, dtype=bool)
            if hit.any():
                dropped[reason] = dropped.get(reason, 0) + int(hit.sum())
            alive &= ~hit
    return {"rows_in": n, "rows_out": int(alive.sum() + unknown.sum()), "dropped": dict(sorted(dropped.items())),
            "unknown": int(unknown.sum())}


def run_filters(source: str, records: list[dict], filters: Sequence[Any], ctx: FilterContext,
                progress: Callable[[int, int | None], None] | None = None) -> tuple[list[dict], list[dict], Stats]:
    """filter_rows on a list -> (kept, dropped rows each with its "reason", stats)."""
    kept: list[dict] = []
    dropped: list[dict] = []
    stats = filter_rows(source, records, filters, ctx, kept.append, dropped.append, progress, len(records))
    return kept, dropped, stats
