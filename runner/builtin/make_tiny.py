"""Build builtin:tiny's weights: pretrain with the project's own runner, then ship the result.

    python -m runner.builtin.make_tiny                       # `make tiny-model`: the whole recipe (~1 h on a CPU core)
    python -m runner.builtin.make_tiny --checkpoint DIR      # ship a saved checkpoint of that run instead

Steps: rebuild data/heldout_eval.jsonl (the rows the shipped recipes evaluate on, kept out of
pretraining) and check it is the committed one; `recipe run recipes/tiny_pretrain.yaml`; copy the
weights to runner/builtin/tiny/model.safetensors and write runner/builtin/tiny/manifest.json: the
recipe, the data fingerprint, tokens seen, the final train loss and the eval loss per source (before
pretraining, i.e. the random init, and after). CI and `make test` never run this.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "tiny_pretrain.yaml"
TINY = Path(__file__).resolve().parent / "tiny"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def evaluate_checkpoint(checkpoint: Path | None, cache: Path) -> dict:
    """Eval loss per source of a checkpoint (None: the random init), on the recipe's eval rows, as
    eval.main computes it."""
    from runner import api
    from runner.dag.compile import compile_recipe
    from runner.steps.base import StepId
    from runner.train.evaluate import evaluate_stage
    from runner.train.spec import StageSpec

    recipe = api.load(RECIPE)
    index = json.loads((cache / "index" / recipe.name / "render.main.json").read_text())
    rendered = cache / "objects" / index["fingerprint"] / "eval"
    step = compile_recipe(recipe)[StepId("evaluate", stage="main")]   # what eval.main declares
    result = evaluate_stage(StageSpec.of(step.params, recipe.file.parent, stage="main"), checkpoint,
                            {f.stem: f for f in sorted(rendered.glob("*.jsonl"))}, eval_records={},
                            batch_size=step.runtime["batch_size"])
    return {"loss": {s: v["loss"] for s, v in result["loss"].items()}, "samples": result["samples"],
            "data_fingerprint": index["fingerprint"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, help="a checkpoint-N folder of the run to ship instead of its end")
    p.add_argument("--output", type=Path, default=ROOT / "runs" / "tiny_pretrain")
    p.add_argument("--cache-dir", type=Path, default=ROOT / "recipes" / ".recipe" / "cache")
    p.add_argument("--no-run", action="store_true", help="package the run already in --output / --cache-dir")
    args = p.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    committed = (ROOT / "data" / "heldout_eval.jsonl").read_bytes()
    subprocess.run([sys.executable, "-m", "runner.builtin.make_heldout"], check=True, cwd=ROOT, env=env)
    if (ROOT / "data" / "heldout_eval.jsonl").read_bytes() != committed:
        print("note: data/heldout_eval.jsonl changed (a shipped recipe's eval rows changed): commit it",
              file=sys.stderr)

    if args.checkpoint is None and not args.no_run:
        subprocess.run([sys.executable, "-m", "runner", "run", str(RECIPE), "--output", str(args.output),
                        "--cache-dir", str(args.cache_dir)], check=True, cwd=ROOT, env=env)
    report = json.loads((args.output / "report.json").read_text()) if (args.output / "report.json").exists() else None

    if args.checkpoint is None:
        weights_dir = args.output / "main" / "final"
        stage = report["stages"][0]
        train_fp = next(s["fingerprint"] for s in report["steps"] if s["name"] == "train.main")
        history = json.loads((args.cache_dir / "objects" / train_fp / "log_history.json").read_text())
        after = {"loss": report["forgetting"]["main"], "samples": stage["metrics"]["eval"].get("samples", []),
                 "data_fingerprint": stage["data_fingerprint"]}
        steps, tokens = stage["metrics"]["train"]["steps"], stage["metrics"]["train"]["tokens"]
        note = "the end of the run"
    else:
        weights_dir = args.checkpoint
        state = json.loads((args.checkpoint / "trainer_state.json").read_text())
        history = state["log_history"]
        after = evaluate_checkpoint(args.checkpoint, args.cache_dir)
        steps, tokens = state["global_step"], int(state.get("num_input_tokens_seen") or history[-1]["num_input_tokens_seen"])
        note = (f"checkpoint {args.checkpoint.name} of `recipe run recipes/tiny_pretrain.yaml` (max_steps "
                f"{state['max_steps']}), shipped before the run ended: the learning rate had not decayed to its end")
    losses = [h["loss"] for h in history if "loss" in h]
    before = evaluate_checkpoint(None, args.cache_dir)["loss"]   # the random init (builtin:tiny-scratch)

    shutil.copyfile(weights_dir / "model.safetensors", TINY / "model.safetensors")
    manifest = {
        "model": "builtin:tiny",
        "recipe": "recipes/tiny_pretrain.yaml",
        "recipe_sha256": sha256(RECIPE),
        "heldout": "data/heldout_eval.jsonl",
        "heldout_sha256": sha256(ROOT / "data" / "heldout_eval.jsonl"),
        "data_fingerprint": after["data_fingerprint"],
        "weights": "model.safetensors",
        "weights_sha256": sha256(TINY / "model.safetensors"),
        "source": note,
        "optimizer_steps": steps,
        "tokens_seen": tokens,
        "train_loss_final": losses[-1] if losses else None,   # mean over the last logging window
        "train_loss_log": [{"step": h["step"], "loss": round(h["loss"], 4)} for h in history if "loss" in h],
        "eval_loss": {s: round(v, 4) for s, v in after["loss"].items()},
        "eval_loss_random_init": {s: round(v, 4) for s, v in before.items()} if before else None,
        "samples": [{"prompt": s["prompt"], "output": s.get("output", s.get("text"))} for s in after["samples"]],
    }
    (TINY / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {TINY / 'model.safetensors'} ({(TINY / 'model.safetensors').stat().st_size / 2**20:.1f} MiB) "
          f"and manifest.json: {steps} steps, {tokens:,} tokens, eval loss {manifest['eval_loss']}")


if __name__ == "__main__":
    main()
