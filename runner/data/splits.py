"""Splits: each source's rows -> train / eval (and, for meta-learning, tasks -> support / query / test).

A split never leaks. Rows are first joined into groups: rows with the same normalised text, or the same
id, are one group, and a group goes to one side whole. Across sources (and across tasks) a `taken` map
remembers which side each text went to, so a text that turns up again follows its first copy.
`check_no_leak` then verifies the result independently; every split step runs it.

Strategies (counts per side by largest remainder, so they add up exactly):
    random      groups in seeded random order; the non-first sides (eval; query, test) fill up to their
                counts, the first side (train; support) takes the rest;
    stratified  the same within each value of `by` (a group counts under its first row's value), so every
                value keeps its share;
    temporal    rows ordered by `by` (numerically when every value is a number), no shuffling; sides take
                consecutive runs in order, so eval (or test) is the latest. A group sits at its earliest row.
Output keeps each side's rows in input order (temporal: in `by` order)."""
from __future__ import annotations

import random
from collections import defaultdict
from typing import Any, Mapping, Sequence

from ..errors import RecipeError
from ..recipe.model import MetaSplit, Split
from .common import apportion, rng, values_at, without_gc
from .text import normalize, text


def group_key(record: Mapping[str, Any]) -> str:
    return normalize(text(record, "all"))


def _groups(records: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[list[int]]:
    """Indices joined by equal text key or equal id (union-find), groups ordered by first row."""
    parent = list(range(len(records)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, r in enumerate(records):
        for k in (("text", keys[i]), ("id", str(r["id"]))):
            j = first.setdefault(k, i)
            if j != i:
                a, b = find(i), find(j)
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(records)):
        groups[find(i)].append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def _sort_key(values: Sequence[Any]):
    def number(v: Any) -> float | None:
        if isinstance(v, bool):
            return None
        if isinstance(v, (int, float)):
            return float(v)
        try:
            return float(v)
        except (TypeError, ValueError):
            return None
    nums = [number(v) for v in values]
    if all(n is not None for n in nums):
        return nums
    return [str(v) for v in values]


@without_gc
def assign(records: Sequence[Mapping[str, Any]], shares: Mapping[str, float], strategy: str, by: str | None,
           rand: random.Random, taken: dict[str, str] | None = None, what: str = "split") -> dict[str, list]:
    """The general split: records -> {side: rows} for sides in `shares` order (the first side takes
    what the others leave). `taken` (text key -> side) is read and updated."""
    sides = list(shares)
    taken = {} if taken is None else taken
    keys = [group_key(r) for r in records]
    groups = _groups(records, keys)
    side_of: dict[int, str] = {}
    counts = dict.fromkeys(sides, 0)
    free = []
    for gi, g in enumerate(groups):
        forced = next((taken[keys[i]] for i in g if keys[i] in taken), None)
        if forced in counts:
            side_of[gi] = forced
            counts[forced] += len(g)
        else:
            free.append(gi)

    def fill(gis: list[int], targets: dict[str, int], sequential: bool) -> None:
        got = dict.fromkeys(sides, 0)
        k = 0
        for gi in gis:
            size = len(groups[gi])
            if sequential:       # temporal: move to the next side once this one is full
                while k < len(sides) - 1 and got[sides[k]] >= targets[sides[k]]:
                    k += 1
                side = sides[k]
            else:                # first side that still has room, else the first side
                side = next((s for s in sides[1:] if got[s] + size <= targets[s]), sides[0])
            side_of[gi] = side
            got[side] += size

    n_free = sum(len(groups[gi]) for gi in free)
    order = None
    if strategy in ("stratified", "temporal"):
        if not by:
            raise RecipeError(f"{what}: strategy '{strategy}' needs `by:`")
        values = values_at(records, by, f"{what}.by")
    if strategy == "stratified":
        strata: dict[str, list[int]] = defaultdict(list)
        for gi in free:
            strata[str(values[groups[gi][0]])].append(gi)
        for value in sorted(strata):
            gis = strata[value]
            rand.shuffle(gis)
            fill(gis, apportion(sum(len(groups[gi]) for gi in gis), shares), sequential=False)
    else:
        if strategy == "temporal":
            order = _sort_key(values)
            free.sort(key=lambda gi: (min(order[i] for i in groups[gi]), groups[gi][0]))
        else:
            rand.shuffle(free)
        targets = apportion(n_free + sum(counts.values()), shares)
        fill(free, {s: max(targets[s] - counts[s], 0) for s in sides}, sequential=strategy == "temporal")

    where = {i: side_of[gi] for gi, g in enumerate(groups) for i in g}
    out: dict[str, list] = {s: [] for s in sides}
    for i in (sorted(range(len(records)), key=lambda i: (order[i], i)) if order is not None else range(len(records))):
        out[where[i]].append(records[i])
    for i, key in enumerate(keys):
        taken.setdefault(key, where[i])
    return out


def split_source(records: Sequence[Mapping[str, Any]], split: Split, seed: int,
                 taken: dict[str, str] | None = None) -> tuple[list, list]:
    """One source -> (train, eval). `seed` should already be specific to the source
    (common.rng(recipe.seed, "split", name) is what the split step uses)."""
    shares = {"train": 1.0 - split.eval, "eval": split.eval}
    sides = assign(records, shares, split.strategy, split.by, random.Random(seed), taken, "split")
    return sides["train"], sides["eval"]


def check_no_leak(sides: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """Raise RecipeError if any (source, id) or any normalised text is on two sides."""
    seen: dict[tuple, str] = {}
    leaks: list[str] = []
    for side, rows in sides.items():
        for r in rows:
            for key, label in (((r.get("source"), "id", str(r["id"])), f"id {r['id']!r} of source '{r.get('source')}'"),
                               ((None, "text", group_key(r)), f"the text of id {r['id']!r} ('{text(r, 'all')[:60]}')")):
                other = seen.setdefault(key, side)
                if other != side:
                    leaks.append(f"{label} is in both {other} and {side}")
    if leaks:
        more = f" (and {len(leaks) - 3} more)" if len(leaks) > 3 else ""
        raise RecipeError("split leak: " + "; ".join(leaks[:3]) + more)


def select_tasks(records: Sequence[Mapping[str, Any]], by: str, min_rows: int, max_tasks: int | None
                 ) -> tuple[dict[str, list], dict[str, int]]:
    """One task per value of `by`: those with at least min_rows rows, the largest max_tasks (ties by
    name) -> ({task: rows} largest first, {reason: rows left out})."""
    by_task: dict[str, list] = defaultdict(list)
    for name, r in zip(values_at(records, by, "meta.tasks.by"), records):
        by_task[str(name)].append(r)
    ranked = sorted(by_task, key=lambda t: (-len(by_task[t]), t))
    eligible = [t for t in ranked if len(by_task[t]) >= min_rows]
    chosen = eligible[:max_tasks] if max_tasks is not None else eligible
    left_out = {"split:task_too_small": sum(len(by_task[t]) for t in ranked if len(by_task[t]) < min_rows),
                "split:beyond_max_tasks": sum(len(by_task[t]) for t in eligible[len(chosen):])}
    return {t: by_task[t] for t in chosen}, {k: v for k, v in left_out.items() if v}


def split_tasks(records: Sequence[Mapping[str, Any]], by: str, min_rows: int, max_tasks: int | None,
                split: MetaSplit, seed: int) -> dict[str, dict[str, list]]:
    """Meta-learning: the tasks select_tasks picks -> {task: {support, query, test}}, each task split by
    `split` with a seed of its own, and no text on two sides across all tasks."""
    tasks, _ = select_tasks(records, by, min_rows, max_tasks)
    shares = {"support": split.support, "query": split.query, "test": split.test}
    taken: dict[str, str] = {}
    return {t: assign(rows, shares, split.strategy, split.by, rng(seed, "task", t), taken, "meta.split")
            for t, rows in tasks.items()}
