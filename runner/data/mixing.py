"""Mixing: the train rows of every source -> one stage's training rows.

What the numbers mean (one meaning, everywhere):
- a ratio is a share of the FINAL mix, counted after filtering, dedup and the train/eval split;
- a group's share is split among its members in proportion to their train rows;
- `mix: null` mixes every source in proportion to its train rows;
- `size` null is the largest mix the sources allow without repeating a row:
  total = min over sources of (train rows / share); an integer is that many rows; a fraction in (0, 1]
  is that fraction of the largest mix;
- a source too small for its share fails with what was asked and what is possible, unless
  `sampling.oversample` is true: then its rows repeat (all rows once, then a seeded draw) and the
  report says how many repeats were added.
Counts per source are rounded by largest remainder, so they sum to the total exactly and each achieved
share is within 1/total of the requested one. Rows are drawn `random`ly (seeded) or `systematic`ally
(every k-th row from a seeded start, which spreads the draw over the source's order), and the mix is
shuffled (seeded) so sources interleave."""
from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple, Sequence

from ..errors import RecipeError
from ..recipe.model import Sampling
from .common import apportion, rng, without_gc
from .stats import Stats


class Draw(NamedTuple):
    """What a mix reads of its stage: the name seeds the draw; mix and size say what to draw."""
    name: str
    mix: Mapping[str, float] | None
    size: int | float | None


def shares_of(stage: Draw, groups: Mapping[str, Sequence[str]], sizes: Mapping[str, int]) -> dict[str, float]:
    """The requested share of every source in the stage's mix (groups expanded)."""
    if stage.mix is None:
        # in proportion to size: a source that filters or dedup emptied has no share (not a zero share,
        # which the arithmetic below would divide by)
        total = sum(sizes.values())
        return {s: n / total for s, n in sizes.items() if n > 0} if total else {}
    shares: dict[str, float] = {}
    for key, share in stage.mix.items():
        members = list(groups.get(key, (key,)))
        if key in groups:
            n = sum(sizes.get(m, 0) for m in members)
            if n == 0:
                raise RecipeError(f"stage '{stage.name}': group '{key}' has no train rows left in any of "
                                  f"{', '.join(members)} (after filters, dedup and the split)")
            for m in members:
                shares[m] = shares.get(m, 0.0) + share * sizes.get(m, 0) / n
        else:
            shares[key] = shares.get(key, 0.0) + share
    return {s: v for s, v in shares.items() if v > 0}


def _total(stage: Draw, shares: Mapping[str, float], sizes: Mapping[str, int]) -> tuple[int, int]:
    """(rows to mix, the most the sources allow without repeats)."""
    most = min((math.floor(sizes.get(s, 0) / v + 1e-9) for s, v in shares.items()), default=0)
    size = stage.size
    if size is None:
        return most, most
    if isinstance(size, float) and not isinstance(size, bool):
        if not 0 < size <= 1:
            raise RecipeError(f"stage '{stage.name}': size {size} as a fraction must be in (0, 1]")
        return round(size * most), most
    return int(size), most


def _draw(rows: Sequence, n: int, method: str, rand: Any) -> list:
    """n of rows (n <= len(rows)), in the source's order."""
    if n >= len(rows):
        return list(rows)
    if n <= 0:
        return []   # a source left out of this stage's mix
    if method == "systematic":
        step = len(rows) / n
        start = rand.random() * step
        return [rows[int(start + i * step)] for i in range(n)]
    return [rows[i] for i in sorted(rand.sample(range(len(rows)), n))]


def plan_counts(stage: Draw, groups: Mapping[str, Sequence[str]], sizes: Mapping[str, int]
                ) -> tuple[dict[str, float], dict[str, int], int, int]:
    """The mix arithmetic without the rows: (shares, rows per source, total, the most the sources allow
    without repeats). The mix step and `recipe diff` both call it, so a diff predicts the step's numbers."""
    shares = shares_of(stage, groups, sizes)
    total, most = _total(stage, shares, sizes)
    return shares, apportion(total, shares), total, most


@without_gc
def mix_indices(sizes: Mapping[str, int], stage: Draw, groups: Mapping[str, Sequence[str]],
                sampling: Sampling, seed: int) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The mix on row counts alone: sizes {source: train rows} -> ((source, row number) of the stage's
    rows, shuffled; report {requested, achieved, counts, oversampled, available, total, max_total, stats})."""
    shares, counts, total, most = plan_counts(stage, groups, sizes)
    empty = [s for s in shares if not sizes.get(s)]
    if empty or total <= 0:
        why = (f"{', '.join(repr(s) for s in empty)} has no train rows left (after filters, dedup and the split)"
               if empty else "no source has train rows left (after filters, dedup and the split)" if not shares
               else f"size {stage.size} gives no rows")
        raise RecipeError(f"stage '{stage.name}': nothing to mix: {why}")
    short = {s: n for s, n in counts.items() if n > sizes.get(s, 0)}
    if short and not sampling.oversample:
        raise RecipeError(_too_small(stage, shares, counts, sizes, total, most))
    stats = Stats(sizes)
    rows: list[tuple[str, int]] = []
    oversampled: dict[str, int] = {}
    for s, size in sizes.items():
        available = range(size)   # row numbers: _draw reads them as it read rows
        stats.seen(s, size)
        n = counts.get(s, 0)
        rand = rng(seed, "mix", stage.name, s)
        if n > size:   # oversample: every row once, then the remainder drawn again
            repeats, rest = divmod(n, size)
            picked = list(available) * repeats + _draw(available, rest, sampling.method, rand)
            oversampled[s] = n - size
            stats.added(s, "mix:oversampled", n - size)
        else:
            picked = _draw(available, n, sampling.method, rand)
            reason = "mix:not_sampled" if s in shares else "mix:not_in_stage"
            stats.dropped(s, reason, size - n)
        stats.kept(s, len(picked))
        rows.extend((s, i) for i in picked)
    stats.assert_balanced()
    rng(seed, "mix", stage.name, "shuffle").shuffle(rows)
    report = {
        "requested": {s: round(v, 6) for s, v in shares.items()},
        "achieved": {s: round(counts[s] / total, 6) if total else 0.0 for s in shares},
        "counts": {s: counts[s] for s in shares},
        "oversampled": oversampled,
        "available": dict(sizes),
        "total": total,
        "max_total": most,
        "stats": stats.to_json(),
    }
    return rows, report


def mix(train_by_source: Mapping[str, Sequence[dict]], stage: Draw, groups: Mapping[str, Sequence[str]],
        sampling: Sampling, seed: int) -> tuple[list[dict], dict[str, Any]]:
    """mix_indices on rows in memory -> (the stage's rows, shuffled; report)."""
    picked, report = mix_indices({s: len(rows) for s, rows in train_by_source.items()}, stage, groups, sampling, seed)
    return [train_by_source[s][i] for s, i in picked], report


def _too_small(stage: Draw, shares: Mapping[str, float], counts: Mapping[str, int], sizes: Mapping[str, int],
               total: int, most: int) -> str:
    lines = []
    for s, v in shares.items():
        if counts[s] > sizes.get(s, 0):
            lines.append(f"'{s}' has {sizes.get(s, 0)} train rows but a {v:.3g} share of {total} needs {counts[s]} "
                         f"(it can give a {sizes.get(s, 0) / total:.3g} share)")
    return (f"stage '{stage.name}': the mix cannot be met without repeating rows: " + "; ".join(lines) +
            f". The most these ratios allow is {most} rows: lower size to {most} or less, set "
            "sampling.oversample: true to repeat rows, or change the ratios.")
