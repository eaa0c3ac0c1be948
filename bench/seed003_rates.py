"""Seed 003 over several seeds: how far labels on everything move the generation health rates, and how far
the 20% corrective rerun brings them back.

Runs recipes/seed003_wrong_labels.yaml, then recipes/seed003_fix.yaml from that run's stage `base`, once per
seed, and pools the report's generation health (report.json "generation_health": per stage, how many
generations stopped at the end-of-turn token and how many wrote a role marker) over the seeds. One run of 15
generations (the recipe's 3 prompts and 3 eval rows per source) sampled at temperature 0.7 moves by a few
generations from seed to seed; --eval-prompts raises the eval rows per source.

    python bench/seed003_rates.py [--seeds 42 43 44] [--eval-prompts 10] [--json out.json]
    python bench/seed003_rates.py --smoke      # builtin:tiny-random, one seed, 2 steps (CI)
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _run import run_recipe

ROOT = Path(__file__).resolve().parent.parent
WRONG, FIX = ROOT / "recipes" / "seed003_wrong_labels.yaml", ROOT / "recipes" / "seed003_fix.yaml"
ROWS = (("wrong", "before"), ("wrong", "base"), ("wrong", "task"), ("fix", "task"))


def run(recipe: Path, out: Path, cache: Path, sets: dict) -> dict:
    health = run_recipe(recipe, out, cache, sets)["generation_health"]
    return {stage: {"generations": h["generations"], "stopped": round(h["stop_rate"] * h["generations"]),
                    "leaked": round(h["role_leak_rate"] * h["generations"])} for stage, h in health.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    ap.add_argument("--eval-prompts", type=int, default=3, help="eval rows' conversations per source (the recipe's: 3)")
    ap.add_argument("--json", type=Path, help="write every number here")
    ap.add_argument("--smoke", action="store_true", help="builtin:tiny-random, one seed, 2 steps: seconds (CI)")
    a = ap.parse_args()
    common = {"evaluate.generate.eval_prompts": a.eval_prompts}
    wrong_only, fix_only = {}, {}
    if a.smoke:   # test_e2e's reduction
        a.seeds, a.eval_prompts = [42], 1
        common = {"model.base": "builtin:tiny-random", "sources.poetry.limit": 2000, "train.max_steps": 2,
                  "evaluate.max_rows": 4, "evaluate.generate.max_new_tokens": 8, "evaluate.generate.eval_prompts": 1}
        wrong_only, fix_only = {"size": 40}, {"size": 8}
    health: dict[int, dict] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        for seed in a.seeds:
            wrong = Path(d) / f"wrong_{seed}"
            h = {"wrong": run(WRONG, wrong, Path(d) / "cache", {**common, **wrong_only, "seed": seed})}
            h["fix"] = run(FIX, Path(d) / f"fix_{seed}", Path(d) / "cache",
                           {**common, **fix_only, "seed": seed, "model.init_from": wrong / "base" / "final"})
            health[seed] = h
            print(f"  seed {seed}: done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    print(f"seed 003 pair, seeds {a.seeds}, {a.eval_prompts} eval rows per source + the recipe's prompts per stage "
          f"and seed\n")
    print(f"  {'run / stage':16}{'stopped':>16}{'leaked':>16}   per seed (stopped / leaked of n)")
    summary = {}
    for run_name, stage in ROWS:
        hs = [health[s][run_name][stage] for s in a.seeds]
        n, stop, leak = (sum(h[k] for h in hs) for k in ("generations", "stopped", "leaked"))
        summary[f"{run_name}.{stage}"] = {"generations": n, "stopped": stop, "leaked": leak}
        per = "  ".join(f"{h['stopped']}/{h['leaked']} of {h['generations']}" for h in hs)
        print(f"  {run_name + ' ' + stage:16}{f'{stop}/{n} ({stop / n:.0%})':>16}{f'{leak}/{n} ({leak / n:.0%})':>16}"
              f"   {per}")
    print(f"\n{time.perf_counter() - t0:.0f} s in all")
    if a.json:
        a.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "summary": summary,
                                      "runs": {str(s): h for s, h in health.items()}}, indent=1))
    # what must hold at any size: every stage of both runs reported, with as many generations as asked
    assert all(list(health[s]["wrong"]) == ["before", "base", "task"] and list(health[s]["fix"]) == ["before", "task"]
               for s in a.seeds)


if __name__ == "__main__":
    main()
