"""The dedup's two global shuffles as Jobs (runner/data/job.py), so that the step's executor runs them (forked
workers, Ray tasks) and not the driver alone:

  exact     the live rows' (global row, 16-byte digest) grouped by the digest: each later row of a group names
            its first (first_copies)
  minhash   the live rows' (row, band, band key) grouped by the key: the rows that share a band's key with
            another row are the candidates (shared_keys); confirming them (exact Jaccard, in keep-order) stays
            in the driver, on their band keys and texts alone (dedup.confirm)

A partition is a function of the key, so a group never spans two of them, and a partition keeps its rows in
ascending order, so each batch decides its groups alone and the reduce only merges: the result is the same for
any number of partitions, which only sets how many batches an executor may spread. Digests and band keys are
uniform hashes already, so key mod P balances the partitions."""
from __future__ import annotations

from typing import Any, Iterator, Sequence

from .job import Job, serial

ROWS_PER_PART = 1 << 18   # ~256k rows a batch: a smaller dedup is one batch, which the local executor runs in
                          # this process (the Job's `big` hint), starting no workers


def parts_for(rows: int) -> int:
    """One partition per whole ROWS_PER_PART rows, at least one (up to 2 x ROWS_PER_PART - 1 rows: one batch)."""
    return max(1, rows // ROWS_PER_PART)


def _partitions(key, parts: int) -> list:
    """The positions of a uint64 key array by key mod parts, each partition in ascending order."""
    import numpy as np

    p = key % np.uint64(parts)
    order = np.argsort(p, kind="stable")
    return np.split(order, np.searchsorted(p[order], np.arange(1, parts, dtype=np.uint64)))


def exact_job(rows: Sequence[int], digests: Sequence[bytes], parts: int) -> Job:
    """rows (global row numbers, ascending) and their digests -> a Job whose result is {row: the first row with
    its digest} for every row that repeats an earlier one."""
    return Job(first_copies, _digest_groups(rows, digests, parts), _merged, big=parts > 1, name="dedup.exact")


def _digest_groups(rows: Sequence[int], digests: Sequence[bytes], parts: int) -> Iterator[tuple[list, list]]:
    import numpy as np

    if parts == 1:
        yield rows, digests
        return
    full = [i for i, d in enumerate(digests) if d]     # an empty digest is never a duplicate: in no group
    # a digest's first 8 bytes (every non-empty digest has one width, a multiple of 8: runner.data.text.digest)
    width = len(digests[full[0]]) // 8 if full else 1
    head = np.frombuffer(b"".join([digests[i] for i in full]), dtype="<u8")[::width]
    for part in _partitions(head, parts):
        at = [full[i] for i in part.tolist()]
        yield [rows[i] for i in at], [digests[i] for i in at]


def first_copies(batch: tuple[Sequence[int], Sequence[bytes]]) -> dict[int, int]:
    """One partition: rows in ascending order and their digests -> {row: the first row with its digest}. Empty
    texts are never duplicates: a missing system prompt is not a copy of another missing system prompt."""
    rows, digests = batch
    first: dict[bytes, int] = {}
    dups = {}
    for g, d in zip(rows, digests):
        if d:
            j = first.setdefault(d, g)
            if j != g:
                dups[g] = j
    return dups


def _merged(results: Iterator[dict[int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in results:
        out.update(r)          # partitions hold disjoint rows
    return out


def candidates_job(keys, parts: int) -> Job:
    """keys: (n, b) band keys -> a Job whose result is the positions (ascending) that share a band's key with
    another position."""
    return Job(shared_keys, _key_groups(keys, parts), _union, big=parts > 1, name="dedup.minhash")


def candidates(keys) -> list[int]:
    """candidates_job in this process, one partition."""
    return serial(candidates_job(keys, 1))


def _key_groups(keys, parts: int) -> Iterator[list[tuple[Any, Any]]]:
    """A batch per partition: for each band, (positions, keys) of the entries whose key falls in it."""
    import numpy as np

    if parts == 1:          # the columns as they are, not copied
        yield [(np.arange(len(keys)), keys[:, j]) for j in range(keys.shape[1])]
        return
    by_band = [_partitions(keys[:, j], parts) for j in range(keys.shape[1])]
    for p in range(parts):
        yield [(idx, keys[idx, j]) for j, idx in enumerate(band[p] for band in by_band)]


def shared_keys(batch: list[tuple[Any, Any]]):
    """One partition: for each band, (positions, keys) -> the positions, ascending, that share that band's key
    with another position."""
    import numpy as np

    found = []
    for pos, key in batch:
        _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        found.append(pos[counts[inverse] > 1])
    return _distinct(found)


def _union(results: Iterator[Any]) -> list[int]:
    return _distinct(list(results)).tolist()


def _distinct(arrays: list) -> Any:
    """The distinct values of some int64 arrays, ascending: a sort (np.unique's hash table costs more here)."""
    import numpy as np

    s = np.sort(np.concatenate([np.zeros(0, dtype=np.int64), *arrays]))
    return s[np.concatenate(([True], s[1:] != s[:-1]))] if len(s) else s
