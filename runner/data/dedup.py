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
2. rensa's one-shot LSH flags every row that shares an LSH band with any other row. A row no band
   connects to anything cannot be a duplicate, which leaves only a few percent of rows for step 3;
3. the flagged rows go, in keep-order, through our own banding: a row is a duplicate of the first kept
   row sharing a band with it whose exact Jaccard (of the shingle-hash sets) is >= threshold.
Step 3 makes the result independent of rensa's band hashing (its flags only decide which rows step 3
looks at; both band the same signature columns, so they include every row step 3 could match, which
tests/test_data_dedup.py checks against a plain query-then-insert over all rows), and it makes the
precision exact: no pair under the threshold is ever dropped."""
from __future__ import annotations

from collections import defaultdict
from functools import lru_cache
from typing import Any, Mapping, Sequence

from ..recipe.model import DedupFilter
from .common import without_gc
from .stats import Stats
from .text import normalize, text

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


def near_duplicates(texts: Sequence[str], threshold: float, num_perm: int, shingle: int
                    ) -> tuple[dict[int, tuple[int, float]], dict[str, Any]]:
    """texts in keep-order -> {i: (j, jaccard)} for each text i that near-duplicates an earlier kept
    text j, and a report of the LSH settings. Empty texts take no part."""
    import numpy as np
    import rensa

    b, r = lsh_params(threshold, num_perm)
    report = {"bands": b, "rows": r, "perms_used": b * r, "curve_midpoint": round((1 / b) ** (1 / r), 4),
              "candidate_probability": s_curve(b, r)}
    live = [i for i, t in enumerate(texts) if t]
    if len(live) < 2:
        return {}, {**report, "candidates": 0}
    hashes, offsets = _shingle_hashes([texts[i] for i in live], shingle)
    matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(hashes, offsets, b * r, SEED)
    flags = rensa.RMinHashLSH(threshold, b * r, b).query_duplicate_flags_matrix_one_shot(matrix)
    cand = [k for k, f in enumerate(flags) if f]
    report["candidates"] = len(cand)
    if not cand:
        return {}, report
    # signatures of the candidates only: recomputing them is cheaper than converting the whole matrix
    sub = [hashes[int(offsets[k]):int(offsets[k + 1])] for k in cand]
    sub_offsets = np.zeros(len(sub) + 1, dtype=np.uint64)
    np.cumsum([len(x) for x in sub], out=sub_offsets[1:])
    sigs = rensa.RMinHash.digest_matrix_from_flat_token_hashes(
        np.ascontiguousarray(np.concatenate(sub)), sub_offsets, b * r, SEED).to_rows()
    sets: dict[int, frozenset] = {}

    def shingles(k: int) -> frozenset:
        if k not in sets:
            sets[k] = frozenset(sub[k].tolist())
        return sets[k]

    buckets: list[dict[tuple, list[int]]] = [defaultdict(list) for _ in range(b)]
    dups: dict[int, tuple[int, float]] = {}
    for k, sig in enumerate(sigs):
        keys = [tuple(sig[j * r:(j + 1) * r]) for j in range(b)]
        seen = sorted({c for j, key in enumerate(keys) for c in buckets[j].get(key, ())})
        for c in seen:
            a, bb = shingles(k), shingles(c)
            jac = len(a & bb) / len(a | bb)
            if jac >= threshold:
                dups[live[cand[k]]] = (live[cand[c]], round(jac, 4))
                break
        else:
            for j, key in enumerate(keys):
                buckets[j][key].append(k)
    return dups, report


def keep_order(sources: Sequence[str], priority: Mapping[str, int], order: Sequence[str]) -> list[str]:
    """Sources in the order their rows claim texts: highest priority first, ties by recipe order."""
    return sorted(sources, key=lambda s: (-priority.get(s, 0), order.index(s) if s in order else len(order)))


@without_gc
def dedup(records_by_source: Mapping[str, list[dict]], filters: Sequence[DedupFilter],
          priority: Mapping[str, int], order: Sequence[str]) -> tuple[dict[str, list[dict]], list[dict], dict[str, Any]]:
    """Apply the dedup filters in order -> (kept rows by source, in their original order; dropped
    rows with reason, duplicate_of, duplicate_of_source (and similarity for minhash); stats)."""
    stats = Stats(records_by_source)
    for src, rows in records_by_source.items():
        stats.seen(src, len(rows))
    # rows are tracked as (source, position): the same dict may sit in two sources
    alive = {src: list(range(len(rows))) for src, rows in records_by_source.items()}
    dropped: list[dict] = []
    lsh_reports = []
    normalized: dict[tuple[str, int, str], str] = {}

    def norm(src: str, i: int, field: str) -> str:   # exact and minhash usually compare the same field
        key = (src, i, field)
        if key not in normalized:
            normalized[key] = normalize(text(records_by_source[src][i], field))
        return normalized[key]

    for f in filters:
        sources = keep_order([s for s in alive if f.sources is None or s in f.sources], priority, order)
        visit = [(s, i) for s in sources for i in alive[s]]
        texts = [norm(s, i, f.field) for s, i in visit]
        if f.method == "exact":
            dup_of = {i: (j, None) for i, j in _exact(texts).items()}
        else:
            dup_of, report = near_duplicates(texts, f.threshold, f.num_perm, f.shingle)
            lsh_reports.append({"threshold": f.threshold, "num_perm": f.num_perm, "shingle": f.shingle, **report})
        gone = set()
        for k, (j, sim) in sorted(dup_of.items()):
            (src, i), (ksrc, ki) = visit[k], visit[j]
            entry = {**records_by_source[src][i], "reason": f"dedup:{f.method}",
                     "duplicate_of": records_by_source[ksrc][ki]["id"], "duplicate_of_source": ksrc}
            if sim is not None:
                entry["similarity"] = sim
            dropped.append(entry)
            stats.dropped(src, f"dedup:{f.method}")
            gone.add((src, i))
        alive = {s: [i for i in idx if (s, i) not in gone] for s, idx in alive.items()}
    kept = {src: [records_by_source[src][i] for i in idx] for src, idx in alive.items()}
    for src, rows in kept.items():
        stats.kept(src, len(rows))
    stats.assert_balanced()
    out = stats.to_json()
    if lsh_reports:
        out["minhash"] = lsh_reports
    return kept, dropped, out


def _exact(keys: Sequence[str]) -> dict[int, int]:
    """{i: j} for each key i equal to an earlier key j. Empty texts are never duplicates: a missing
    system prompt is not a copy of another missing system prompt."""
    first: dict[str, int] = {}
    dups = {}
    for i, k in enumerate(keys):
        if not k:
            continue
        j = first.setdefault(k, i)
        if j != i:
            dups[i] = j
    return dups
