"""The decontaminate filter at scale: 100k training rows against a 10k-row evaluation set, rows/s and
recall on planted contaminated rows.

Evaluation set: GSM8K items (all 7,473 of ../shared/data/gsm8k_train.jsonl when present, else the 500
in data/; no GSM8K test split is shipped, so train items stand in for it), topped up with Tang poems.
Training rows: the other real rows (Tang poems, alpaca en/zh, glaive, identity), two joined per row to
reach the count, plus planted copies of evaluation rows, a third each:
  case/space  the question and answer upper-cased, words separated by runs of spaces and newlines
  punct       punctuation changed ("," -> " ;", "." -> "!") and the answer's last line cut
  embedded    13 consecutive words of the evaluation row (as the filter counts words: punctuation-only
              tokens are none, a CJK character is one) inside an unrelated real row
Recall = planted rows dropped / planted rows. "Clean rows flagged" are rows built only from training
data that still share a 13-gram with the evaluation set (real data has natural duplicates: Tang poems
repeat); they are reported, not counted as errors.

    python bench/decontaminate.py [--rows 100000] [--eval 10000] [--planted 1000] [--smoke]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _data(name: str) -> Path:
    shared = ROOT.parent / "shared" / "data" / name
    return shared if shared.exists() else ROOT / "data" / name


def _jsonl(name: str) -> list[dict]:
    return [json.loads(x) for x in _data(name).read_text(encoding="utf-8").splitlines() if x.strip()]


def pools(n_eval: int) -> tuple[list[dict], list[tuple[str, str]]]:
    """(evaluation rows as stored, training (user, assistant) pairs that are not evaluation rows)."""
    gsm = _jsonl("gsm8k_train.jsonl")
    tang = _jsonl("tang_poems.jsonl")
    evals: list[dict] = gsm[:n_eval]
    evals += tang[:max(0, n_eval - len(evals))]
    train = [(*_eval_pair(p), "tang") for p in tang[max(0, n_eval - len(gsm)):]]
    train += [(g["question"], g["answer"], "gsm8k") for g in gsm[n_eval:]]
    for name in ("alpaca_en_demo.json", "alpaca_zh_demo.json", "identity.json"):
        train += [(r["instruction"] + "\n" + r.get("input", ""), r["output"], name.split(".")[0])
                  for r in json.loads(_data(name).read_text(encoding="utf-8"))]
    for r in json.loads(_data("glaive_toolcall_en_demo.json").read_text(encoding="utf-8")):
        turns = [t["value"] for t in r["conversations"]]
        train.append((turns[0], "\n".join(turns[1:]), "glaive"))
    return evals, train


def _eval_pair(row: dict) -> tuple[str, str]:
    """(user, assistant) in the order the evaluation file holds them (author, then the poem's lines)."""
    if "question" in row:
        return row["question"], row["answer"]
    return row["author"], "\n".join(row["paragraphs"])


def planted(row: dict, how: str, rng: random.Random, clean: tuple) -> tuple[str, str]:
    q, a = _eval_pair(row)
    if how == "case/space":
        return "   ".join(q.upper().split()), " \n ".join(a.upper().split(" "))
    if how == "punct":
        return q.replace(",", " ;").replace(".", "!"), "\n".join(a.split("\n")[:-1]) or a
    from runner.data.text import normalize, words
    w = words(normalize(f"{q}\n{a}"))     # the filter's words: 13 of them, as they read in the row
    start = rng.randrange(max(1, len(w) - 12))
    piece = " ".join(w[start:start + 13])
    return clean[0], f"{clean[1]}\n{piece}\n{clean[1][:40]}"


def build(rows: int, n_eval: int, n_planted: int, seed: int = 0):
    rng = random.Random(seed)
    evals, train = pools(n_eval)
    records = []
    kinds = ("case/space", "punct", "embedded")
    for i in range(n_planted):
        u, a = planted(evals[rng.randrange(len(evals))], kinds[i % 3], rng, train[rng.randrange(len(train))])
        records.append((u, a, kinds[i % 3]))
    for i in range(rows - n_planted):   # each real row once, then two joined (both clean, so the row is)
        (u1, a1, s1), (u2, a2, s2) = train[i % len(train)], train[rng.randrange(len(train))]
        records.append((u1, a1, f"clean {s1}") if i < len(train) else (f"{u1}\n{u2}", f"{a1}\n{a2}", "clean joined"))
    rng.shuffle(records)
    out = [{"id": str(i), "messages": [{"role": "user", "content": u}, {"role": "assistant", "content": a}]}
           for i, (u, a, _) in enumerate(records)]
    return evals, out, [k for _, _, k in records]   # kind: how planted, or "clean <origin>"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--eval", type=int, default=10_000)
    ap.add_argument("--planted", type=int, default=1_000)
    ap.add_argument("--smoke", action="store_true", help="2,000 rows against 200 (CI)")
    a = ap.parse_args()
    if a.smoke:
        a.rows, a.eval, a.planted = 2_000, 200, 60
    from runner.data.filters import FILTERS, FilterContext
    from runner.data.filters.decontaminate import index
    from runner.recipe.model import DecontaminateFilter

    evals, records, kinds = build(a.rows, a.eval, a.planted)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "eval.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in evals),
                                              encoding="utf-8")
        f = DecontaminateFilter(kind="decontaminate", field="all", against=("eval.jsonl",), ngram=13, fields=None,
                                min_matches=1, sources=None)
        t0 = time.perf_counter()
        idx = index(f, Path(tmp))
        t_index = time.perf_counter() - t0
        check = FILTERS["decontaminate"](f, FilterContext(base_dir=Path(tmp)))
        t0, c0 = time.perf_counter(), time.process_time()
        verdicts = [check(r)[0] for r in records]
        t_filter, c_filter = time.perf_counter() - t0, time.process_time() - c0
    print(f"{len(records):,} training rows against {len(evals):,} evaluation rows ({len(idx):,} distinct "
          f"13-grams); index {t_index:.2f} s, filter {t_filter:.2f} s = {len(records) / t_filter:,.0f} rows/s "
          f"({c_filter:.2f} s of CPU = {len(records) / c_filter:,.0f} rows per CPU-second; one process)")
    for kind in ("case/space", "punct", "embedded"):
        hit = [v is not None for v, k in zip(verdicts, kinds) if k == kind]
        print(f"  planted {kind:<11} recall {sum(hit) / len(hit):6.1%} ({sum(hit)}/{len(hit)})")
    hit = [v is not None for v, k in zip(verdicts, kinds) if not k.startswith("clean")]
    print(f"  all planted       recall {sum(hit) / len(hit):6.1%}")
    origins = sorted({k for k in kinds if k.startswith("clean")})
    for k in origins:
        flagged = [v is not None for v, o in zip(verdicts, kinds) if o == k]
        print(f"  {k + ' rows':<24} flagged {sum(flagged):6,} of {len(flagged):7,}")


if __name__ == "__main__":
    main()
