"""The pii filter's pre-screen: presidio on every text vs only on the texts the pre-screen passes, on the
shipped instruction data (alpaca en/zh, glaive tool calls, gsm8k, identity), same run. The spans must be
identical (asserted); goal: most texts never reach presidio.

    python bench/pii.py [--rows 1000] [--smoke]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def texts(rows: int) -> list[str]:
    data = ROOT / "data"
    out: list[str] = []
    for name in ("alpaca_en_demo.json", "alpaca_zh_demo.json", "identity.json"):
        for r in json.loads((data / name).read_text(encoding="utf-8"))[:rows]:
            out += [r["instruction"], r.get("input", ""), r["output"]]
    for r in json.loads((data / "glaive_toolcall_en_demo.json").read_text(encoding="utf-8"))[:rows]:
        out += [t["value"] for t in r["conversations"]]
    for line in (data / "gsm8k_train.jsonl").read_text(encoding="utf-8").splitlines()[:rows]:
        r = json.loads(line)
        out += [r["question"], r["answer"]]
    return [t for t in out if t]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1000, help="rows per data file")
    ap.add_argument("--smoke", action="store_true", help="40 rows per file (CI)")
    a = ap.parse_args()
    if a.smoke:
        a.rows = 40
    from runner.data.filters import pii

    entities = ["CREDIT_CARD", "EMAIL_ADDRESS", "IP_ADDRESS", "PHONE_NUMBER", "URL"]   # the filter's default
    engine = pii.analyzer(tuple(entities), 0.5)
    screen = pii.prescreen(entities, 0.5)
    ts = texts(a.rows)
    t0 = time.perf_counter()
    full = [pii.spans(engine, t, entities, 0.5) for t in ts]
    t_full = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = [pii.spans(engine, t, entities, 0.5) if screen(t) else [] for t in ts]
    t_fast = time.perf_counter() - t0
    assert fast == full, "the pre-screen changed a result"
    passed = sum(1 for t in ts if screen(t))
    print(f"{len(ts):,} texts of the shipped data, default entities, threshold 0.5: "
          f"{sum(map(bool, full)):,} with PII")
    print(f"  presidio on every text   {t_full:7.2f} s  {t_full / len(ts) * 1e3:6.3f} ms/text")
    print(f"  with the pre-screen      {t_fast:7.2f} s  {t_fast / len(ts) * 1e3:6.3f} ms/text "
          f"({passed:,} texts, {passed / len(ts):.0%}, reach presidio)")
    print(f"  speed-up {t_full / t_fast:.1f}x; spans identical")


if __name__ == "__main__":
    main()
