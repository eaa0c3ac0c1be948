"""builtin:tiny never saw what the shipped recipes evaluate on: data/heldout_eval.jsonl lists those rows,
and tiny_pretrain.yaml's exclude filter keeps them out of pretraining (checked here on poetry_lora's
real eval split, from a fresh run of its data steps)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from runner.data.filters.exclude import digest
from runner.data.text import text

ROOT = Path(__file__).resolve().parents[1]


def _run(recipe: str, only: str, tmp: Path) -> Path:
    subprocess.run([sys.executable, "-m", "runner", "run", f"recipes/{recipe}.yaml", "--only", only,
                    "--set", "model.base=builtin:tiny-random", "--cache-dir", str(tmp / "cache"),
                    "--output", str(tmp / recipe)], check=True, cwd=ROOT, capture_output=True)
    index = json.loads((tmp / "cache" / "index" / recipe / f"{only}.json").read_text())
    return tmp / "cache" / "objects" / index["fingerprint"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def test_poetry_eval_rows_are_listed_and_kept_out_of_pretraining(tmp_path):
    listed = {r["sha1"] for r in _rows(ROOT / "data" / "heldout_eval.jsonl")}
    evals = _rows(_run("poetry_lora", "split", tmp_path) / "eval" / "tang.jsonl")
    assert len(evals) > 1000
    held = {digest(text(r, "assistant")) for r in evals}
    assert held <= listed
    pretrain = _rows(_run("tiny_pretrain", "filter.tang", tmp_path) / "records.jsonl")
    assert len(pretrain) > 15000                       # most poems are still there to learn from
    assert not held & {digest(text(r, "assistant")) for r in pretrain}
