"""Cold run vs unchanged rerun of the data steps of a real recipe (recipes/poetry_lora.yaml on
builtin:tiny, `recipe run --dry-run`: load, filters, dedup, split, mix, render + render check), each in
a fresh process as a user would run it. Goal: the rerun <= 1 s and >= 20x faster than the cold run.
Then one filter parameter changes: only that step and its descendants run again.

    python bench/cache.py [--smoke]      # --smoke: the first 600 poems, one warm rerun (CI)
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "poetry_lora.yaml"


SMOKE: tuple[str, ...] = ()


def run(cache: str, *extra: str) -> float:
    cmd = [sys.executable, "-m", "runner", "run", str(RECIPE), "--dry-run", "--cache-dir", cache,
           "--set", "model.base=builtin:tiny", *SMOKE, *extra]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    took = time.perf_counter() - t
    if p.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return took


def ran_steps(out_dir: Path) -> list[str]:
    report = json.loads((out_dir / "report.json").read_text())
    return [s["name"] for s in report["steps"] if s["status"] == "ran"]


def main() -> None:
    global SMOKE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="600 poems, one warm rerun: seconds (CI)")
    a = ap.parse_args()
    repeats = 3
    if a.smoke:
        SMOKE, repeats = ("--set", "sources.tang.limit=600", "--set", "size=500"), 1
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "run"
        cold = run(f"{d}/cache", "--output", str(out))
        cold_steps = ran_steps(out)
        warm = min(run(f"{d}/cache", "--output", str(out)) for _ in range(repeats))
        assert ran_steps(out) == [], ran_steps(out)
        changed = run(f"{d}/cache", "--output", str(out), "--set", "filters[0].max_chars=300")
        changed_steps = ran_steps(out)
    print(f"cold run of the data steps     {cold:7.2f} s  ({len(cold_steps)} steps: {', '.join(cold_steps)})")
    print(f"unchanged rerun (best of {repeats})    {warm:7.2f} s  (goal <= 1 s)")
    print(f"speed-up                       {cold / warm:7.1f} x  (goal >= 20x)")
    print(f"filters[0].max_chars changed   {changed:7.2f} s  reran: {', '.join(changed_steps)}")


if __name__ == "__main__":
    main()
