"""Does FOMAML adapt better than the SFT control on held-out tasks? The comparison, reproducibly.

Runs a meta recipe (default recipes/verse_rules.yaml on builtin:tiny) through `recipe run`: the starting
model, the SFT control and FOMAML, each adapted to every held-out task with k shots (eval.few_shot, several
seeds), then prints per model and k the test loss and exact match after adaptation (mean ± sd over tasks x
seeds: today's spread) and, paired by task and seed, the mean difference between the models and its
standard error (clear: more than twice it). The whole summary goes to --json.

    .venv/bin/python bench/fomaml_family.py [--recipe recipes/verse_rules.yaml] [--set KEY=VALUE ...]
                                            [--cache-dir DIR] [--json OUT.json] [--smoke]
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAIRS = [("fomaml", "sft_control"), ("fomaml", "start"), ("sft_control", "start")]
SMOKE = ["model.base=builtin:tiny-random", "meta.total_steps=2", "meta.inner.steps=2",
         "meta.outer.meta_batch_size=2", "meta.few_shot_eval.held_out_tasks=2", "meta.few_shot_eval.seeds=2",
         "meta.few_shot_eval.shots=[5]", "meta.few_shot_eval.answer_max_new_tokens=3"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=str(REPO / "recipes" / "verse_rules.yaml"))
    p.add_argument("--set", action="append", default=[], dest="overrides")
    p.add_argument("--cache-dir", default=None, help="keep the run's steps (default: a temp dir)")
    p.add_argument("--json", default=None, help="write the rows and the paired summary here")
    p.add_argument("--smoke", action="store_true", help="the random model, 2 meta-steps, 2 held-out tasks, k=5")
    args = p.parse_args(argv)

    from rich.console import Console

    from runner import api
    from runner.train.few_shot import paired, summarise

    overrides = ["model.base=builtin:tiny", *args.overrides, *(SMOKE if args.smoke else [])]
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or str(Path(tmp) / "cache")
        start = time.perf_counter()
        api.run(args.recipe, overrides, cache_dir=cache, output=str(Path(tmp) / "run"), console=Console(file=io.StringIO()))
        wall = time.perf_counter() - start
        plan = api.plan(args.recipe, overrides, cache_dir=cache)
        fp = {s.name: s.fingerprint for s in plan.steps}
        rows = json.loads((plan.cache.object_dir(fp["eval.few_shot"]) / "few_shot.json").read_text())["rows"]
        seconds = {n: json.loads((plan.cache.object_dir(fp[n]) / "metrics.json").read_text()).get("seconds")
                   for n in ("train.meta", "train.control") if (plan.cache.object_dir(fp[n]) / "metrics.json").exists()}
    summary = summarise(rows)
    shots = sorted({r["shots"] for r in rows})
    pairs = [paired(rows, k, a, b) for k in shots for a, b in PAIRS]
    print(f"{Path(args.recipe).name} ({' '.join(overrides)}): {len({r['task'] for r in rows})} held-out tasks, "
          f"{len({r['seed'] for r in rows})} seeds; recipe run {wall:.0f} s (training: "
          + ", ".join(f"{n} {s:.0f} s" for n, s in seconds.items() if s is not None) + ")")
    for v in summary["verdict"]:
        print(v + ".")
    print(f"{'model':<12}{'k':>3}{'loss before':>13}{'loss after (sd)':>22}{'exact before':>14}{'exact after (sd)':>20}")
    for t in sorted(summary["table"], key=lambda t: (t["shots"], t["loss_after"])):
        acc = (f"{t['exact_before']:>14.1%}{t['exact_after']:>12.1%} ± {t['exact_after_sd']:.1%}" if "exact_after" in t else "")
        print(f"{t['model']:<12}{t['shots']:>3}{t['loss_before']:>13.4f}{t['loss_after']:>13.4f} ± {t['loss_after_sd']:.4f}{acc}")
    print("paired by task and seed (a − b: mean ± standard error; clear = more than twice it):")
    for d in pairs:
        cells = [f"{key} {d[key]['mean_diff']:+.4f} ± {d[key]['se']:.4f}{' clear' if d[key]['clear'] else ''}"
                 for key in ("loss_after", "exact_after", "accuracy") if key in d]
        print(f"  k={d['shots']:<3} {d['a']} − {d['b']} (n={d['n']}): " + "; ".join(cells))
    if args.json:
        Path(args.json).write_text(json.dumps({"overrides": overrides, "wall_s": wall, "train_s": seconds,
                                               "rows": rows, "summary": summary, "paired": pairs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
