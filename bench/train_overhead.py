"""Training throughput: our train_stage against a hand-written TRL SFTTrainer script on the same
model, rows and settings, in the same session; then packing against padding on poetry data.

    .venv/bin/python bench/train_overhead.py [--rows 512] [--steps 20] [--repeats 5] [--smoke]

Throughput is the trained tokens (SFTTrainer's non-padding `num_tokens`, from the log) over the
time spent in SFTTrainer.train, timed by the same wrapper on both sides: wall-clock, and CPU time of
this process. Runs alternate, and the best of the repeats is reported (as timeit does: other jobs
on the machine only ever slow a run down, so the fastest run is the least disturbed one); the
median is printed too. End-to-end wall time (load, render, train, save) is the median.
The model is builtin:tiny on whatever device this is, so the per-step framework overhead weighs
much more than it would on a real model: the ratio is a worst case for our overhead.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from _poems import rendered, write_messages  # noqa: E402

RECIPE = """\
recipe: bench_train
seed: 42
model:
  base: builtin:tiny
  adapter: {{type: lora, r: 8, alpha: 16, dropout: 0.05,
            target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}}
sources:
  tang: {{path: {data}/tang_poems.jsonl, format: fields,
         fields: {{user: "{{{{ paragraphs[0] }}}}", assistant: "{{{{ paragraphs[1:] | join('\\n') }}}}"}}}}
template: {{chat: chatml, system: "你是一位精通唐詩的助手。", max_length: 256}}
train: {{max_steps: {steps}, micro_batch_size: 8, batch_size: 16, learning_rate: 2.0e-4,
        save_steps: 100000, logging_steps: 5, packing: {packing}}}
"""


_TIMES: list[tuple[float, float]] = []


def time_sft_train() -> None:
    """Record (wall, cpu) seconds of every SFTTrainer.train call, whoever makes it."""
    from trl import SFTTrainer

    train = SFTTrainer.train

    def timed(self, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return train(self, *args, **kwargs)
        finally:
            _TIMES.append((time.perf_counter() - wall, time.process_time() - cpu))

    SFTTrainer.train = timed


def throughput(log_history: list[dict]) -> tuple[float, float]:
    """(tokens per wall second, tokens per CPU second) of the last train call."""
    tokens = max(h["num_tokens"] for h in log_history if "num_tokens" in h)
    wall, cpu = _TIMES[-1]
    return tokens / wall, tokens / cpu


def ours(recipe, rows: Path, out: Path) -> tuple[float, float, float]:
    from runner.steps.train import stage_spec
    from runner.trainers.sft.driver import train as train_stage

    rows = rendered(recipe, rows, out.with_name(out.name + ".rows.jsonl"))
    start = time.perf_counter()
    train_stage(stage_spec(recipe, recipe.stages[0].name), rows, out, resume=False)
    wall = time.perf_counter() - start
    return *throughput(json.loads((out / "log_history.json").read_text())), wall


def hand_written(recipe, rows: Path, out: Path) -> tuple[float, float, float]:
    """What a user would write with TRL directly: same model, rows, masks and settings."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from runner.builtin import load_model_and_tokenizer
    from runner.chat.templates import render
    from runner.trainers.sft.sft_config import _checkpointing, supported   # the field's name depends on the version

    start = time.perf_counter()
    model, tok = load_model_and_tokenizer("builtin:tiny", seed=42)
    ids, labels = [], []
    for line in open(rows, encoding="utf-8"):
        r = render(json.loads(line)["messages"], tok, chat="chatml", system="你是一位精通唐詩的助手。",
                   train_on="assistant", max_length=256)
        ids.append(r.input_ids)
        labels.append(r.labels)
    t = recipe.train
    args = SFTConfig(
        output_dir=str(out), max_steps=t.max_steps, learning_rate=t.learning_rate, lr_scheduler_type="cosine",
        per_device_train_batch_size=t.micro_batch_size, gradient_accumulation_steps=t.grad_accum,
        bf16=False, **{_checkpointing(supported(SFTConfig)): False}, max_length=256, packing=t.packing, padding_free=t.packing,
        seed=42, logging_steps=t.logging_steps, save_strategy="no", report_to="none", disable_tqdm=True,
        use_cpu=not torch.cuda.is_available())
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    trainer = SFTTrainer(model=model, args=args, processing_class=tok, peft_config=lora,
                         train_dataset=Dataset.from_dict({"input_ids": ids, "labels": labels}))
    trainer.train()
    trainer.save_model(str(out / "final"))
    wall = time.perf_counter() - start
    return *throughput(trainer.state.log_history), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="32 poems, 2 steps, 1 repeat (CI)")
    a = ap.parse_args()
    if a.smoke:
        a.rows, a.steps, a.repeats = 32, 2, 1

    import logging
    import os
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    logging.disable(logging.WARNING)
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    import datasets
    datasets.disable_progress_bars()

    from runner import api

    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    rows = write_messages(tmp / "poems.jsonl", a.rows)

    def recipe(packing: bool):
        path = tmp / f"recipe_{packing}.yaml"
        path.write_text(RECIPE.format(data=REPO / "data", steps=a.steps, packing=str(packing).lower()))
        return api.load(path)

    plain, packed = recipe(False), recipe(True)
    time_sft_train()
    results: dict[str, list[tuple[float, float, float]]] = {"ours": [], "trl": [], "ours_packed": []}
    import contextlib
    import io
    for k in range(a.repeats):
        for name, fn, r in (("ours", ours, plain), ("trl", hand_written, plain), ("ours_packed", ours, packed)):
            with contextlib.redirect_stdout(io.StringIO()):      # Trainer prints every log line
                results[name].append(fn(r, rows, tmp / f"{name}{k}"))

    best = {name: [max(x[i] for x in v) for i in range(2)] for name, v in results.items()}
    med = {name: [statistics.median(x[i] for x in v) for i in range(3)] for name, v in results.items()}
    print(f"builtin:tiny, {a.rows} poems, {a.steps} steps of 16 rows, {a.repeats} repeats")
    print(f"{'':28}{'tokens/s best':>14}{'median':>8}{'tokens/cpu-s best':>19}{'wall s':>8}")
    for label, name in (("hand-written TRL SFTTrainer", "trl"), ("train_stage", "ours"),
                        ("train_stage, packing", "ours_packed")):
        print(f"{label:28}{best[name][0]:>14.0f}{med[name][0]:>8.0f}{best[name][1]:>19.0f}{med[name][2]:>8.2f}")
    print(f"train_stage / TRL throughput: {best['ours'][0] / best['trl'][0]:.3f}x "
          f"(cpu {best['ours'][1] / best['trl'][1]:.3f}x, median {med['ours'][0] / med['trl'][0]:.3f}x; "
          f"goal >= 0.97x)")
    print(f"packing / padding throughput: {best['ours_packed'][0] / best['ours'][0]:.2f}x "
          f"(cpu {best['ours_packed'][1] / best['ours'][1]:.2f}x)")


if __name__ == "__main__":
    main()
