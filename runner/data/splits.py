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
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

from ..errors import RecipeError
from ..recipe.model import MetaSplit, Split
from .common import apportion, get_path, rng, values_at, without_gc
from .text import digest, normalize, text


def group_key(record: Mapping[str, Any]) -> str:
    return normalize(text(record, "all"))


def text_digest(record: Mapping[str, Any]) -> bytes:
    """group_key in 16 bytes: what the split keeps per row to join copies and check leaks."""
    return digest(group_key(record))


class RowKeys(NamedTuple):
    """What a split needs of each row (not the row): its text digest, its id, its `by` value."""
    keys: list[bytes]
    ids: list[str]
    values: list[Any] | None
    missing: int = 0                       # rows without the `by` field
    example: Mapping[str, Any] | None = None   # the first of them

    def __len__(self) -> int:
        return len(self.keys)


def row_keys(records: Iterable[Mapping[str, Any]], by: str | None) -> RowKeys:
    keys, ids, values, missing, example = [], [], [] if by else None, 0, None
    for r in records:
        keys.append(text_digest(r))
        ids.append(str(r["id"]))
        if by:
            try:
                values.append(get_path(r, by))
            except KeyError:
                missing += 1
                example = example or r
                values.append(None)
    return RowKeys(keys, ids, values, missing, example)


def join_keys(parts: Iterable[RowKeys], by: str | None) -> RowKeys:
    """The RowKeys of consecutive chunks of rows (read with `by`), as one; no chunks: no rows."""
    keys: list[bytes] = []
    ids: list[str] = []
    values: list[Any] | None = [] if by else None
    missing, example = 0, None
    for p in parts:
        keys += p.keys
        ids += p.ids
        if values is not None:
            values += p.values
        missing += p.missing
        example = example or p.example
    return RowKeys(keys, ids, values, missing, example)


def _values(rk: RowKeys, by: str, what: str) -> list[Any]:
    if rk.missing:     # the error values_at gives
        r = rk.example
        raise RecipeError(
            f"{what}: field '{by}' is missing in {rk.missing} of {len(rk)} rows of source "
            f"'{r.get('source')}' (e.g. id {r.get('id')!r}); records look like "
            f"{{id, messages, meta: {{...}}, source}}: use e.g. meta.<key> set by the source")
    return rk.values


def _groups(ids: Sequence[str], keys: Sequence[bytes]) -> list[list[int]]:
    """Indices joined by equal text key or equal id (union-find), groups ordered by first row."""
    parent = list(range(len(ids)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_text: dict[bytes, int] = {}
    first_id: dict[str, int] = {}
    for i in range(len(ids)):
        for first, k in ((first_text, keys[i]), (first_id, ids[i])):
            j = first.setdefault(k, i)
            if j != i:
                a, b = find(i), find(j)
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(ids)):
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
def assign_indices(rk: RowKeys, shares: Mapping[str, float], strategy: str, by: str | None,
                   rand: random.Random, taken: dict[bytes, str] | None = None, what: str = "split"
                   ) -> dict[str, list[int]]:
    """The general split on compact row keys: -> {side: row numbers} for sides in `shares` order (the
    first side takes what the others leave), each side in input order (temporal: in `by` order).
    `taken` (text digest -> side) is read and updated."""
    sides = list(shares)
    taken = {} if taken is None else taken
    keys = rk.keys
    groups = _groups(rk.ids, keys)
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
        values = _values(rk, by, f"{what}.by")
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

    where = [None] * len(keys)
    for gi, g in enumerate(groups):
        for i in g:
            where[i] = side_of[gi]
    out: dict[str, list[int]] = {s: [] for s in sides}
    for i in (sorted(range(len(keys)), key=lambda i: (order[i], i)) if order is not None else range(len(keys))):
        out[where[i]].append(i)
    for i, key in enumerate(keys):
        taken.setdefault(key, where[i])
    return out


def assign(records: Sequence[Mapping[str, Any]], shares: Mapping[str, float], strategy: str, by: str | None,
           rand: random.Random, taken: dict[bytes, str] | None = None, what: str = "split") -> dict[str, list]:
    """assign_indices on rows in memory -> {side: rows}."""
    sides = assign_indices(row_keys(records, by if strategy in ("stratified", "temporal") else None),
                           shares, strategy, by, rand, taken, what)
    return {s: [records[i] for i in idx] for s, idx in sides.items()}


def split_source(records: Sequence[Mapping[str, Any]], split: Split, seed: int,
                 taken: dict[bytes, str] | None = None) -> tuple[list, list]:
    """One source -> (train, eval). `seed` should already be specific to the source
    (common.rng(recipe.seed, "split", name) is what the split step uses)."""
    sides = assign(records, shares_of(split), split.strategy, split.by, random.Random(seed), taken, "split")
    return sides["train"], sides["eval"]


def shares_of(split: Split) -> dict[str, float]:
    return {"train": 1.0 - split.eval, "eval": split.eval}


def check_no_leak(sides: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """Raise RecipeError if any (source, id) or any normalised text is on two sides."""
    check_keys({side: ((r.get("source"), str(r["id"]), text_digest(r)) for r in rows) for side, rows in sides.items()},
               lambda side, k: sides[side][k])


def check_keys(sides: Mapping[str, Iterable[tuple[Any, str, bytes]]], row_of: Callable[[str, int], Mapping[str, Any]]
               ) -> None:
    """check_no_leak on (source, id, text digest) per row; row_of(side, k) gives a row for the message."""
    seen: dict[tuple, str] = {}
    leaks: list[str] = []
    for side, keys in sides.items():
        for k, (source, rid, key_of_text) in enumerate(keys):
            for key, what in (((source, "id", rid), "id"), ((None, "text", key_of_text), "text")):
                other = seen.setdefault(key, side)
                if other != side:
                    r = row_of(side, k)
                    label = (f"id {r['id']!r} of source '{r.get('source')}'" if what == "id"
                             else f"the text of id {r['id']!r} ('{text(r, 'all')[:60]}')")
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
