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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAIRS = [("fomaml", "sft_control"), ("fomaml", "start"), ("sft_control", "start")]
SMOKE = ["model.base=builtin:tiny-random", "meta.total_steps=2", "meta.inner.steps=2",
         "meta.outer.meta_batch_size=2", "meta.few_shot_eval.held_out_tasks=2", "meta.few_shot_eval.seeds=2",
         "meta.few_shot_eval.shots=[5]"]
# model in eval.few_shot's rows -> the training step that makes it (None: the base with a fresh adapter)
MODELS = {"start": None, "sft_control": "train.control", "fomaml": "train.meta"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=str(REPO / "recipes" / "verse_rules.yaml"))
    p.add_argument("--set", action="append", default=[], dest="overrides")
    p.add_argument("--cache-dir", default=None, help="keep the run's steps (default: a temp dir)")
    p.add_argument("--json", default=None, help="write the rows and the paired summary here")
    p.add_argument("--smoke", action="store_true", help="the random model, 2 meta-steps, 2 held-out tasks, k=5")
    p.add_argument("--worker", nargs=2, metavar=("MODEL", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    overrides = ["model.base=builtin:tiny", *args.overrides, *(SMOKE if args.smoke else [])]
    if args.worker:
        return worker(args.recipe, overrides, args.cache_dir, *args.worker)
    from runner.train.few_shot import paired, summarise

    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or str(Path(tmp) / "cache")
        start = time.perf_counter()
        if args.smoke:
            args.recipe = _few_tasks(Path(args.recipe), Path(tmp), 6)
        for step in ("tasks", "render.tasks"):      # the data steps, once, before the workers share them
            _run(args.recipe, overrides, cache, tmp, step)
        # one process per model (train it, then adapt it to every held-out task), as eval.few_shot would one
        # after the other: the same rows, in a third of the wall time on a machine with cores to spare
        procs = {m: subprocess.Popen([sys.executable, __file__, "--recipe", args.recipe, "--cache-dir", cache,
                                      "--worker", m, str(Path(tmp) / f"{m}.json"), *(f"--set={o}" for o in args.overrides),
                                      *(["--smoke"] if args.smoke else [])]) for m in MODELS}
        failed = [m for m, proc in procs.items() if proc.wait()]
        if failed:
            print(f"failed: {', '.join(failed)}", file=sys.stderr)
            return 1
        wall = time.perf_counter() - start
        done = {m: json.loads((Path(tmp) / f"{m}.json").read_text()) for m in MODELS}
        rows = [r for m in MODELS for r in done[m]["rows"]]
        seconds = {m: done[m]["train_s"] for m in MODELS if done[m]["train_s"] is not None}
    summary = summarise(rows)
    shots = sorted({r["shots"] for r in rows})
    pairs = [paired(rows, k, a, b) for k in shots for a, b in PAIRS]
    print(f"{Path(args.recipe).name} ({' '.join(overrides)}): {len({r['task'] for r in rows})} held-out tasks, "
          f"{len({r['seed'] for r in rows})} seeds; wall {wall:.0f} s (training: "
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


def _few_tasks(recipe: Path, tmp: Path, n: int) -> str:
    """The recipe with only its first n tasks (the smoke run's data steps in seconds), in tmp."""
    import yaml

    doc = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    base = recipe.resolve().parent

    def here(p: str) -> str:
        return str((base / p).resolve())
    doc["extends"] = here(doc["extends"])
    doc["meta"]["tasks"] = [{**t, **{part: [here(f) for f in t[part]] for part in ("support", "query", "test")}}
                            for t in doc["meta"]["tasks"][:n]]
    out = tmp / recipe.name
    out.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return str(out)


def _run(recipe: str, overrides: list[str], cache: str, tmp: str, only: str) -> None:
    from rich.console import Console

    from runner import api
    api.run(recipe, overrides, cache_dir=cache, output=str(Path(tmp) / f"run-{only}"), only=only,
            console=Console(file=io.StringIO()))   # the bench prints its own table


def worker(recipe: str, overrides: list[str], cache: str, model: str, out: str) -> int:
    """Train `model` (`recipe run --only` its step) and adapt it to the held-out tasks: eval.few_shot's rows."""
    from runner import api
    from runner.steps.base import StepId
    from runner.train.few_shot import evaluate
    from runner.train.spec import FewShotSpec

    step = MODELS[model]
    with tempfile.TemporaryDirectory() as tmp:
        if step:
            _run(recipe, overrides, cache, tmp, step)
    plan = api.plan(recipe, overrides, cache_dir=cache)
    fp = {s.name: s.fingerprint for s in plan.steps}
    folder = plan.cache.object_dir(fp[step]) if step else None
    held = json.loads((plan.cache.object_dir(fp["tasks"]) / "plan.json").read_text())["held_out"]
    few = next(s for s in plan.graph.steps if s.id == StepId("few_shot"))
    spec = FewShotSpec.of(few.params, Path(recipe).resolve().parent)
    rows = evaluate(spec, {model: folder / "final" if folder else None}, held,
                    plan.cache.object_dir(fp["render.tasks"]) / "tasks", plan.cache.object_dir(fp["split"]) / "tasks",
                    log=lambda line: print(line, flush=True))
    train_s = json.loads((folder / "metrics.json").read_text()).get("seconds") if folder else None
    Path(out).write_text(json.dumps({"rows": rows, "train_s": train_s}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
