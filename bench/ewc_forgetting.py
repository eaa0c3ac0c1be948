"""Does EWC protect what earlier stages learned, and what does it cost? (seed 004's question)

Runs recipes/curriculum_3stage.yaml (base: general -> task: + identity/tools -> domain: + poetry) with
the same seeds at EWC lambda 0 (the Fisher is still computed: only the penalty differs) and at each
lambda asked for, on the pretrained builtin:tiny, and prints per stage the eval loss of every source
(mean and spread over seeds), how much the stage-1 (general) loss rises from stage `base` to stage
`domain`, what lambda costs on the sources the later stages add, and the penalty's size next to the
cross-entropy it is added to (calibration: a penalty far below the CE loss cannot hold anything).

    python bench/ewc_forgetting.py [--seeds 42 43 44] [--lambdas 0 0.05 0.5 50] [--lr 2e-3] [--steps 30] [--json out.json]
    python bench/ewc_forgetting.py --mix sequential   # later stages drop the earlier data (see --mix)
    python bench/ewc_forgetting.py --smoke     # builtin:tiny-random, one seed, a few steps (CI)

Reduced so that it runs on a CPU: each stage trains --steps optimizer steps on at most --rows rows,
evaluates on --eval-rows rows per source, and the Fisher uses --fisher-samples sequences.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _run import run_recipe

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "curriculum_3stage.yaml"
STAGES = ("before", "base", "task", "domain")
# recipe: the shipped mixes (general stays in every stage, 70% then 50%). sequential: each later stage
# trains only what it adds, the textbook continual-learning setting in which stage 1 has something to lose
MIXES = {"recipe": {}, "sequential": {"stages.task.mix": "{task: 1.0}", "stages.domain.mix": "{poetry: 1.0}"}}


def run(cache: Path, out: Path, *, model: str, seed: int, lam: float, a) -> dict:
    sets = {
        "model.base": model, "seed": seed,
        "stages.task.ewc.lambda": lam, "stages.domain.ewc.lambda": lam,
        "stages.task.ewc.fisher_samples": a.fisher_samples, "stages.domain.ewc.fisher_samples": a.fisher_samples,
        "train.max_steps": a.steps, "size": a.rows, "stages.domain.size": a.rows,
        "sources.poetry.limit": a.poetry_limit, "evaluate.max_rows": a.eval_rows,
        "evaluate.generate.prompts": "[]", "evaluate.generate.eval_prompts": 0,
    }
    sets.update(MIXES[a.mix])
    if a.lr is not None:
        sets["train.learning_rate"] = a.lr
    report = run_recipe(RECIPE, out, cache, sets)
    penalty = {}
    for step in report["steps"]:
        if step["kind"] == "train" and step["stage"] in ("task", "domain"):
            history = json.loads((cache / "objects" / step["fingerprint"] / "log_history.json").read_text())
            pen = [h["ewc_penalty"] for h in history if "ewc_penalty" in h]
            ce = [h["loss"] - h.get("ewc_penalty", 0.0) for h in history if "loss" in h]
            penalty[step["stage"]] = {"penalty_max": max(pen) if pen else 0.0,
                                      "penalty_mean": statistics.fmean(pen) if pen else 0.0,
                                      "ce_first": ce[0] if ce else None}
    return {"forgetting": report["forgetting"], "penalty": penalty}


def stats(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: list[float]) -> str:
    m, s = stats(values)
    return f"{m:6.3f} ± {s:5.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin:tiny")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    ap.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.05, 0.5],
                    help="0 is the baseline; the others are compared with it")
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per stage")
    ap.add_argument("--rows", type=int, default=320, help="rows per stage")
    ap.add_argument("--eval-rows", type=int, default=100, help="eval rows per source")
    ap.add_argument("--fisher-samples", type=int, default=64)
    ap.add_argument("--lr", type=float, help="learning rate of every stage (default: the recipe's, 2e-4, which "
                    "barely moves builtin:tiny's LoRA in a few dozen steps: nothing to forget)")
    ap.add_argument("--poetry-limit", type=int, default=3000, help="poems read (the filter tokenizes each)")
    ap.add_argument("--mix", choices=sorted(MIXES),
                    help="recipe (default): the shipped stage mixes; sequential: stage task trains on task only, "
                    "domain on poetry only (general is not revisited); --smoke's default")
    ap.add_argument("--json", type=Path, help="write every number here")
    ap.add_argument("--smoke", action="store_true", help="builtin:tiny-random, one seed, 2 steps: seconds (CI)")
    a = ap.parse_args()
    if a.smoke:
        a.model, a.seeds, a.lambdas, a.steps, a.rows, a.eval_rows, a.fisher_samples, a.poetry_limit = \
            "builtin:tiny-random", [42], [0.0, 0.5], 2, 16, 8, 4, 300
        a.mix = a.mix or "sequential"   # its --set overrides are what the e2e tests do not already run
    a.mix = a.mix or "recipe"
    lambdas = sorted(set([0.0, *a.lambdas]))
    results: dict[float, list[dict]] = {lam: [] for lam in lambdas}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        for seed in a.seeds:
            for lam in lambdas:
                results[lam].append(run(Path(d) / "cache", Path(d) / f"run_{seed}_{lam}", model=a.model,
                                        seed=seed, lam=lam, a=a))
                print(f"  seed {seed} lambda {lam:g}: done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    sources = sorted({s for runs in results.values() for r in runs for row in r["forgetting"].values() for s in row})
    print(f"curriculum_3stage ({a.mix} mixes) on {a.model}: seeds {a.seeds}, "
          f"learning rate {a.lr or 'of the recipe'}, "
          f"{a.steps} steps and <= {a.rows} rows per stage, "
          f"{a.eval_rows} eval rows per source, Fisher from {a.fisher_samples} sequences\n")
    for lam in lambdas:
        print(f"lambda {lam:g}: eval loss (mean ± sd over {len(a.seeds)} seeds)")
        print(f"  {'stage':8}" + "".join(f"{s:>18}" for s in sources))
        for stage in STAGES:
            if not all(stage in r["forgetting"] for r in results[lam]):
                continue
            print(f"  {stage:8}" + "".join(f"{fmt([r['forgetting'][stage][s] for r in results[lam]]):>18}"
                                          for s in sources))
        print()

    def rise(r: dict) -> float:   # how much stage 3 forgot of stage 1's general ability
        return r["forgetting"]["domain"]["general"] - r["forgetting"]["base"]["general"]

    summary = {}
    print("general loss rise from stage base to stage domain (forgetting), and the cost on later sources "
          "(stage-domain loss minus lambda 0's, paired by seed):")
    for lam in lambdas:
        row = {"general_rise": stats([rise(r) for r in results[lam]])}
        line = f"  lambda {lam:<8g} rise {fmt([rise(r) for r in results[lam]])}"
        if lam != 0.0:
            saved = [rise(b) - rise(r) for b, r in zip(results[0.0], results[lam])]
            row["rise_reduced_by"] = stats(saved)
            line += f"   reduced by {fmt(saved)}"
            for s in ("identity", "tools", "poetry"):
                cost = [r["forgetting"]["domain"][s] - b["forgetting"]["domain"][s]
                        for b, r in zip(results[0.0], results[lam])]
                row[f"cost_{s}"] = stats(cost)
                line += f"   {s} {fmt(cost)}"
        pen = [r["penalty"].get("domain", {}) for r in results[lam]]
        if lam != 0.0 and all(pen):
            row["penalty_max"] = stats([p["penalty_max"] for p in pen])
            row["ce_first"] = stats([p["ce_first"] for p in pen])
            line += (f"\n{'':19}stage domain: penalty up to {fmt([p['penalty_max'] for p in pen])} vs CE "
                     f"{fmt([p['ce_first'] for p in pen])} at its start")
        summary[lam] = row
        print(line)
    print(f"\n{time.perf_counter() - t0:.0f} s in all")
    if a.json:
        a.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "summary":
                                      {str(k): v for k, v in summary.items()},
                                      "runs": {str(k): v for k, v in results.items()}}, indent=1))
    for runs in results.values():   # what must hold at any size: every stage evaluated on every source
        assert all(set(r["forgetting"]) >= {"before", "base", "task", "domain"} for r in runs)


if __name__ == "__main__":
    main()
