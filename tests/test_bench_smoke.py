"""CI smoke-runs every bench/ script on a tiny input (`--smoke`, the contract in bench/README.md), so a
benchmark cannot rot unnoticed: a new script is picked up without touching this file."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(p for p in (ROOT / "bench").glob("*.py") if not p.name.startswith("_"))   # _*.py: helpers


def test_there_are_bench_scripts():
    assert len(SCRIPTS) >= 4, SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bench_script_smoke(script: Path, tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True, text=True, cwd=tmp_path,
                       env=env, timeout=600)
    assert p.returncode == 0, f"{script.name} --smoke exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    assert p.stdout.strip(), f"{script.name} --smoke printed nothing"
