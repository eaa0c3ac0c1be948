"""CI smoke run of bench/gpu_throughput.py on a tiny shape: every variant this machine supports trains
and reports its numbers, and the levers land on the plain recipe's loss."""
import json
import subprocess
import sys

import pytest
import train_fixtures as F


def test_gpu_throughput_runs_on_a_tiny_shape(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(F.REPO / "bench" / "gpu_throughput.py"), "--tiny", "--steps", "2",
                           "--deepspeed", "null", "--levers", "trl,plain,padding_free,auto,liger",
                           "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    results = report["results"]
    for name in ("trl", "plain", "padding_free", "auto"):
        r = results[name]
        assert r["steps"] == 2 and r["tokens"] > 0 and r["tokens_per_second"] > 0 and r["seconds_per_step"] > 0
    assert "skipped" in results["liger"] or results["liger"]["steps"] == 2
    # same recipe, same rows, same seed: the levers do not change the loss (fp32 on a CPU)
    for name in ("padding_free", "auto"):
        assert results[name]["loss"] == pytest.approx(results["plain"]["loss"], abs=1e-4)
    assert "micro batch 8 x accumulation 1" in results["auto"]["setup"]
    assert "trl" in done.stdout and "tok/s" in done.stdout
