"""Dedup: exact and MinHash across sources, priority, LSH parameters, exactness of near-dup drops."""
from __future__ import annotations

import random
from collections import defaultdict

import pytest

from helpers.data import raw_lines, record
from runner.data.dedup import dedup, lsh_params, near_duplicates, s_curve
from runner.data.text import normalize, text
from runner.recipe.model import DedupFilter


def exact(**kw):
    return DedupFilter(**{"kind": "dedup", "method": "exact", "field": "all", "threshold": 0.85, "num_perm": 128,
                          "shingle": 5, "sources": None, **kw})


def minhash(**kw):
    return exact(method="minhash", **kw)


def shingle_set(s: str, n: int = 5) -> set[str]:
    return {s[i:i + n] for i in range(len(s) - n + 1)} if len(s) >= n else {s}


def jaccard(a: str, b: str) -> float:
    x, y = shingle_set(normalize(a)), shingle_set(normalize(b))
    return len(x & y) / len(x | y)


@pytest.mark.parametrize("threshold,num_perm", [(0.5, 64), (0.7, 128), (0.85, 128), (0.9, 256), (0.95, 128)])
def test_lsh_params_fit_the_signature_and_find_pairs_at_the_threshold(threshold, num_perm):
    b, r = lsh_params(threshold, num_perm)
    assert b * r <= num_perm
    def p(s):
        return 1 - (1 - s ** r) ** b
    assert p(threshold) >= 0.95                                 # the recall floor
    assert threshold - 0.2 < (1 / b) ** (1 / r) < threshold     # the curve's midpoint sits just below
    curve = s_curve(b, r)
    assert list(curve.values()) == sorted(curve.values())      # monotone in similarity
    if threshold >= 0.8:
        assert p(0.3) < 0.01                                    # unrelated texts are rarely candidates
    # among the (b, r) that meet the floor, none has a smaller error area (spot check its neighbours)
    import numpy as np
    def err(b, r):
        lo, hi = np.linspace(0, threshold, 101), np.linspace(threshold, 1, 101)
        return np.trapezoid(1 - (1 - lo ** r) ** b, lo) + np.trapezoid((1 - hi ** r) ** b, hi)
    for bb, rr in [(b + 1, r), (b - 1, r), (b, r + 1), (b, r - 1), (b + 1, r + 1), (b - 1, r - 1)]:
        if bb >= 1 and rr >= 1 and bb * rr <= num_perm and 1 - (1 - threshold ** rr) ** bb >= 0.95:
            assert err(b, r) <= err(bb, rr)


def test_exact_dedup_normalises_and_names_the_kept_copy():
    rows = {"a": [record("Hello, World!", "a1"), record("unique one", "a2")],
            "b": [record("hello world", "b1", user="Q"), record("ＨＥＬＬＯ　ＷＯＲＬＤ", "b2", user="q")]}
    rows["a"][0]["messages"][0]["content"] = "q"
    kept, dropped, stats = dedup(rows, [exact()], {"a": 0, "b": 0}, ["a", "b"])
    assert [r["id"] for r in kept["a"]] == ["a1", "a2"] and kept["b"] == []
    assert {(d["id"], d["reason"], d["duplicate_of"], d["duplicate_of_source"]) for d in dropped} == \
        {("b1", "dedup:exact", "a1", "a"), ("b2", "dedup:exact", "a1", "a")}
    assert stats["by_source"]["b"] == {"rows_in": 2, "rows_out": 0, "dropped": {"dedup:exact": 2}}


def test_priority_decides_which_copy_survives_then_recipe_order():
    rows = {"low": [record("same text", "l")], "high": [record("same text", "h")], "mid": [record("same text", "m")]}
    kept, dropped, _ = dedup(rows, [exact()], {"low": 0, "high": 5, "mid": 0}, ["low", "high", "mid"])
    assert [r["id"] for rs in kept.values() for r in rs] == ["h"]
    assert {d["id"]: d["duplicate_of"] for d in dropped} == {"l": "h", "m": "h"}
    kept, _, _ = dedup(rows, [exact()], {"low": 0, "high": 0, "mid": 0}, ["mid", "low", "high"])
    assert [r["id"] for rs in kept.values() for r in rs] == ["m"]


def test_dedup_sources_and_field_narrowing():
    rows = {"a": [record("same", "a1", user="x")], "b": [record("same", "b1", user="y")], "c": [record("same", "c1")]}
    kept, _, _ = dedup(rows, [exact(sources=("a", "b"))], {}, ["a", "b", "c"])
    assert [len(kept[s]) for s in "abc"] == [1, 1, 1]              # field all: the user turns differ
    kept, _, _ = dedup(rows, [exact(field="assistant", sources=("a", "b"))], {}, ["a", "b", "c"])
    assert [len(kept[s]) for s in "abc"] == [1, 0, 1]              # c takes no part
    kept, _, _ = dedup({"a": [record("x", "1"), record("y", "2")]}, [exact(field="system")], {}, ["a"])
    assert len(kept["a"]) == 2                                     # empty texts are not duplicates


@pytest.fixture(scope="module")
def poems():
    """2000 real poems (assistant text) plus planted near-copies: one character replaced, or two
    lines swapped. -> (rows, {copy id: original id})."""
    rnd = random.Random(3)
    raw = [x for x in raw_lines("tang_poems.jsonl") if len(x["paragraphs"]) >= 6]
    seen, base = set(), []
    for x in raw:
        t = "\n".join(x["paragraphs"])
        if normalize(t) not in seen:
            seen.add(normalize(t))
            base.append(record(t, x["id"]))
        if len(base) == 2000:
            break
    planted = {}
    rows = list(base)
    for i, orig in enumerate(rnd.sample(base, 200)):
        lines = orig["messages"][1]["content"].split("\n")
        j = rnd.randrange(1, len(lines))
        if i % 2:
            lines[0], lines[j] = lines[j], lines[0]
        else:
            pos = rnd.randrange(len(lines[j]))
            lines[j] = lines[j][:pos] + "龍" + lines[j][pos + 1:]
        rows.append(record("\n".join(lines), f"copy-{i}"))
        planted[f"copy-{i}"] = orig["id"]
    rnd.shuffle(rows)
    return rows, planted


def test_minhash_finds_planted_near_duplicates_and_drops_only_true_ones(poems):
    rows, planted = poems
    kept, dropped, stats = dedup({"tang": rows}, [minhash()], {}, ["tang"])
    by_id = {r["id"]: text(r, "all") for r in rows}
    for d in dropped:                                   # precision is exact: never below the threshold
        assert d["reason"] == "dedup:minhash"
        assert jaccard(by_id[d["id"]], by_id[d["duplicate_of"]]) >= 0.85
        assert d["similarity"] == pytest.approx(jaccard(by_id[d["id"]], by_id[d["duplicate_of"]]), abs=1e-3)
    gone = {d["id"] for d in dropped}
    positives = [(c, o) for c, o in planted.items() if jaccard(by_id[c], by_id[o]) >= 0.85]
    assert len(positives) > 100
    found = sum(1 for c, o in positives if c in gone or o in gone)
    assert found / len(positives) >= 0.95
    assert stats["rows_in"] == len(rows) == stats["rows_out"] + len(dropped)
    assert stats["minhash"][0]["bands"] * stats["minhash"][0]["rows"] <= 128


def reference(texts, threshold, num_perm, shingle):
    """Query-then-insert over every row with plain banding (no one-shot prefilter), for comparison."""
    import rensa
    from runner.data.dedup import SEED, _shingle_hashes

    b, r = lsh_params(threshold, num_perm)
    hashes, offsets = _shingle_hashes(texts, shingle)
    sigs = rensa.RMinHash.digest_matrix_from_flat_token_hashes(hashes, offsets, b * r, SEED).to_rows()
    sets = [set(hashes[int(offsets[i]):int(offsets[i + 1])].tolist()) for i in range(len(texts))]
    buckets = [defaultdict(list) for _ in range(b)]
    dups = {}
    for i, sig in enumerate(sigs):
        keys = [tuple(sig[j * r:(j + 1) * r]) for j in range(b)]
        for c in sorted({c for j, k in enumerate(keys) for c in buckets[j].get(k, ())}):
            jac = len(sets[i] & sets[c]) / len(sets[i] | sets[c])
            if jac >= threshold:
                dups[i] = (c, round(jac, 4))
                break
        else:
            for j, k in enumerate(keys):
                buckets[j][k].append(i)
    return dups


def test_minhash_prefilter_changes_nothing(poems):
    rows, _ = poems
    texts = [normalize(r["messages"][0]["content"] + "\n" + r["messages"][1]["content"]) for r in rows]
    for threshold in (0.6, 0.85):
        ours, report = near_duplicates(texts, threshold, 128, 5)
        assert ours == reference(texts, threshold, 128, 5)
        assert ours and report["candidates"] < len(texts) / 2


def test_dedup_is_deterministic(poems):
    rows, _ = poems
    runs = [dedup({"a": rows[:1200], "b": rows[1000:]}, [exact(), minhash()], {"a": 0, "b": 1}, ["a", "b"])
            for _ in range(2)]
    assert runs[0] == runs[1]
    kept, dropped, stats = runs[0]
    assert stats["dropped"]["dedup:exact"] == 200          # the overlap of a and b; b's copies win (priority)
    assert all(d["duplicate_of_source"] == "b" for d in dropped if d["reason"] == "dedup:exact")
