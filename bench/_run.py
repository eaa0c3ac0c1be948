"""`recipe run` of this checkout (never the `recipe` on PATH) for the training benches: one subprocess per run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_recipe(recipe: Path, out: Path, cache: Path, sets: dict) -> dict:
    """Run `recipe` with `--set key=value` for each of `sets`; its report.json, or exit with the run's stderr."""
    cmd = [sys.executable, "-m", "runner", "run", str(recipe), "--cache-dir", str(cache), "--output", str(out)]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return json.loads((out / "report.json").read_text(encoding="utf-8"))
