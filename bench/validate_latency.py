"""Median wall time of `recipe validate recipes/poetry_lora.yaml` (>= 10 runs) next to the anchor
(and of `recipe diff`, two files and --git, goal <= 1 s):
`trl sft --config` rejecting a typo'd TRL config (`lerning_rate`). Goal: ours <= 0.3 s.

    python bench/validate_latency.py [--runs 10] [--smoke]   # --smoke: 1 run, no anchor (CI)
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def median_time(cmd: list[str], runs: int, expect_fail: bool) -> tuple[float, str]:
    times, last = [], ""
    for _ in range(runs):
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        times.append(time.perf_counter() - t)
        last = (p.stdout + p.stderr).strip().splitlines()[-1:] or [""]
        last = last[0]
        assert (p.returncode != 0) == expect_fail, (cmd, p.returncode, p.stderr[-2000:])
    return statistics.median(times), last


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--smoke", action="store_true", help="one run each, without the trl anchor (CI)")
    a = ap.parse_args()
    if a.smoke:
        a.runs = 1
    recipe_bin = [sys.executable, "-m", "runner"]   # what the `recipe` script runs, from this checkout
    ours, _ = median_time([*recipe_bin, "validate", "recipes/poetry_lora.yaml"], a.runs, expect_fail=False)
    typo = ROOT / "tests" / "broken" / "typo_train_key.yaml"
    ours_err, msg = median_time([*recipe_bin, "validate", str(typo)], a.runs, expect_fail=True)
    print(f"recipe validate poetry_lora.yaml   median {ours:.3f} s over {a.runs} runs (goal <= 0.3 s)")
    print(f"recipe validate (typo'd recipe)    median {ours_err:.3f} s  -> {msg}")
    with tempfile.TemporaryDirectory() as cache:   # an empty cache: the diff compiles and fingerprints both sides
        two, _ = median_time([*recipe_bin, "diff", "recipes/curriculum_3stage.yaml", "recipes/stage2_correction.yaml",
                              "--format", "markdown", "--cache-dir", cache], a.runs, expect_fail=False)
        print(f"recipe diff curriculum vs stage2   median {two:.3f} s (goal <= 1 s)")
        if (ROOT / ".git").exists():
            git, _ = median_time([*recipe_bin, "diff", "--git", "HEAD", "recipes", "--cache-dir", cache], a.runs,
                                 expect_fail=False)
            print(f"recipe diff --git HEAD recipes     median {git:.3f} s (goal <= 1 s)")
    if a.smoke:
        return
    trl = shutil.which("trl", path=str(Path(sys.executable).parent))
    if not trl:
        print("trl CLI not found: anchor skipped")
        return
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "sft.yaml"
        cfg.write_text("model_name_or_path: Qwen/Qwen2-0.5B\ndataset_name: trl-lib/Capybara\n"
                       "lerning_rate: 2.0e-4\noutput_dir: out\nuse_cpu: true\nbf16: false\n")
        anchor, amsg = median_time([trl, "sft", "--config", str(cfg)], max(3, a.runs // 3), expect_fail=True)
    print(f"trl sft --config (typo'd config)   median {anchor:.3f} s  -> {amsg[:100]}")
    print(f"ratio: ours is {anchor / ours:.1f}x faster than the anchor")


if __name__ == "__main__":
    main()
