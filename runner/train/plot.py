"""The loss curve of a trained stage, as a PNG next to the run report (matplotlib, headless)."""
from __future__ import annotations

import io
from pathlib import Path

from ..paths import publish_files


def plot_losses(run_dir: Path, stage: str, history: list[dict]) -> Path | None:
    """Loss per step as a PNG (matplotlib, headless)."""
    pts = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    if not pts:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("train loss")
    ax.set_title(f"stage {stage}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    name = f"loss_{stage}.png"          # written as every published file is: never through a symlink
    return publish_files(run_dir, name, {name: buf.getvalue()})[name]
