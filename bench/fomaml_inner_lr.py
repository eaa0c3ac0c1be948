"""Which `meta.inner.learning_rate` makes the inner loop adapt? A sweep, before spending a meta-training run.

FOMAML only learns something a plain multi-task fine-tune does not when the inner loop moves the model:
with a fresh LoRA adapter (B = 0) a small inner rate barely changes the loss on a task's test rows, and
the meta-gradient is then just the query loss gradient. This builds a meta recipe's tasks (cached, as
`recipe run --only tasks` would), then adapts the *starting* model (the base with a fresh adapter) to
each held-out task with k shots at each inner rate, exactly as eval.few_shot does, and prints the test
loss before and after: mean and spread over tasks x seeds. Pick the largest rate whose gain is clearly
positive at every k (a rate too high makes the loss after rise again).

    .venv/bin/python bench/fomaml_inner_lr.py [--recipe recipes/fomaml_poets.yaml] [--set KEY=VALUE ...]
                                              [--lrs 1e-4,1e-3,1e-2,3e-2,1e-1] [--smoke]

builtin:tiny by default (--set model.base=... to change it). Output: one line per rate and k.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default=str(REPO / "recipes" / "fomaml_poets.yaml"))
    p.add_argument("--set", action="append", default=[], dest="overrides")
    p.add_argument("--lrs", default="1e-4,1e-3,1e-2,3e-2,1e-1")
    p.add_argument("--cache-dir", default=None, help="keep the built tasks between runs (default: a temp dir)")
    p.add_argument("--smoke", action="store_true", help="tiny: the random model, 2 small tasks, 2 rates, 1 seed")
    args = p.parse_args(argv)

    from rich.console import Console

    from runner import api
    from runner.steps.base import StepId
    from runner.train.few_shot import evaluate
    from runner.train.spec import FewShotSpec

    overrides = ["model.base=builtin:tiny", *args.overrides]
    lrs = [float(x) for x in args.lrs.split(",")]
    if args.smoke:
        overrides += ["model.base=builtin:tiny-random", "sources.tang.limit=1500", "meta.tasks.min_rows=30",
                      "meta.tasks.max_tasks=4", "meta.few_shot_eval.held_out_tasks=2", "meta.few_shot_eval.seeds=1",
                      "meta.few_shot_eval.shots=[5]", "meta.inner.steps=2", "template.max_length=128"]
        lrs = lrs[:2]
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or str(Path(tmp) / "cache")
        api.run(args.recipe, overrides, cache_dir=cache, output=str(Path(tmp) / "run"), dry_run=True,
                console=Console(file=io.StringIO()))   # the bench prints its own table
        plan = api.plan(args.recipe, overrides, cache_dir=cache)
        fp = {s.name: s.fingerprint for s in plan.steps}
        held = json.loads((plan.cache.object_dir(fp["tasks"]) / "plan.json").read_text())["held_out"]
        records = plan.cache.object_dir(fp["split"]) / "tasks"
        tasks_dir = plan.cache.object_dir(fp["render.tasks"]) / "tasks"
        step = next(s for s in plan.graph.steps if s.id == StepId("few_shot"))
        base = FewShotSpec.of(step.params, Path(args.recipe).resolve().parent)
        r = base.few_shot_eval
        print(f"{Path(args.recipe).name} on {base.model.base}: {len(held)} held-out tasks "
              f"({', '.join(t['name'] for t in held)}), shots {list(r.shots)}, {r.seeds} seeds, "
              f"{base.inner.steps} inner steps of batch {base.inner.batch_size}")
        print(f"{'inner lr':>9} {'k':>3} {'loss before':>12} {'loss after':>18} {'gain':>18} {'seconds':>8}")
        for lr in lrs:
            spec = dataclasses.replace(base, inner=dataclasses.replace(base.inner, learning_rate=lr))
            start = time.perf_counter()
            rows = evaluate(spec, {"start": None}, held, tasks_dir, records, log=lambda _: None)
            took = time.perf_counter() - start
            for k in r.shots:
                rs = [x for x in rows if x["shots"] == k]
                after = [x["loss_after"] for x in rs]
                gain = [x["loss_before"] - x["loss_after"] for x in rs]
                print(f"{lr:>9g} {k:>3} {statistics.mean(x['loss_before'] for x in rs):>12.4f} "
                      f"{statistics.mean(after):>10.4f} ± {_sd(after):.4f} {statistics.mean(gain):>10.4f} ± "
                      f"{_sd(gain):.4f} {took:>8.1f}")
    return 0


def _sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


if __name__ == "__main__":
    sys.exit(main())
