"""What a FOMAML meta-step costs over the passes it cannot avoid: one meta-step (M tasks x (K inner
steps + 1 query), through FOMAMLTrainer) against M*(K+1) forward+backward passes of plain SFT on the
very same batches plus one optimizer step, same model and LoRA adapter, same process. Goal: <= 1.10x.

    .venv/bin/python bench/fomaml_cost.py [--tasks 4] [--inner 5] [--batch 4] [--length 128] [--steps 6]
                                          [--repeats 3] [--smoke]

Rows are real poems (data/tang_poems.jsonl) tokenized with builtin:tiny's tokenizer, cut to --length.
Each meta-step is timed by a Trainer callback (step begin to step end: inner loops, query backwards,
optimizer step); the first step of a run is warm-up and not counted. Runs alternate and the best run
is reported (other jobs on a shared machine only ever slow a run down); medians are printed too.
On builtin:tiny the fixed per-pass costs weigh more than on a real model, so the ratio is a worst case.
No GPU numbers here unless this runs on one (the device is printed).
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


def token_rows(tok, n: int, length: int) -> list[tuple[list[int], list[int]]]:
    rows = []
    with open(REPO / "data" / "tang_poems.jsonl", encoding="utf-8") as f:
        for line in f:
            p = json.loads(line)
            ids = tok("\n".join(p["paragraphs"]))["input_ids"][:length]
            if len(ids) >= 8:
                rows.append((ids, list(ids)))
            if len(rows) == n:
                break
    return rows


def model(seed: int = 0):
    import torch
    from peft import LoraConfig, get_peft_model

    from runner.builtin import load_model_and_tokenizer

    torch.set_flush_denormal(True)
    net, tok = load_model_and_tokenizer("builtin:tiny", seed=seed)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    return get_peft_model(net, lora), tok


def items(tok, a) -> list[dict]:
    from runner.train.meta_data import collate

    rows = token_rows(tok, a.tasks * (a.inner + 1) * a.batch * a.steps, a.length)
    out, i = [], 0
    for _ in range(a.steps):
        tasks = []
        for _ in range(a.tasks):
            batches = []
            for _ in range(a.inner + 1):
                batches.append(collate(rows[i:i + a.batch], tok.pad_token_id or 0))
                i += a.batch
            tasks.append({"support": batches[:-1], "query": batches[-1]})
        out.append({"tasks": tasks})
    return out


def run_meta(data, tok, out: Path) -> list[float]:
    from transformers import TrainerCallback

    from runner.trainers.fomaml.fomaml_config import FOMAMLConfig
    from runner.trainers.fomaml.fomaml_trainer import FOMAMLTrainer

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    net, _ = model()
    args = FOMAMLConfig(output_dir=str(out), max_steps=len(data), learning_rate=1e-4, inner_learning_rate=1e-3,
                        per_device_train_batch_size=1, bf16=False, report_to="none", save_strategy="no",
                        logging_steps=10 ** 6, activation_checkpointing=False, disable_tqdm=True,
                        use_cpu=not _cuda(), adaptation_log_steps=10 ** 6)
    trainer = FOMAMLTrainer(model=net, args=args, train_dataset=data, processing_class=tok, callbacks=[Clock()])
    trainer.train()
    return times[1:] or times


def run_plain(data, tok) -> list[float]:
    import torch

    net, _ = model()
    device = "cuda" if _cuda() else "cpu"
    net.to(device).train()
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for item in data:
        batches = [{k: v.to(device) for k, v in b.items()} for t in item["tasks"] for b in (*t["support"], t["query"])]
        _sync()
        t0 = time.perf_counter()
        for b in batches:
            net(**b).loss.backward()
        opt.step()
        opt.zero_grad()
        _sync()
        times.append(time.perf_counter() - t0)
    return times[1:] or times


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def _sync() -> None:
    import torch
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--inner", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat (CI)")
    a = ap.parse_args(argv)
    if a.smoke:
        a.tasks, a.inner, a.batch, a.length, a.steps, a.repeats = 2, 1, 2, 32, 3, 1
    import torch
    torch.set_num_threads(max(1, torch.get_num_threads()))
    _, tok = model()
    data = items(tok, a)
    meta, plain = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            meta.append(statistics.median(run_meta(data, tok, Path(tmp) / f"m{r}")))
            plain.append(statistics.median(run_plain(data, tok)))
    best_m, best_p = min(meta), min(plain)
    ratio = best_m / best_p
    passes = a.tasks * (a.inner + 1)
    print(f"device: {'cuda ' + torch.cuda.get_device_name() if _cuda() else 'cpu'}; builtin:tiny + LoRA r8; "
          f"M={a.tasks} tasks x (K={a.inner} + 1) batches of {a.batch} x <= {a.length} tokens = {passes} passes/step")
    print(f"meta-step (FOMAMLTrainer):        best {best_m * 1000:8.1f} ms   median {statistics.median(meta) * 1000:8.1f} ms")
    print(f"{passes} fwd+bwd + 1 optimizer step: best {best_p * 1000:8.1f} ms   median {statistics.median(plain) * 1000:8.1f} ms")
    print(f"ratio {ratio:.3f}x (goal <= 1.10x){'' if ratio <= 1.10 else '  -- over the goal'}")
    assert best_m > 0 and best_p > 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
