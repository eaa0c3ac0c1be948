"""Operators dispatched per optimizer step (a CPU count of what a GPU launches), lever by lever.

    python bench/dispatch_count.py                  # Qwen2-1.5B-shaped 2-layer slice, every lever
    python bench/dispatch_count.py --smoke          # CI: a tiny shape, the levers without torch.compile
    python bench/dispatch_count.py --levers plain,auto --out counts.json

The model is a 2-layer slice of Qwen2-1.5B's shape (hidden 1536, MLP 8960, 12 heads, 2 KV heads; random init,
seeded) with builtin:tiny's tokenizer, so its vocabulary is reduced from 151,936 to builtin:tiny's (the
embedding and LM head are one matmul each whatever their width, so the count is the same). The recipe is
recipes/poetry_lora.yaml (LoRA r=8 on q,k,v,o,gate,up,down; micro batch 2 x accumulation 4 = 8 poems per
optimizer step; fp32, no DeepSpeed) on real poems whose rendered length falls in one bucket (129-256 tokens),
so a compiled step sees the shapes of its first step again. Each variant trains STEPS optimizer steps in this
process from the same seed; torch.profiler records the last one, from the end of the step before to the end
of this one (data collation, forward, backward, optimizer, logging). A dispatch is an aten operator with no
aten operator below it (what would launch a kernel on a GPU) or a kernel torch.compile generated.

  plain       the recipe as written (micro batch 2 x accumulation 4)
  bucketed    + train.shapes bucketed
  auto        + train.micro_batch_size auto (8 on this CPU: one micro batch per optimizer step)
  compile     bucketed + train.torch_compile (inductor: fused kernels)
  best        auto + bucketed + torch_compile

Per variant: dispatches per optimizer step, the ratio to plain, whether the measured step compiled, and the
last loss (every lever must land on plain's). Transformers' fused AdamW is already the default optimizer
(torch >= 2.8), so it is in every variant.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from _poems import rendered, write_messages  # noqa: E402
from gpu_throughput import QWEN2_1_5B, TINY, build_model  # noqa: E402

SLICE = dict(QWEN2_1_5B, num_hidden_layers=2)
STEPS = 3
LEVERS = {
    "plain": [],
    "bucketed": ["train.shapes=bucketed"],
    "auto": ["train.micro_batch_size=auto"],
    "compile": ["train.shapes=bucketed", "train.torch_compile=true"],
    "best": ["train.micro_batch_size=auto", "train.shapes=bucketed", "train.torch_compile=true"],
}


class StepProfiler:
    """torch.profiler around the last optimizer step of a run (Trainer's on_step_end marks the steps)."""

    def __init__(self, last: int):
        self.last, self.prof, self.dispatches, self.compiled = last, None, None, None

    def on_step_end(self, step: int) -> None:
        import torch
        from torch._dynamo.utils import counters

        if step == self.last - 1:
            self.graphs = counters["stats"]["unique_graphs"]
            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.prof.__enter__()
        elif step == self.last and self.prof is not None:
            self.prof.__exit__(None, None, None)
            self.dispatches = count(self.prof.events())
            self.compiled = counters["stats"]["unique_graphs"] > self.graphs
            self.prof = None


def count(events) -> int:
    def aten(name: str) -> bool:
        return name.startswith("aten::")

    def generated(name: str) -> bool:
        return "cpp_fused" in name or name.startswith("triton_")
    return sum(1 for e in events if generated(e.name)
               or aten(e.name) and not any(aten(c.name) for c in e.cpu_children))


_CURRENT: list[StepProfiler] = []


def hook(profiler: StepProfiler) -> None:
    """Profile the next run with `profiler` (Trainer's step ends patched once per process)."""
    from transformers.trainer_callback import CallbackHandler

    if not _CURRENT:
        original = CallbackHandler.on_step_end

        def on_step_end(self, args, state, control):
            _CURRENT[-1].on_step_end(state.global_step)
            return original(self, args, state, control)
        CallbackHandler.on_step_end = on_step_end
    _CURRENT[:] = [profiler]


def one_bucket(recipe, tmp: Path, n: int, lo: int, hi: int) -> Path:
    """n real poems whose rendered rows are lo..hi tokens long, as the recipe renders them."""
    src = rendered(recipe, write_messages(tmp / "poems.jsonl", 2000), tmp / "all.jsonl")
    rows = [ln for ln in src.read_text(encoding="utf-8").splitlines() if lo <= len(json.loads(ln)["input_ids"]) <= hi]
    if len(rows) < n:
        raise SystemExit(f"only {len(rows)} poems render to {lo}-{hi} tokens; {n} needed")
    (tmp / "rows.jsonl").write_text("\n".join(rows[:n]) + "\n", encoding="utf-8")
    return tmp / "rows.jsonl"


def run(name: str, overrides: list[str], rows: Path, out: Path) -> dict:
    import torch

    from runner import api
    from runner.steps.train import stage_spec
    from runner.trainers.sft.driver import train as train_stage

    torch._dynamo.reset()
    profiler = StepProfiler(STEPS)
    hook(profiler)
    recipe = api.load(REPO / "recipes" / "poetry_lora.yaml", overrides + LEVERS[name])
    with contextlib.redirect_stdout(io.StringIO()) as log:
        m = train_stage(stage_spec(recipe, recipe.stages[0].name), rows, out, resume=False)
    history = json.loads((out / "log_history.json").read_text())
    setup = next((ln.strip() for ln in log.getvalue().splitlines() if ln.strip().startswith("training ")), "")
    return {"dispatches": profiler.dispatches, "compiled_in_step": profiler.compiled, "steps": m["steps"],
            "loss": [h["loss"] for h in history if "loss" in h][-1], "padding_share": m["padding_share"],
            "setup": setup}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CI: a tiny shape, no torch.compile (minutes on a CPU)")
    ap.add_argument("--levers", default=None, help="comma-separated variants (default: all; --smoke: no compile)")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    a = ap.parse_args()
    levers = a.levers.split(",") if a.levers else [n for n in LEVERS if not (a.smoke and n in ("compile", "best"))]
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    logging.disable(logging.WARNING)
    import torch
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    import torch._inductor.config as inductor
    inductor.cpp.enable_kernel_profile = True     # generated kernels show in the profile, to be counted

    from runner import api

    tmp = Path(tempfile.mkdtemp(prefix="bench_dispatch_"))
    model_dir = build_model(tmp / "model", TINY if a.smoke else SLICE, seed=42)
    overrides = [f"model.base={model_dir}", f"train.max_steps={STEPS}", "train.save_steps=100000",
                 "train.logging_steps=1", "train.report_to=[]", "train.deepspeed=null", "train.precision=fp32",
                 "model.adapter.dropout=0.0"]   # dropout draws depend on the batch's shape
    rows = one_bucket(api.load(REPO / "recipes" / "poetry_lora.yaml", overrides), tmp, 8 * STEPS, 129, 256)
    print(f"{'tiny' if a.smoke else 'Qwen2-1.5B 2-layer slice'} (vocab of builtin:tiny), LoRA r=8 on 7 modules, "
          f"batch 8, torch {torch.__version__}, {os.cpu_count()} CPUs; step {STEPS} of {STEPS} profiled", flush=True)
    results: dict[str, dict] = {}
    for name in levers:
        r = results[name] = run(name, overrides, rows, tmp / name)
        base = results.get("plain", {}).get("dispatches")
        ratio = f"{base / r['dispatches']:5.2f}x fewer" if base and r["dispatches"] else ""
        print(f"  {name:9s} {r['dispatches']:8,d} dispatches/step  {ratio:12s}  compiled in step: "
              f"{'yes' if r['compiled_in_step'] else 'no '}  padding {100 * r['padding_share']:4.1f}%  "
              f"loss {r['loss']:.5f}   [{r['setup']}]", flush=True)
    if "plain" in results:
        for name, r in results.items():
            assert abs(r["loss"] - results["plain"]["loss"]) < 1e-3, (name, r["loss"], results["plain"]["loss"])
    if a.out:
        a.out.write_text(json.dumps({"steps": STEPS, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
