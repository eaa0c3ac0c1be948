"""The dedup's group-bys (runner/data/groupby.py): exact dedup by digest and MinHash candidates by band key, as
jobs of any number of partitions on any executor, decide exactly what one pass in one process decides."""
from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.data import raw_lines, record
from runner.data import groupby
from runner.data.dedup import dedup_indices
from runner.data.groupby import candidates, candidates_job, exact_job
from runner.data.job import serial
from runner.executors.local import LocalExecutor
from runner.recipe.model import _filter
from test_executors import Shuffled

FEW = settings(max_examples=60, deadline=None, derandomize=True, database=None)


def first_wins(digests):
    """The decision in one pass: {i: j} for each non-empty digest i equal to an earlier digest j."""
    first, dups = {}, {}
    for i, d in enumerate(digests):
        if d:
            j = first.setdefault(d, i)
            if j != i:
                dups[i] = j
    return dups


def sharing(keys):
    """Brute force: the rows that share some band's key with another row."""
    n, b = keys.shape
    return [i for i in range(n) if any(keys[i, j] == keys[k, j] for j in range(b) for k in range(n) if k != i)]


@FEW
@given(pool=st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=5, unique=True),
       picks=st.lists(st.tuples(st.integers(0, 5), st.booleans()), max_size=80), seed=st.integers(0, 3))
def test_exact_by_digest_in_any_partitions_equals_one_pass(pool, picks, seed):
    """Many collisions (a pool of at most 5 digests), empty digests, rows not alive (an earlier filter dropped
    them, or a filter's `sources` leaves them out): the same {row: first row} for 1 to 8 partitions."""
    pool = [b"", *pool]
    digests = [pool[k % len(pool)] for k, _ in picks]
    live = [g for g, (_, alive) in enumerate(picks) if alive]
    want = {live[i]: live[j] for i, j in first_wins([digests[g] for g in live]).items()}
    for parts in range(1, 9):
        job = exact_job(live, [digests[g] for g in live], parts)
        assert serial(job) == want, parts
        assert job.big == (parts > 1) and job.name == "dedup.exact"
    assert Shuffled(seed).run(exact_job(live, [digests[g] for g in live], 5)) == want


@FEW
@given(n=st.integers(0, 40), b=st.integers(1, 5), seed=st.integers(0, 2 ** 32 - 1))
def test_candidates_by_band_bucket_in_any_partitions_equal_one_pass(n, b, seed):
    """Band keys from a small pool (collisions within and across bands), some of them using all 64 bits."""
    rng = np.random.default_rng(seed)
    pool = np.concatenate([np.arange(6, dtype=np.uint64), rng.integers(0, 2 ** 64, 3, dtype=np.uint64)])
    keys = pool[rng.integers(0, len(pool), (n, b))] if n else np.zeros((0, b), dtype=np.uint64)
    want = sharing(keys)
    assert candidates(keys) == want
    for parts in range(1, 9):
        job = candidates_job(keys, parts)
        assert serial(job) == want, parts
        assert job.big == (parts > 1) and job.name == "dedup.minhash"
    assert Shuffled(seed % 7).run(candidates_job(keys, 3)) == want


class Counting:
    """serial(), counting each job's batches by its name."""
    name = "counting"

    def __init__(self):
        self.batches: Counter = Counter()

    def run(self, job):
        def counted(batch):
            self.batches[job.name] += 1
            return job.batch(batch)
        return job.reduce(map(counted, job.batches))


def test_dedup_in_many_partitions_on_any_executor_decides_as_one(monkeypatch):
    """The whole dedup (two sources, exact then MinHash on one source, planted exact and near copies) with
    partitions of 40 rows, serially, on pickled copies in shuffled order and in forked workers: the kept rows,
    dropped rows and stats of one partition in one process."""
    rnd = random.Random(5)
    poems = ["\n".join(x["paragraphs"]) for x in raw_lines("tang_poems.jsonl")[:300]]
    rows = [record(t, f"p{i}") for i, t in enumerate(poems)]
    for i in range(200):                                 # exact copies, and copies with one character replaced
        t = rnd.choice(poems)
        if i % 2:
            k = rnd.randrange(len(t))
            t = t[:k] + "龍" + t[k + 1:]
        rows.append(record(t, f"c{i}"))
    rows += [record("", f"e{i}") for i in range(5)]
    rnd.shuffle(rows)
    by = {"a": rows[::2], "b": rows[1::2]}
    filters = [_filter({"kind": "dedup", "method": "exact", "field": "assistant", "threshold": 0.85, "num_perm": 128,
                        "shingle": 5, "sources": None}),
               _filter({"kind": "dedup", "method": "minhash", "field": "assistant", "threshold": 0.8, "num_perm": 128,
                        "shingle": 5, "sources": ["b"]})]
    one = dedup_indices(by, filters, {"a": 0, "b": 1}, ["a", "b"])
    assert one[2]["dropped"]["dedup:exact"] >= 50 and one[2]["dropped"]["dedup:minhash"] >= 10, one[2]
    monkeypatch.setattr(groupby, "ROWS_PER_PART", 40)
    counting = Counting()
    for executor in (counting, Shuffled(3), LocalExecutor(workers=2)):
        assert dedup_indices(by, filters, {"a": 0, "b": 1}, ["a", "b"], executor=executor) == one
    assert counting.batches["dedup.exact"] >= 8 and counting.batches["dedup.minhash"] >= 4, counting.batches


@pytest.mark.parametrize("rows, parts", [(0, 1), (1, 1), ((1 << 18) - 1, 1), (1 << 18, 1), (3 << 18, 3)])
def test_a_small_dedup_is_one_partition(rows, parts):
    assert groupby.parts_for(rows) == parts
