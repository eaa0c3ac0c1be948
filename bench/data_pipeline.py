"""Data engine benchmark: 100k+ real records through load -> row filters -> exact dedup -> MinHash
dedup, ours next to a seed-style baseline (per-field Jinja renders; per-record datasketch MinHash and
MinHashLSH query-then-insert), with near-duplicate recall and precision measured against exact
Jaccard on planted pairs.

    .venv/bin/python bench/data_pipeline.py [--rows 102000] [--skip-baseline] [--smoke]

Input: the full tang poems (../shared/data/tang_poems.jsonl when present, else data/tang_poems.jsonl),
grown to --rows with seeded synthetic poems (lines drawn from different poems: new texts, not
near-copies), planted near-duplicates (one character replaced, or two lines swapped, in a copy of a
poem) and planted exact copies. Goals: >= 20k rec/s end to end on 2 cores, >= 5x the baseline,
recall >= 0.95. Timings are printed, never asserted."""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runner import api  # noqa: E402
from runner.data.dedup import dedup  # noqa: E402
from runner.data.filters import FilterContext, run_filters  # noqa: E402
from runner.data.formats import load_source  # noqa: E402
from runner.data.text import normalize, text  # noqa: E402

THRESHOLD, NUM_PERM, SHINGLE = 0.85, 128, 5
RECIPE = f"""
recipe: bench
model: {{base: builtin:tiny}}
sources:
  tang:
    path: poems.jsonl
    format: fields
    fields:
      user: "以下是一首唐詩的第一句話，請用你的知識判斷並完成整首詩。\\n{{{{ paragraphs[0] }}}}"
      assistant: "{{{{ paragraphs[1:] | join('\\n') }}}}"
      meta: {{author: "{{{{ author }}}}", title: "{{{{ title }}}}"}}
filters:
  - {{kind: length, field: assistant, min_chars: 10, max_chars: 400}}
  - {{kind: repetition, max_line_repeats: 3}}
  - {{kind: dedup, method: exact}}
  - {{kind: dedup, method: minhash, threshold: {THRESHOLD}, num_perm: {NUM_PERM}, shingle: {SHINGLE}}}
"""


def build_rows(n_rows: int, seed: int = 7) -> tuple[list[dict], list[tuple[str, str]]]:
    shared = ROOT.parent / "shared" / "data" / "tang_poems.jsonl"
    src = shared if shared.exists() else ROOT / "data" / "tang_poems.jsonl"
    base = [json.loads(line) for line in src.open(encoding="utf-8")]
    base = base[:max(n_rows * 9 // 10, 1)]   # a small --rows (--smoke) takes a prefix of the real poems
    rnd = random.Random(seed)
    rows = list(base)
    lines = [p for r in base for p in r["paragraphs"]]
    chars = [c for c in "".join(lines[:5000]) if "\u4e00" <= c <= "\u9fff"]
    pairs: list[tuple[str, str]] = []
    n_near, n_exact = n_rows // 50, n_rows // 200
    n_synth = n_rows - len(base) - n_near - n_exact
    for i in range(n_synth):   # new poems from lines of different poems
        k = rnd.choice((2, 4, 4, 4, 6, 8))
        rows.append({"author": rnd.choice(base)["author"], "title": f"擬作 {i}", "id": f"synth-{i}",
                     "paragraphs": [rnd.choice(lines) for _ in range(k)]})
    long_ones = [r for r in base if len(r["paragraphs"]) >= 4]
    for i in range(n_near):    # planted near-duplicates of real poems
        orig = rnd.choice(long_ones)
        paras = list(orig["paragraphs"])
        if rnd.random() < 0.5:
            j = rnd.randrange(1, len(paras))
            p = paras[j]
            pos = rnd.randrange(len(p))
            paras[j] = p[:pos] + rnd.choice(chars) + p[pos + 1:]
        else:
            a, b = rnd.sample(range(1, len(paras)), 2)
            paras[a], paras[b] = paras[b], paras[a]
        rows.append({**orig, "id": f"near-{i}", "paragraphs": paras})
        pairs.append((orig["id"], f"near-{i}"))
    for i in range(n_exact):   # planted exact copies
        rows.append({**rnd.choice(base), "id": f"exact-{i}"})
    rnd.shuffle(rows)
    return rows, pairs


def shingles(s: str, n: int = SHINGLE) -> set[str]:
    return {s[i:i + n] for i in range(len(s) - n + 1)} if len(s) >= n else {s}


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


# --- ours ------------------------------------------------------------------------------------------

def ours(recipe) -> tuple[dict, list, list, dict]:
    t = {}
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    records, quarantine, _ = load_source("tang", recipe.sources["tang"], recipe.file.parent)
    t["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    kept, _, _ = run_filters("tang", records, recipe.row_filters("tang"), FilterContext(recipe.file.parent))
    t["filters"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    dedups = [f for f in recipe.filters if f.kind == "dedup"]
    out, dropped, stats = dedup({"tang": kept}, dedups, {"tang": 0}, ["tang"])
    t["dedup"] = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    return t, records, dropped, {"kept": out["tang"], "filtered": kept, "stats": stats, "cpu": cpu}


# --- the seed-style baseline -------------------------------------------------------------------------

def baseline(recipe, raw_path: Path) -> tuple[dict, list]:
    from datasketch import MinHash, MinHashLSH
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    t = {}
    t0 = time.perf_counter()
    f = recipe.sources["tang"].fields
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    tmpl = {k: env.from_string(v) for k, v in {"user": f.user, "assistant": f.assistant, **f.meta}.items()}
    records = []
    for line in raw_path.open(encoding="utf-8"):
        row = json.loads(line)
        out = {k: tm.render(row) for k, tm in tmpl.items()}
        if out["assistant"].strip():
            records.append({"id": row["id"], "messages": [{"role": "user", "content": out["user"]},
                                                          {"role": "assistant", "content": out["assistant"]}],
                            "meta": {"author": out["author"], "title": out["title"]}, "source": "tang"})
    t["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    kept, _, _ = run_filters("tang", records, recipe.row_filters("tang"), FilterContext(recipe.file.parent))
    t["filters"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    seen, lsh, dropped = set(), MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM), []
    for r in kept:
        norm = " ".join(unicodedata.normalize("NFKC", text(r, "all")).lower().split())
        norm = normalize(norm)
        if norm in seen:
            continue
        seen.add(norm)
        m = MinHash(num_perm=NUM_PERM)
        for sh in shingles(norm):
            m.update(sh.encode("utf-8"))
        hit = lsh.query(m)
        if hit:
            dropped.append({"id": r["id"], "duplicate_of": hit[0], "norm": norm})
        else:
            lsh.insert(r["id"], m)
    t["dedup"] = time.perf_counter() - t0
    return t, dropped


def quality(dropped: list[dict], by_id: dict[str, str], pairs: list[tuple[str, str]], alive: set[str]) -> dict:
    """Recall over planted pairs whose exact Jaccard >= threshold (and both rows reached dedup);
    precision over every minhash drop, by exact Jaccard with the row it was matched to."""
    gone = {d["id"] for d in dropped}
    positives = [(a, b) for a, b in pairs if a in alive and b in alive and by_id[a] != by_id[b]
                 and jaccard(by_id[a], by_id[b]) >= THRESHOLD]
    found = sum(1 for a, b in positives if a in gone or b in gone)
    true = sum(1 for d in dropped if jaccard(by_id[d["id"]], by_id[d["duplicate_of"]]) >= THRESHOLD)
    return {"planted_pairs": len(pairs), "positives": len(positives), "recall": found / max(len(positives), 1),
            "drops": len(dropped), "precision": true / max(len(dropped), 1)}


def libraries(rows: list[dict]) -> None:
    """MinHash signatures (128 permutations, character 5-grams of the normalised poem) for every row:
    the measurement behind the choice of rensa in runner/data/dedup.py."""
    import numpy as np
    import rensa
    from datasketch import MinHash

    from runner.data.dedup import _shingle_hashes

    texts = [normalize("\n".join(r["paragraphs"])) for r in rows]
    print(f"\nMinHash signatures for {len(texts):,} poems (avg {np.mean([len(t) for t in texts]):.0f} chars):")

    def timed(label, fn):
        t0 = time.perf_counter()
        fn()
        print(f"  {label:<44} {time.perf_counter() - t0:7.2f} s")

    grams = []
    timed("Python shingle lists", lambda: grams.extend(shingles(t) for t in texts))
    encoded = [[g.encode() for g in s] for s in grams]
    timed("datasketch MinHash.update_batch, per row", lambda: [MinHash(128).update_batch(s) for s in encoded])
    timed("datasketch MinHash.bulk", lambda: MinHash.bulk(encoded, num_perm=128))
    timed("rensa, from the shingle lists", lambda: rensa.RMinHash.digest_matrix_from_token_sets(grams, 128, 1))

    def numpy_path():
        h, off = _shingle_hashes(texts, SHINGLE)
        rensa.RMinHash.digest_matrix_from_flat_token_hashes(h, off, 128, 1)
    timed("rensa, numpy-hashed shingles incl. hashing", numpy_path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=102_000)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--libraries", action="store_true", help="also time datasketch vs rensa signatures")
    ap.add_argument("--smoke", action="store_true", help="2,000 rows, every code path, seconds (CI)")
    args = ap.parse_args()
    if args.smoke:
        args.rows, args.libraries = 2_000, True
    rows, pairs = build_rows(args.rows)
    if args.libraries:
        libraries(rows)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        with open(d / "poems.jsonl", "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        (d / "bench.yaml").write_text(RECIPE, encoding="utf-8")
        recipe = api.load(d / "bench.yaml")
        print(f"{len(rows):,} raw rows ({len(pairs):,} planted near-duplicates); cpus: {os.cpu_count()}")

        t, records, dropped, extra = ours(recipe)
        total = sum(t.values())
        by_id = {r["id"]: normalize(text(r, "all")) for r in records}
        alive = {r["id"] for r in extra["filtered"]}
        mh = [x for x in dropped if x["reason"] == "dedup:minhash"]
        q = quality(mh, by_id, pairs, alive)
        lsh = extra["stats"]["minhash"][0]
        print(f"\nours:     {len(rows) / total:>9,.0f} rec/s end to end ({total:.2f} s: "
              + ", ".join(f"{k} {v:.2f} s" for k, v in t.items()) + f"); {extra['cpu']:.2f} s of CPU "
              f"(all threads), load average {os.getloadavg()[0]:.1f}")
        print(f"          dedup alone {len(extra['filtered']) / t['dedup']:,.0f} rec/s; LSH {lsh['bands']} bands x "
              f"{lsh['rows']} rows, {lsh['candidates']:,} candidate rows; dropped {extra['stats']['dropped']}")
        print(f"          near-dup recall {q['recall']:.4f} over {q['positives']:,} planted pairs with Jaccard >= "
              f"{THRESHOLD}; precision {q['precision']:.4f} over {q['drops']:,} minhash drops")
        if args.skip_baseline:
            return
        bt, bdrop = baseline(recipe, d / "poems.jsonl")
        btotal = sum(bt.values())
        bq = quality(bdrop, by_id, pairs, alive)
        print(f"baseline: {len(rows) / btotal:>9,.0f} rec/s end to end ({btotal:.2f} s: "
              + ", ".join(f"{k} {v:.2f} s" for k, v in bt.items()) + ")")
        print(f"          dedup alone {len(extra['filtered']) / bt['dedup']:,.0f} rec/s; near-dup recall "
              f"{bq['recall']:.4f}, precision {bq['precision']:.4f} over {bq['drops']:,} drops")
        print(f"\nspeed-up: {btotal / total:.1f}x end to end, {bt['dedup'] / t['dedup']:.1f}x dedup, "
              f"{bt['load'] / t['load']:.1f}x load")


if __name__ == "__main__":
    main()
