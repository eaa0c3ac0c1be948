"""Dedup across sources, after the row filters: `exact` (same normalised text) and `minhash`
(near-duplicates: MinHash signatures + LSH banding, confirmed by exact Jaccard).

Which copy survives: rows are visited source by source, highest `priority` first (ties: the order of
`sources:` in the recipe), each source in file order; a row is dropped when it duplicates a row kept
before it. A dropped row names the row it duplicates (duplicate_of, duplicate_of_source).

MinHash library: rensa. Measured on 102,000 tang poems (the full 30k file grown with synthetic and
planted rows, 57 characters each once normalised), signatures of 128 permutations over character
5-grams, 2 cores with another process busy on one (bench/data_pipeline.py --libraries):
    Python shingle lists (needed by the next three) ..... 1.66 s
    datasketch MinHash.update_batch, one per row ....... 17.73 s
    datasketch MinHash.bulk ............................. 6.33 s
    rensa, from the shingle lists ....................... 0.70 s
    rensa, shingles hashed in numpy (what we do) ........ 0.43 s, hashing included
datasketch computes every permutation of every shingle in numpy, row by row; rensa (Rust) hashes a
shingle once and fills the signature in bucket rounds (Fast Similarity Sketching), and takes the
pre-hashed shingles of all rows in one call. End to end (load, filters, exact and MinHash dedup) the
same bench runs at ~22k rows/s against 1.2k for a per-row datasketch MinHash + MinHashLSH loop.

How near-duplicates are found:
1. shingles are character n-grams (`shingle`) of the normalised text, hashed to 64 bits in numpy,
   one pass for all rows; rensa computes the signature matrix from them;
2. each row keeps one 64-bit key per band (a hash of the band's signature values): the only per-row
   state, b x 8 bytes, so a million rows need ~100 MB whatever their length. A row whose keys no other
   row shares cannot be a duplicate, which leaves only a few percent of rows (the candidates) for step 3:
   a group-by on the band keys, run by the step's executor (runner/data/groupby.py);
3. the candidates go, in keep-order, through banding on those keys: a row is a duplicate of the first
   kept candidate sharing a band with it whose exact Jaccard (of the shingle-hash sets, recomputed from
   the candidate's text) is >= threshold: in this process, on the candidates' keys and texts alone.
tests/test_data_dedup.py checks the result against a plain query-then-insert over all rows on the
signatures themselves; step 3 makes the precision exact: no pair under the threshold is ever dropped.

Rows are read twice, never held: once for the per-row state (exact: a 16-byte digest of the normalised
text; MinHash: the band keys), in chunks on every core, and once more for the candidates' texts. Exact
dedup is a group-by on the digest, run by the executor too (the first row of a digest wins). What
the dedup keeps is a list of row numbers per source (`dedup_indices`); the step copies those lines."""
from __future__ import annotations

import json
from itertools import islice
from collections import defaultdict
from functools import lru_cache
from typing import Any, Callable, Iterator, Mapping, Sequence

from .job import Job, serial
from .groupby import candidates, candidates_job, exact_job, parts_for
from ..recipe.model import DedupFilter
from .common import without_gc
from .stats import Stats
from .text import digest, normalize, text

SEED = 1   # MinHash permutations; a constant, so dedup does not change with the recipe's seed
# A pair at exactly the threshold must become a candidate with at least this probability. Candidates
# are confirmed by exact Jaccard, so a false candidate costs microseconds, while a missed pair is a
# duplicate left in the data; hence a recall floor rather than datasketch's plain balance, which at
# 0.85 and 128 permutations picks 8 bands x 16 rows and finds a pair at 0.85 with probability 0.46.
RECALL_AT_THRESHOLD = 0.95


@lru_cache(maxsize=None)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands b, rows per band r), b * r <= num_perm. P(s) = 1 - (1 - s^r)^b is the probability that
    a pair of Jaccard s becomes a candidate; its steepest point is at about (1/b)^(1/r). Among the
    (b, r) with P(threshold) >= RECALL_AT_THRESHOLD, the one with the least false positive + false
    negative area (below and above the threshold, equal weights); if num_perm is too small for the
    floor, the (b, r) that comes closest to it."""
    import numpy as np

    s_lo = np.linspace(0.0, threshold, 101)
    s_hi = np.linspace(threshold, 1.0, 101)
    best: tuple[float, float, int, int] | None = None
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            shortfall = max(RECALL_AT_THRESHOLD - (1 - (1 - threshold ** r) ** b), 0.0)
            fp = np.trapezoid(1 - (1 - s_lo ** r) ** b, s_lo)
            fn = np.trapezoid((1 - s_hi ** r) ** b, s_hi)
            key = (round(shortfall, 12), fp + fn, b, r)
            if best is None or key < best:
                best = key
    return best[2], best[3]


def s_curve(b: int, r: int) -> dict[str, float]:
    """P(a pair of Jaccard s becomes a candidate), at a few s: what the user can read off the log."""
    return {f"{s:.2f}": round(1 - (1 - s ** r) ** b, 4) for s in (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0)}


def _shingle_hashes(texts: Sequence[str], n: int):
    """64-bit hashes of every character n-gram of each text (a text shorter than n is one shingle),
    flat, with row offsets: row i's hashes are hashes[offsets[i]:offsets[i+1]]. Polynomial hash over
    code points, then a multiply-xorshift so all 64 bits vary (rensa reads them as given)."""
    import numpy as np

    padded = [t if len(t) >= n else t + "\x00" * (n - len(t)) for t in texts]
    lens = np.fromiter(map(len, padded), dtype=np.int64, count=len(padded))
    cps = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    m = max(len(cps) - n + 1, 0)
    h = cps[:m].copy()
    for k in range(1, n):
        h *= np.uint64(0x100000001B3)
        h += cps[k:k + m]
    h ^= h >> np.uint64(29)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(32)
    counts = lens - n + 1
    offsets = np.zeros(len(padded) + 1, dtype=np.uint64)
    np.cumsum(counts, out=offsets[1:])
    starts = np.cumsum(lens) - lens
    idx = np.repeat(starts - offsets[:-1].astype(np.int64), counts) + np.arange(int(offsets[-1]))
    return np.ascontiguousarray(h[idx]), offsets


def band_keys(texts: Sequence[str], b: int, r: int, shingle: int):
    """(len(texts), b) uint64: one key per band of each (non-empty) text's signature."""
    return keys_of(*_shingle_hashes(texts, shingle), len(texts), b, r)


def keys_of(hashes, offsets, n: int, b: int, r: int):
    """band_keys from the texts' shingle hashes. rensa runs on a thread pool of its own, which a forked
    process cannot use (it waits forever for threads that were not copied), so this runs in the step's
    own process and worker processes only hash shingles."""
    import numpy as np
    import rensa

    if not n:
        return np.zeros((0, b), dtype=np.uint64)
    sig = np.array(rensa.RMinHash.digest_matrix_from_flat_token_hashes(hashes, offsets, b * r, SEED).to_rows(),
                   dtype=np.uint64).reshape(n, b, r)
    keys = np.zeros((n, b), dtype=np.uint64)
    for c in range(r):          # FNV-style over the band's values, then the shingle hash's finaliser
        keys *= np.uint64(0x100000001B3)
        keys ^= sig[:, :, c]
    keys ^= keys >> np.uint64(29)
    keys *= np.uint64(0xBF58476D1CE4E5B9)
    keys ^= keys >> np.uint64(32)
    return keys


def confirm(cand: Sequence[int], keys, texts: Callable[[Sequence[int]], list[str]], threshold: float,
            shingle: int) -> dict[int, tuple[int, float]]:
    """Step 3: candidates (row numbers in keep-order, with their band keys; texts(ks) gives the texts
    of candidates ks) -> {row: (kept row, jaccard)} for each that near-duplicates an earlier kept
    candidate. Shingles are hashed a batch of candidates at a time and kept, as sorted unique arrays
    (8 bytes a shingle), only for kept candidates: a later row may be compared with those alone."""
    import numpy as np

    b = keys.shape[1] if len(cand) else 0
    buckets: list[dict[int, list[int]]] = [defaultdict(list) for _ in range(b)]
    kept: dict[int, Any] = {}
    dups: dict[int, tuple[int, float]] = {}
    for start in range(0, len(cand), 4096):
        batch = range(start, min(start + 4096, len(cand)))
        hashes, offsets = _shingle_hashes(texts(batch), shingle)
        for k in batch:
            own = np.unique(hashes[int(offsets[k - start]):int(offsets[k - start + 1])])
            row = keys[k].tolist()
            for c in sorted({c for j in range(b) for c in buckets[j].get(row[j], ())}):
                inter = len(np.intersect1d(own, kept[c], assume_unique=True))
                jac = inter / (len(own) + len(kept[c]) - inter)
                if jac >= threshold:
                    dups[cand[k]] = (cand[c], round(jac, 4))
                    break
            else:
                kept[k] = own
                for j in range(b):
                    buckets[j][row[j]].append(k)
    return dups


def lsh_report(threshold: float, num_perm: int) -> dict[str, Any]:
    b, r = lsh_params(threshold, num_perm)
    return {"bands": b, "rows": r, "perms_used": b * r, "curve_midpoint": round((1 / b) ** (1 / r), 4),
            "candidate_probability": s_curve(b, r)}


def near_duplicates(texts: Sequence[str], threshold: float, num_perm: int, shingle: int
                    ) -> tuple[dict[int, tuple[int, float]], dict[str, Any]]:
    """texts in keep-order -> {i: (j, jaccard)} for each text i that near-duplicates an earlier kept
    text j, and a report of the LSH settings. Empty texts take no part."""
    import numpy as np

    report = lsh_report(threshold, num_perm)
    live = [i for i, t in enumerate(texts) if t]
    keys = np.concatenate([np.zeros((0, report["bands"]), dtype=np.uint64)] + [
        band_keys([texts[i] for i in live[k:k + CHUNK]], report["bands"], report["rows"], shingle)
        for k in range(0, len(live), CHUNK)])
    cand = candidates(keys)
    report["candidates"] = len(cand)
    dups = confirm(cand, keys[cand], lambda ks: [texts[live[cand[k]]] for k in ks], threshold, shingle)
    return {live[k]: (live[j], sim) for k, (j, sim) in dups.items()}, report


def keep_order(sources: Sequence[str], priority: Mapping[str, int], order: Sequence[str]) -> list[str]:
    """Sources in the order their rows claim texts: highest priority first, ties by recipe order."""
    return sorted(sources, key=lambda s: (-priority.get(s, 0), order.index(s) if s in order else len(order)))


CHUNK = 2048   # rows per batch of per-row state (and per worker task): its shingle hashes, 8 bytes a character,
               # travel back from the worker, and 2 per worker are in flight


def _row_state(filters: Sequence[DedupFilter], rows: Sequence[Any]) -> list:
    """The per-row state of a chunk of one source's rows (dicts, or JSON lines) for each filter that
    applies to it (None for one that does not): exact -> digests; minhash -> (non-empty mask, shingle
    hashes and offsets of the non-empty texts: keys_of makes the band keys)."""
    import numpy as np

    rows = [json.loads(x) if isinstance(x, (str, bytes)) else x for x in rows]
    normalized: dict[str, list[str]] = {}
    out: list = []
    for f in filters:
        if f is None:
            out.append(None)
            continue
        if f.field not in normalized:
            normalized[f.field] = [normalize(text(r, f.field)) for r in rows]
        texts = normalized[f.field]
        if f.method == "exact":
            out.append([digest(t) for t in texts])
        else:
            live = np.fromiter((bool(t) for t in texts), dtype=bool, count=len(texts))
            out.append((live, *_shingle_hashes([t for t in texts if t], f.shingle)))
    return out


def state_batch(batch: tuple[str, Sequence[DedupFilter | None], Sequence[Any]]) -> tuple[str, list]:
    """The row-parallel part: (source, the filters that apply to it, a chunk of its rows) -> (source, the
    chunk's per-row state, see _row_state)."""
    src, applies, rows = batch
    return src, _row_state(applies, rows)


class _Rows:
    """All sources' rows numbered globally, in keep-order: source `visit[k]`'s row i is row base[src] + i."""

    def __init__(self, rows_by_source: Mapping[str, Sequence[Any]], priority: Mapping[str, int],
                 order: Sequence[str]):
        import numpy as np

        self.by_source = rows_by_source
        self.visit = keep_order(list(rows_by_source), priority, order)
        self.base, self.n = {}, 0
        for src in self.visit:
            self.base[src] = self.n
            self.n += len(rows_by_source[src])
        self.where = np.zeros(self.n, dtype=np.int32)                 # global row -> index of its source
        for k, src in enumerate(self.visit):
            self.where[self.base[src]:self.base[src] + len(rows_by_source[src])] = k

    def locate(self, g: int) -> tuple[str, int]:
        src = self.visit[self.where[g]]
        return src, g - self.base[src]

    def batches(self, filters: Sequence[DedupFilter], chunks: Any) -> Iterator[tuple]:
        """state_batch's input: every source a filter applies to, in keep-order, in chunks."""
        for src in self.visit:
            applies = [f if f.sources is None or src in f.sources else None for f in filters]
            if not any(applies):
                continue
            it = iter(self.by_source[src])
            for part in (chunks(src) if chunks else iter(lambda: list(islice(it, CHUNK)), [])):
                yield src, applies, part


def _collect(rows: _Rows, filters: Sequence[DedupFilter]) -> Callable[[Iterator[tuple[str, list]]], list]:
    """The first global part: the chunks' per-row state, in input order, into one array per filter
    (exact: 16-byte digests; MinHash: a non-empty mask and b band keys a row, made here by keys_of)."""
    import numpy as np

    def reduce(results: Iterator[tuple[str, list]]) -> list:
        state: list[Any] = []
        for f in filters:
            if f.method == "exact":
                state.append([b""] * rows.n)
            else:
                b, _ = lsh_params(f.threshold, f.num_perm)
                state.append((np.zeros(rows.n, dtype=bool), np.zeros((rows.n, b), dtype=np.uint64)))
        src_now, pos = None, 0
        for src, got in results:
            if src != src_now:
                src_now, pos = src, rows.base[src]
            size = None
            for fi, g in enumerate(got):
                if g is None:
                    continue
                if filters[fi].method == "exact":
                    size = len(g)
                    state[fi][pos:pos + size] = g
                else:
                    live, hashes, offsets = g
                    size = len(live)
                    b, r = lsh_params(filters[fi].threshold, filters[fi].num_perm)
                    state[fi][0][pos:pos + size] = live
                    state[fi][1][np.flatnonzero(live) + pos] = keys_of(hashes, offsets, int(live.sum()), b, r)
            pos += size
        return state
    return reduce


@without_gc
def dedup_indices(rows_by_source: Mapping[str, Sequence[dict]], filters: Sequence[DedupFilter],
                  priority: Mapping[str, int], order: Sequence[str], chunks: Any = None, executor: Any = None,
                  big: bool = True) -> tuple[dict[str, list[int]], list[tuple], dict[str, Any]]:
    """The dedup on compact state. rows_by_source: sequences that can be iterated and indexed
    (lists, or io.JsonlRows that read a file by row number). `chunks(src)` may give a source's rows
    in chunks (default: slices of the sequence); `executor` (runner.executors) computes the per-row
    state and runs the group-bys (runner/data/groupby.py), in this process when None; `big` is the
    executor's hint that worker processes pay (for the per-row state; the group-bys size their own).
    -> (kept row numbers by source, in file order; dropped rows as (source, row, method, kept source,
    kept row, similarity or None), in the order the filters drop them; stats)."""
    import numpy as np

    rows = _Rows(rows_by_source, priority, order)
    stats = Stats(rows_by_source)
    for src in rows.visit:
        stats.seen(src, len(rows_by_source[src]))
    job = Job(state_batch, rows.batches(filters, chunks), _collect(rows, filters), big=big, name="dedup")
    run = executor.run if executor is not None else serial
    alive, dropped, lsh_reports = _decide(rows, filters, run(job), stats, run)
    kept = {src: (np.flatnonzero(alive[rows.base[src]:rows.base[src] + len(rows_by_source[src])])).tolist()
            for src in rows_by_source}
    for src, idx in kept.items():
        stats.kept(src, len(idx))
    stats.assert_balanced()
    out = stats.to_json()
    if lsh_reports:
        out["minhash"] = lsh_reports
    return kept, dropped, out


def _decide(rows: _Rows, filters: Sequence[DedupFilter], state: list, stats: Stats, run: Callable[[Job], Any]
            ) -> tuple[Any, list[tuple], list[dict]]:
    """The second global part: the decisions, filter after filter, on the compact state -> (alive mask,
    dropped entries, MinHash reports). The group-bys (runner/data/groupby.py) are jobs that `run` runs."""
    import numpy as np

    alive = np.ones(rows.n, dtype=bool)
    dropped: list[tuple] = []
    lsh_reports = []
    for fi, f in enumerate(filters):
        mask = alive.copy()
        if f.sources is not None:
            mask &= np.isin(rows.where, [k for k, s in enumerate(rows.visit) if s in f.sources])
        if f.method == "exact":
            live = np.flatnonzero(mask).tolist()
            first = run(exact_job(live, [state[fi][g] for g in live], parts_for(len(live))))
            dup_of = {g: (k, None) for g, k in first.items()}
        else:
            dup_of, report = _near(rows, f, state[fi], mask, run)
            lsh_reports.append({"threshold": f.threshold, "num_perm": f.num_perm, "shingle": f.shingle, **report})
        for g, (kg, sim) in sorted(dup_of.items()):
            (src, i), (ksrc, ki) = rows.locate(g), rows.locate(kg)
            dropped.append((src, i, f.method, ksrc, ki, sim))
            stats.dropped(src, f"dedup:{f.method}")
            alive[g] = False
    return alive, dropped, lsh_reports


def _near(rows: _Rows, f: DedupFilter, state: tuple, mask, run: Callable[[Job], Any]
          ) -> tuple[dict[int, tuple[int, float]], dict]:
    """One MinHash filter over the rows still alive: band keys -> candidates (a job) -> exact Jaccard, here,
    with the candidates' texts read again."""
    import numpy as np

    live, keys = state
    at = np.flatnonzero(mask & live)
    report = lsh_report(f.threshold, f.num_perm)
    cand = run(candidates_job(keys[at], parts_for(len(at)))) if len(at) >= 2 else []
    report["candidates"] = len(cand)

    def texts(ks: Sequence[int]) -> list[str]:
        return [normalize(text(rows.by_source[src][i], f.field))
                for src, i in (rows.locate(int(at[cand[k]])) for k in ks)]

    found = confirm(cand, keys[at[cand]] if cand else keys[:0], texts, f.threshold, f.shingle)
    return {int(at[k]): (int(at[j]), sim) for k, (j, sim) in found.items()}, report


def dropped_row(rows_by_source: Mapping[str, Sequence[dict]], entry: tuple) -> dict:
    """A dropped row as dropped.jsonl holds it: the row with reason, duplicate_of, duplicate_of_source
    (and similarity for minhash)."""
    src, i, method, ksrc, ki, sim = entry
    row = {**rows_by_source[src][i], "reason": f"dedup:{method}", "duplicate_of": rows_by_source[ksrc][ki]["id"],
           "duplicate_of_source": ksrc}
    if sim is not None:
        row["similarity"] = sim
    return row


def dedup(records_by_source: Mapping[str, list[dict]], filters: Sequence[DedupFilter],
          priority: Mapping[str, int], order: Sequence[str]) -> tuple[dict[str, list[dict]], list[dict], dict[str, Any]]:
    """Apply the dedup filters in order -> (kept rows by source, in their original order; dropped
    rows with reason, duplicate_of, duplicate_of_source (and similarity for minhash); stats)."""
    kept, dropped, stats = dedup_indices(records_by_source, filters, priority, order)
    return ({src: [records_by_source[src][i] for i in idx] for src, idx in kept.items()},
            [dropped_row(records_by_source, e) for e in dropped], stats)
