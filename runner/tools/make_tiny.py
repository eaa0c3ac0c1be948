"""Build builtin:tiny's weights: pretrain with the project's own runner, then ship the result.

    python -m runner.tools.make_tiny                       # `make tiny-model`: both phases (~1.5 h on a CPU)
    python -m runner.tools.make_tiny --checkpoint DIR      # phase 1 from a saved checkpoint of its run
    python -m runner.tools.make_tiny --chat-from DIR       # phase 2 only, from phase-1 weights in DIR

Phase 1, `recipes/tiny_pretrain.yaml`: plain text (the `text` template), every token, full weights, from
a random init. Phase 2, `recipes/tiny_chat.yaml`: the same corpora written as chatml conversations, from
phase 1's weights, so the model has seen `<|im_start|>`/`<|im_end|>` as real base models have (a LoRA
fine-tune cannot teach a base to write a marker whose embedding never trained, so it would never stop).
Before them, data/heldout_eval.jsonl (the rows the shipped recipes evaluate on, kept out of both) is
rebuilt and checked against the committed one. The shipped files: runner/builtin/tiny/model.safetensors
and manifest.json (each phase's recipe, data fingerprint, tokens seen, train loss log and eval loss per
source; the random init's eval loss). CI and `make test` never run this.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "tiny_pretrain.yaml"
CHAT_RECIPE = ROOT / "recipes" / "tiny_chat.yaml"
from runner.builtin import tiny_path  # noqa: E402
from runner.sources.local import hash_file as sha256  # noqa: E402  (the one file hash)

TINY = tiny_path()   # where the shipped weights and manifest go (package data of runner.builtin)


def evaluate_checkpoint(checkpoint: Path | None, cache: Path) -> dict:
    """Eval loss per source of a checkpoint (None: the random init), on the recipe's eval rows, as
    eval.main computes it."""
    from runner import api
    from runner.dag.compile import compile_recipe
    from runner.steps.base import StepId
    from runner.train.evaluate import evaluate_stage
    from runner.train.spec import EvalSpec

    recipe = api.load(RECIPE)
    index = json.loads((cache / "index" / recipe.name / "render.main.json").read_text())
    rendered = cache / "objects" / index["fingerprint"] / "eval"
    step = compile_recipe(recipe)[StepId("evaluate", stage="main")]   # what eval.main declares
    result = evaluate_stage(EvalSpec.of(step.params, recipe.file.parent, stage="main"), checkpoint,
                            {f.stem: f for f in sorted(rendered.glob("*.jsonl"))}, eval_records={},
                            batch_size=step.runtime["batch_size"])
    return {"loss": {s: v["loss"] for s, v in result["loss"].items()}, "samples": result["samples"],
            "data_fingerprint": index["fingerprint"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, help="a checkpoint-N folder of the run to ship instead of its end")
    p.add_argument("--output", type=Path, default=ROOT / "runs" / "tiny_pretrain")
    p.add_argument("--cache-dir", type=Path, default=ROOT / "recipes" / ".recipe" / "cache")
    p.add_argument("--no-run", action="store_true", help="package the runs already in --output / --cache-dir")
    p.add_argument("--chat-output", type=Path, default=ROOT / "runs" / "tiny_chat")
    p.add_argument("--chat-from", type=Path,
                   help="run phase 2 only, from the phase-1 weights in this folder (the manifest keeps phase 1's record)")
    args = p.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if args.chat_from:
        manifest = json.loads((TINY / "manifest.json").read_text(encoding="utf-8"))
        manifest.pop("chat_phase", None)
        ship(chat_phase(args.chat_from, args, env), manifest)
        return

    committed = (ROOT / "data" / "heldout_eval.jsonl").read_bytes()
    subprocess.run([sys.executable, "-m", "runner.tools.make_heldout"], check=True, cwd=ROOT, env=env)
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

    manifest = {
        "model": "builtin:tiny",
        "recipe": "recipes/tiny_pretrain.yaml",
        "recipe_sha256": sha256(RECIPE),
        "heldout": "data/heldout_eval.jsonl",
        "heldout_sha256": sha256(ROOT / "data" / "heldout_eval.jsonl"),
        "data_fingerprint": after["data_fingerprint"],
        "source": note,
        "optimizer_steps": steps,
        "tokens_seen": tokens,
        "train_loss_final": losses[-1] if losses else None,   # mean over the last logging window
        "train_loss_log": [{"step": h["step"], "loss": round(h["loss"], 4)} for h in history if "loss" in h],
        "eval_loss": {s: round(v, 4) for s, v in after["loss"].items()},
        "eval_loss_random_init": {s: round(v, 4) for s, v in before.items()} if before else None,
        "samples": [{"prompt": s["prompt"], "output": s.get("output", s.get("text"))} for s in after["samples"]],
    }
    ship(chat_phase(weights_dir, args, env), manifest)


def chat_phase(phase1: Path, args, env: dict) -> tuple[Path, dict]:
    """Run recipes/tiny_chat.yaml from the phase-1 weights in `phase1`: (its final weights, its record)."""
    if not args.no_run:
        subprocess.run([sys.executable, "-m", "runner", "run", str(CHAT_RECIPE), "--set",
                        f"model.init_from={phase1.resolve()}", "--output", str(args.chat_output),
                        "--cache-dir", str(args.cache_dir)], check=True, cwd=ROOT, env=env)
    report = json.loads((args.chat_output / "report.json").read_text())
    stage = report["stages"][0]
    train_fp = next(s["fingerprint"] for s in report["steps"] if s["name"] == "train.main")
    history = json.loads((args.cache_dir / "objects" / train_fp / "log_history.json").read_text())
    record = {
        "recipe": "recipes/tiny_chat.yaml",
        "recipe_sha256": sha256(CHAT_RECIPE),
        "init_from_sha256": sha256(phase1 / "model.safetensors"),
        "data_fingerprint": stage["data_fingerprint"],
        "optimizer_steps": stage["metrics"]["train"]["steps"],
        "tokens_seen": stage["metrics"]["train"]["tokens"],
        "train_loss_log": [{"step": h["step"], "loss": round(h["loss"], 4)} for h in history if "loss" in h],
        "eval_loss_before": {s: round(v, 4) for s, v in report["forgetting"]["before"].items()},
        "eval_loss": {s: round(v, 4) for s, v in report["forgetting"]["main"].items()},   # chatml, every token
        "generation_health": report.get("generation_health"),
        "samples": [{"prompt": s["prompt"], "output": s.get("output", s.get("text"))}
                    for s in stage["metrics"]["eval"].get("samples", [])],
    }
    return args.chat_output / "main" / "final", record


def ship(phase2: tuple[Path, dict], manifest: dict) -> None:
    weights_dir, record = phase2
    shutil.copyfile(weights_dir / "model.safetensors", TINY / "model.safetensors")
    manifest.update(weights="model.safetensors", weights_sha256=sha256(TINY / "model.safetensors"), chat_phase=record)
    (TINY / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {TINY / 'model.safetensors'} ({(TINY / 'model.safetensors').stat().st_size / 2**20:.1f} MiB) "
          f"and manifest.json: phase 1 {manifest['optimizer_steps']} steps, eval loss {manifest['eval_loss']}; "
          f"phase 2 (chatml) {record['optimizer_steps']} steps, eval loss {record['eval_loss']}")


if __name__ == "__main__":
    main()
