"""GPU throughput of the shipped poetry recipe: ours, lever by lever, against a hand-written TRL script.

    python bench/gpu_throughput.py                      # Qwen2-1.5B shape (random init), on the GPU
    python bench/gpu_throughput.py --tiny --steps 3     # a tiny shape: runs on a CPU
    python bench/gpu_throughput.py --smoke              # CI: tiny shape, 2 steps, every variant this machine has
    python bench/gpu_throughput.py --levers plain,padding_free --out results.json

The model is built here from a Qwen2-1.5B-shaped config (28 layers, hidden 1536, 12 heads, 2 KV heads,
MLP 8960; random init, seeded) with builtin:tiny's tokenizer, so nothing comes from a hub. The recipe is
recipes/poetry_lora.yaml as shipped (its LoRA, template, learning-rate schedule, micro batch 2 x
accumulation 4 = 8 sequences per optimizer step), pointed at that model, on the first --rows poems
mapped as the recipe maps them. Every variant trains the same rows in the same order from the same
seed in this one process:

  trl            a hand-written TRL SFTTrainer script with TRL's defaults (bf16 on a GPU, gradient
                 checkpointing on, padded batches) and the recipe's batch, learning rate and LoRA
  plain          ours, the recipe as written
  padding_free   + train.padding_free (each micro batch one row, no pad tokens)
  auto           + train.micro_batch_size auto (largest micro batch that fits; accumulation recomputed)
  auto_pf        auto + padding_free
  liger          auto_pf + train.use_liger_kernel (CUDA with liger-kernel installed; skipped otherwise)
  compile        auto_pf + train.torch_compile
  all            every lever this machine has (padding-free, dynamic shapes)
  bucketed       auto + train.shapes bucketed (a few static shapes instead of padding-free)
  static         bucketed + train.torch_compile (one compiled graph per bucket, no recompiles)
  graphs         bucketed + train.torch_compile reduce-overhead (CUDA graphs replayed; CUDA only)
  graphs_liger   graphs + Liger (CUDA with liger-kernel installed)

Per variant: trained (non-padding) tokens per second and seconds per optimizer step, both over the
steps after --warmup (compilation and CUDA start-up excluded), MFU = 6 x parameters x tokens/s / the
card's dense bf16 peak (the usual 6N approximation; LoRA skips the weight gradients, so this
overstates the useful work a little), peak GPU memory, and the last logged loss (the same recipe
should land on the same loss whatever the lever). Ratios are against `trl` in the same run.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from _poems import rendered, write_messages  # noqa: E402

QWEN2_1_5B = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                  num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1_000_000.0,
                  tie_word_embeddings=True, rms_norm_eps=1e-6)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True)
from runner.train.stats import PEAK  # noqa: E402  (dense bf16 peak FLOP/s by card name: what MFU divides by)
LEVERS = {
    "plain": [],
    "padding_free": ["train.padding_free=true"],
    "auto": ["train.micro_batch_size=auto"],
    "auto_pf": ["train.micro_batch_size=auto", "train.padding_free=true"],
    "liger": ["train.micro_batch_size=auto", "train.padding_free=true", "train.use_liger_kernel=true"],
    "compile": ["train.micro_batch_size=auto", "train.padding_free=true", "train.torch_compile=true"],
    "all": ["train.micro_batch_size=auto", "train.padding_free=true", "train.use_liger_kernel=true",
            "train.torch_compile=true"],
    "bucketed": ["train.micro_batch_size=auto", "train.shapes=bucketed"],
    "static": ["train.micro_batch_size=auto", "train.shapes=bucketed", "train.torch_compile=true"],
    "graphs": ["train.micro_batch_size=auto", "train.shapes=bucketed", "train.torch_compile=reduce-overhead"],
    "graphs_liger": ["train.micro_batch_size=auto", "train.shapes=bucketed", "train.torch_compile=reduce-overhead",
                     "train.use_liger_kernel=true"],
}

_STEPS: list[float] = []


def record_steps() -> None:
    """perf_counter at the end of every optimizer step, whoever's trainer takes it."""
    from transformers.trainer_callback import CallbackHandler

    original = CallbackHandler.on_step_end

    def on_step_end(self, args, state, control):
        _STEPS.append(time.perf_counter())
        return original(self, args, state, control)
    CallbackHandler.on_step_end = on_step_end


def build_model(folder: Path, shape: dict, seed: int) -> Path:
    """A random Qwen2 of `shape` with builtin:tiny's tokenizer, saved where model.base can point."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from runner.builtin import tiny_path

    tok = AutoTokenizer.from_pretrained(tiny_path())
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, **shape)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def lever_available(name: str, cuda: bool, smoke: bool = False) -> str | None:
    """None when the lever runs here, else why not."""
    import importlib.util
    if smoke and name in ("compile", "all", "static") and not cuda:
        # inductor compiles C++ for a CPU for a minute or more; tests/test_train_levers.py covers it
        return "torch.compile on a CPU takes minutes to compile (--smoke stays under one)"
    if name in ("graphs", "graphs_liger") and not cuda:
        return "CUDA graphs need CUDA"
    if name in ("liger", "all", "graphs_liger") and not cuda:
        return "Liger needs CUDA"
    if name in ("liger", "all", "graphs_liger") and importlib.util.find_spec("liger_kernel") is None:
        return "liger-kernel is not installed"
    return None


def steady(first_step: int, warmup: int) -> tuple[float, int]:
    """(seconds, steps) over the steps after `warmup` of the run whose first step is _STEPS[first_step]."""
    times = _STEPS[first_step:]
    if len(times) <= warmup + 1:
        warmup = 0
    return times[-1] - times[warmup], len(times) - 1 - warmup


def ours(recipe, records: Path, out: Path, warmup: int) -> dict:
    from runner.steps.train import stage_spec
    from runner.trainers.sft.driver import train as train_stage

    rows = rendered(recipe, records, out.with_name(out.name + ".rows.jsonl"))
    first = len(_STEPS)
    with contextlib.redirect_stdout(io.StringIO()) as log:
        m = train_stage(stage_spec(recipe, recipe.stages[0].name), rows, out, resume=False)
    seconds, steps = steady(first, warmup)
    line = next((ln.strip() for ln in log.getvalue().splitlines() if ln.strip().startswith("training ")), "")
    history = json.loads((out / "log_history.json").read_text())
    return {"tokens": m["tokens"], "steps": m["steps"], "seconds": seconds, "timed_steps": steps,
            "loss": [h["loss"] for h in history if "loss" in h][-1], "setup": line}


def hand_written(recipe, model_dir: Path, records: Path, out: Path, warmup: int) -> dict:
    """What a user writes with TRL directly: the recipe's rows, masks, batch, schedule and LoRA,
    everything else TRL's defaults."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from runner.train.rows import pairs

    tok = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(recipe.seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    rows = pairs(rendered(recipe, records, out.with_name(out.name + ".rows.jsonl")))
    t, a = recipe.train, recipe.model.adapter
    args = SFTConfig(output_dir=str(out), max_steps=t.max_steps, learning_rate=t.learning_rate,
                     lr_scheduler_type=t.lr_scheduler, per_device_train_batch_size=t.micro_batch_size,
                     gradient_accumulation_steps=t.batch_size // t.micro_batch_size,
                     max_length=recipe.template.max_length, seed=recipe.seed, logging_steps=t.logging_steps,
                     save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
                     include_num_input_tokens_seen="non_padding",
                     **({} if torch.cuda.is_available() else {"bf16": False}))
    lora = LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=a.dropout, target_modules=list(a.target_modules),
                      task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, processing_class=tok, peft_config=lora,
                         train_dataset=Dataset.from_dict({"input_ids": [r[0] for r in rows],
                                                          "labels": [r[1] for r in rows]}))
    first = len(_STEPS)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train()
    seconds, steps = steady(first, warmup)
    return {"tokens": int(trainer.state.num_input_tokens_seen), "steps": trainer.state.global_step,
            "seconds": seconds, "timed_steps": steps,
            "loss": [h["loss"] for h in trainer.state.log_history if "loss" in h][-1],
            "setup": f"TRL defaults: bf16 {args.bf16}, gradient checkpointing {args.gradient_checkpointing}, "
                     f"padding_free {args.padding_free}"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a tiny model shape (runs on a CPU)")
    ap.add_argument("--smoke", action="store_true",
                    help="CI: --tiny, 2 steps, no DeepSpeed; checks that the levers keep the plain loss")
    ap.add_argument("--rows", type=int, default=None, help="poems to train on (default: 8 per step)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per variant (default 40; tiny 3)")
    ap.add_argument("--warmup", type=int, default=None, help="steps left out of the timing (default 5; tiny 0)")
    ap.add_argument("--levers", default="trl," + ",".join(LEVERS), help="comma-separated variants to run")
    ap.add_argument("--deepspeed", default="keep", help="keep the recipe's (zero2) or 'null' for none")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    a = ap.parse_args()
    if a.smoke:
        a.tiny, a.steps, a.deepspeed = True, a.steps or 2, "null"
    steps = a.steps or (3 if a.tiny else 40)
    warmup = a.warmup if a.warmup is not None else (0 if a.tiny else 5)
    rows = a.rows or 8 * steps

    import logging
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    logging.disable(logging.WARNING)
    import torch
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()

    from runner import api

    cuda = torch.cuda.is_available()
    card = torch.cuda.get_device_name() if cuda else "CPU"
    peak = next((v for k, v in PEAK.items() if k in card), None)
    tmp = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    model_dir = build_model(tmp / "model", TINY if a.tiny else QWEN2_1_5B, seed=42)
    records = write_messages(tmp / "poems.jsonl", rows)
    overrides = [f"model.base={model_dir}", f"train.max_steps={steps}", "train.save_steps=100000",
                 "train.logging_steps=1", "train.report_to=[]"]
    if a.deepspeed != "keep":
        overrides.append(f"train.deepspeed={a.deepspeed}")
    if a.smoke:
        overrides.append("model.adapter.dropout=0.0")   # dropout draws depend on the batch's shape (bucketed)
    from transformers import AutoModelForCausalLM
    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())
    record_steps()

    print(f"{card}; model {params / 1e9:.3f} B parameters ({'tiny' if a.tiny else 'Qwen2-1.5B'} shape, random); "
          f"{rows} poems; {steps} steps per variant, timing after step {warmup}", flush=True)
    results = {}
    for name in a.levers.split(","):
        why = lever_available(name, cuda, a.smoke) if name != "trl" else None
        if why:
            results[name] = {"skipped": why}
            print(f"  {name:13s} skipped: {why}", flush=True)
            continue
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        recipe = api.load(REPO / "recipes" / "poetry_lora.yaml", overrides + LEVERS.get(name, []))
        if name == "trl":
            r = hand_written(recipe, model_dir, records, tmp / name, warmup)
        else:
            r = ours(recipe, records, tmp / name, warmup)
        r["tokens_per_second"] = r["tokens"] / r["steps"] * r["timed_steps"] / r["seconds"] if r["seconds"] else 0.0
        r["seconds_per_step"] = r["seconds"] / r["timed_steps"] if r["timed_steps"] else 0.0
        r["mfu"] = 6 * params * r["tokens_per_second"] / peak if peak else None
        r["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9 if cuda else None
        results[name] = r
        base = results.get("trl", {}).get("tokens_per_second")
        ratio = f"{r['tokens_per_second'] / base:5.2f}x trl" if base else "        "
        mfu = f"MFU {100 * r['mfu']:5.1f}%" if r["mfu"] is not None else "MFU n/a"
        mem = f"peak {r['peak_memory_gb']:6.1f} GB" if r["peak_memory_gb"] is not None else "peak n/a"
        print(f"  {name:13s} {r['tokens_per_second']:10,.0f} tok/s  {r['seconds_per_step']:7.3f} s/step  {ratio}  "
              f"{mfu}  {mem}  loss {r['loss']:.4f}   [{r['setup']}]", flush=True)
    if a.smoke and not cuda and "loss" in results.get("plain", {}):
        # fp32 on a CPU: the same recipe lands on the same loss whatever the lever
        for name, r in results.items():
            if name != "trl" and "loss" in r:
                assert abs(r["loss"] - results["plain"]["loss"]) < 1e-4, (name, r["loss"], results["plain"]["loss"])
    if a.out:
        a.out.write_text(json.dumps({"device": card, "parameters": params, "steps": steps, "warmup": warmup,
                                     "rows": rows, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
