"""split: every source's rows -> train/<src>.jsonl and eval/<src>.jsonl, leak-checked across all
sources; stats carry the train and eval counts per source. Meta-learning recipes get
tasks/<dir>/{support,query,test}.jsonl instead, with tasks.jsonl listing each task's name, folder and
row counts (the task name is the folder when it is a safe file name, else a hash of it), and
quarantine.jsonl for bad rows of explicit task files."""
from __future__ import annotations

import hashlib
import re

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import dedup, filter
from .base import Declared, Kind, StepId
from .result import Result

VERSION = 1
# report.json's `quarantine` key (and runs/<recipe>/quarantine/<key>.jsonl) for the bad rows of explicit task
# files: a source name cannot hold a dot, so it never meets a source's key
QUARANTINE = "meta.tasks"


@dataclass(frozen=True)
class SplitResult(Result):
    train: Mapping[str, int] = field(default_factory=dict)   # rows per source on each side
    eval: Mapping[str, int] = field(default_factory=dict)
    tasks: list[dict[str, Any]] = field(default_factory=list)   # a meta recipe's tasks: name, folder, rows

    @property
    def quarantined(self) -> int:
        """Rows of explicit task files that could not be read or mapped: the row accounting holds them
        already (dropped "quarantine"), so the cached stats need no new key."""
        return self.dropped.get("quarantine", 0)

    def contribute(self, step, record, report: dict, run_dir: Path) -> None:
        # like a load step's: the entry the run directory's quarantine/ folder is made from (LoadResult.finish)
        if record is None or not record.artifact or not self.quarantined:
            return
        report.setdefault("quarantine", {})[QUARANTINE] = {
            "count": self.quarantined, "file": str(Path(record.artifact) / "quarantine.jsonl")}

    def source_rows(self, step, source: str) -> int | None:
        return self.eval.get(source)   # the dry run's column: what each source gives the eval side

    def train_rows(self) -> Mapping[str, int] | None:
        return dict(self.train) if self.train or not self.tasks else None


KIND = Kind("split", data=True, result=SplitResult, column="eval")


def steps(recipe) -> list[StepId]:
    return [StepId("split")]
_SAFE = re.compile(r"^[^/\\\x00]{1,100}$")


def declare(recipe, step: StepId) -> Declared:
    inputs = (StepId("dedup"),) if dedup.wanted(recipe) else tuple(filter.tip(recipe, s) for s in recipe.sources)
    # source order matters: a text found in two sources follows its first copy to one side
    if recipe.meta is None:
        return Declared({"split": recipe.split, "seed": recipe.seed, "order": list(recipe.sources)}, inputs)
    tasks = recipe.meta.tasks
    files = () if not isinstance(tasks, tuple) else tuple(
        f for t in tasks for part in (t.support, t.query, t.test) for f in part)
    # of `meta`, only the tasks and how they split: the inner/outer loops and the few-shot settings are
    # the later steps' business
    meta = {"tasks": recipe.meta.tasks, "split": recipe.meta.split}
    return Declared({"meta": meta, "seed": recipe.seed, "order": list(recipe.sources)}, inputs, files)


def _records(ctx) -> dict:
    """{source: its rows, as io.JsonlRows (read by row number, never held)}."""
    from ..data.io import rows_of

    if ctx.step.inputs == (StepId("dedup"),):
        d = ctx.input(StepId("dedup")) / "records"
        return {src: rows_of(d / f"{src}.jsonl") for src in ctx.params["order"] if (d / f"{src}.jsonl").exists()}
    return dedup.source_inputs(ctx)


def _task_dir(name: str) -> str:
    if _SAFE.match(name) and name not in (".", "..") and not name.startswith("."):
        return name
    return "task-" + hashlib.sha1(name.encode()).hexdigest()[:12]


def keys_batch(by: str | None, chunk: tuple[int, list[str]]):
    """The row-parallel part: a batch of lines -> their RowKeys (text digest, id, the `by` value)."""
    import json

    from ..data.splits import row_keys
    return row_keys(map(json.loads, chunk[1]), by)


def _keys(ctx, rows, by: str | None):
    """The split's per-row keys of one source, joined in input order (data.splits.join_keys)."""
    from functools import partial

    from ..data.io import Lines
    from ..data.splits import join_keys
    from ..executors import Job

    return ctx.executor.run(Job(partial(keys_batch, by), Lines(rows.path, 8192), partial(join_keys, by=by),
                                big=len(rows) > 32768, name=ctx.step.name))


def run(ctx) -> dict:
    import random

    from ..data.common import rng
    from ..data.splits import assign_indices, check_keys, shares_of
    from ..data.stats import Stats

    p = ctx.params
    records = _records(ctx)
    if "meta" in p:
        return _meta(ctx, records)
    split = p["split"]
    stats = Stats(records)
    taken: dict[bytes, str] = {}   # text digest -> side, shared by all sources: a copy follows the first
    sides: dict[str, list] = {"train": [], "eval": []}    # (source, id, digest) per row, for the leak check
    where: dict[str, list] = {"train": [], "eval": []}    # (source, row number), for the check's message
    counts: dict[str, dict[str, int]] = {"train": {}, "eval": {}}
    for src, rows in records.items():
        seed = rng(p["seed"], "split", src).getrandbits(63)
        rk = _keys(ctx, rows, split.by if split.strategy in ("stratified", "temporal") else None)
        got = assign_indices(rk, shares_of(split), split.strategy, split.by, random.Random(seed), taken, "split")
        for side, idx in got.items():
            ctx.store.copy_lines(f"{side}/{src}.jsonl", rows, idx)
            sides[side] += [(src, rk.ids[i], rk.keys[i]) for i in idx]
            where[side] += [(src, i) for i in idx]
            counts[side][src] = len(idx)
        stats.seen(src, len(rows))
        stats.kept(src, len(rows))
        ctx.log(f"{src}: {counts['train'][src]:,} train, {counts['eval'][src]:,} eval")
    check_keys(sides, lambda side, k: records[where[side][k][0]][where[side][k][1]])
    stats.assert_balanced()
    return {**stats.to_json(), **counts}


def _meta(ctx, records: dict[str, list[dict]]) -> dict:
    from ..data.splits import check_no_leak
    from ..data.stats import Stats

    stats = Stats()
    quarantine: list[dict] = []
    if isinstance(ctx.params["meta"]["tasks"], tuple):
        tasks = _explicit_tasks(ctx, stats, quarantine)
    else:
        tasks = _derived_tasks(ctx, records, stats)
    index = []
    for name, parts in tasks.items():
        folder = _task_dir(name)
        for part, rows in parts.items():
            ctx.store.write_jsonl(f"tasks/{folder}/{part}.jsonl", rows)
        index.append({"name": name, "dir": folder, "rows": {p: len(r) for p, r in parts.items()}})
    check_no_leak({p: [r for parts in tasks.values() for r in parts[p]] for p in ("support", "query", "test")})
    ctx.store.write_jsonl("tasks.jsonl", index)
    if quarantine:
        ctx.store.write_jsonl("quarantine.jsonl", quarantine)
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(_codes(quarantine).items()))
        ctx.log(f"task files: {len(quarantine):,} rows quarantined ({reasons}): "
                f"see {ctx.run_dir / 'quarantine' / (QUARANTINE + '.jsonl')}")
    stats.assert_balanced()
    ctx.log(f"{len(tasks)} tasks: " + ", ".join(f"{t['name']} ({sum(t['rows'].values())})" for t in index[:8])
            + (" ..." if len(index) > 8 else ""))
    return {**stats.to_json(), "tasks": index}


def _codes(quarantine: list[dict]) -> dict[str, int]:
    from collections import Counter
    return dict(Counter(q["code"] for q in quarantine))


def _derived_tasks(ctx, records: dict[str, list[dict]], stats) -> dict[str, dict[str, list]]:
    """One task per value of meta.tasks.by in one source."""
    from ..data.splits import select_tasks, split_tasks

    meta, seed = ctx.params["meta"], ctx.params["seed"]
    d = meta["tasks"]
    rows = records.get(d.source, [])
    _, left_out = select_tasks(rows, d.by, d.min_rows, d.max_tasks)
    tasks = split_tasks(rows, d.by, d.min_rows, d.max_tasks, meta["split"], seed)
    stats.seen(d.source, len(rows))
    for reason, n in left_out.items():
        stats.dropped(d.source, reason, n)
    stats.kept(d.source, sum(len(r) for parts in tasks.values() for r in parts.values()))
    return tasks


def _explicit_tasks(ctx, stats, quarantine: list[dict]) -> dict[str, dict[str, list]]:
    """Tasks listed with their own support/query/test files (prompt_response layout); support is cut
    to support_max_samples by a seeded draw."""
    from ..data.common import rng
    from ..data.formats import load_paths

    seed = ctx.params["seed"]
    tasks = {}
    for t in ctx.params["meta"]["tasks"]:
        parts = {}
        for part in ("support", "query", "test"):
            rows, q = [], []
            if getattr(t, part):
                rows, q, _ = load_paths(t.name, getattr(t, part), "prompt_response", ctx.base_dir)
            quarantine += q
            stats.seen(t.name, len(rows) + len(q))
            stats.dropped(t.name, "quarantine", len(q))
            parts[part] = rows
        cap = t.support_max_samples
        if cap is not None and len(parts["support"]) > cap:
            keep = sorted(rng(seed, "support", t.name).sample(range(len(parts["support"])), cap))
            stats.dropped(t.name, "split:support_max_samples", len(parts["support"]) - cap)
            parts["support"] = [parts["support"][i] for i in keep]
        stats.kept(t.name, sum(len(r) for r in parts.values()))
        tasks[t.name] = parts
    return tasks
