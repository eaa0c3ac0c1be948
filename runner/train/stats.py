"""Why a stage trains as fast as it does, per stage in metrics.json, the run log and report.json:
tokens per optimizer step, the share of the device's work spent on padding, torch.compile's
recompiles and, on CUDA, the model FLOPs utilisation (MFU)."""
from __future__ import annotations

from typing import Any

# dense bf16 peak FLOP/s by card name: what MFU divides by
PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}


def peak_flops() -> float | None:
    """This process's CUDA card's dense bf16 peak, None on a CPU or an unknown card."""
    import torch

    if not torch.cuda.is_available():
        return None
    card = torch.cuda.get_device_name()
    return next((v for k, v in PEAK.items() if k in card), None)


def parameters(model) -> int:
    """All parameters (base and adapter; a ZeRO-3 shard counts whole)."""
    return sum(getattr(p, "ds_numel", 0) or p.numel() for p in model.parameters())


def stage_stats(*, tokens: int, steps: int, tokens_per_second: float, padding_share: float,
                recompiles: int | None, params: int, world_size: int) -> dict[str, Any]:
    """The stage's speed facts; `tokens` and `steps` are this call's (a resumed run's are its own).
    MFU is the usual 6 x parameters x tokens/s over the cards' peak (LoRA skips the frozen weights'
    gradients, so this overstates the useful work a little); absent on a CPU."""
    out: dict[str, Any] = {"tokens_per_step": round(tokens / steps, 1) if steps else 0.0,
                           "padding_share": round(padding_share, 4)}
    if recompiles is not None:
        out["recompiles"] = recompiles
    peak = peak_flops()
    if peak:
        out["mfu"] = round(6 * params * tokens_per_second / (peak * world_size), 4)
    return out


def line(stats: dict[str, Any]) -> str:
    """One run-log line."""
    parts = [f"{stats['tokens_per_step']:,.0f} tokens per optimizer step",
             f"padding {100 * stats['padding_share']:.1f}% of the batch"]
    if "recompiles" in stats:
        parts.append(f"{stats['recompiles']} recompiles")
    if "mfu" in stats:
        parts.append(f"MFU {100 * stats['mfu']:.1f}%")
    return ", ".join(parts)
