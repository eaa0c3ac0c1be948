"""A Hugging Face Hub cache built on disk, laid out as huggingface_hub writes it, so hub sources are
read through the real `datasets` code with no network:

    <cache>/datasets--acme--chat/refs/main                    -> the sha `main` points at
                                /snapshots/<sha>/README.md    dataset card with `configs:` YAML
                                /snapshots/<sha>/data/*.parquet
    <cache>/datasets--acme--plain/snapshots/<sha>/*.jsonl    a repository of plain files, no card

The rows are real: conversations built from data/alpaca_en_demo.json (the shipped demo data)."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHA_A = "a1" * 20
SHA_B = "b2" * 20

CARD = """---
configs:
- config_name: default
  default: true
  data_files:
  - split: train_sft
    path: data/train_sft-*.parquet
  - split: test_sft
    path: data/test_sft-*.parquet
- config_name: alpaca
  data_files:
  - split: train
    path: alpaca/train-*.parquet
dataset_info:
- config_name: default
  splits:
  - name: train_sft
    num_examples: {n_train}
  - name: test_sft
    num_examples: 30
---
# acme/chat

A test dataset laid out as on the hub.
"""


def _alpaca() -> list[dict]:
    return json.loads((ROOT / "data" / "alpaca_en_demo.json").read_text(encoding="utf-8"))


def write_chat(cache: Path, sha: str = SHA_A, *, n_train: int = 400, extra: str = "", point_main: bool = True) -> Path:
    """acme/chat at commit `sha`: `messages` rows (every 25th with an empty answer, to be quarantined),
    split train_sft (two shards) / test_sft, and an `alpaca` config; the card lists each split's rows. `extra` is appended to every answer (a new
    commit with other content)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = cache / "datasets--acme--chat"
    snap = repo / "snapshots" / sha
    (snap / "data").mkdir(parents=True, exist_ok=True)
    (snap / "alpaca").mkdir(exist_ok=True)
    (snap / "README.md").write_text(CARD.replace("{n_train}", str(n_train)), encoding="utf-8")
    rows = _alpaca()
    def conv(r: dict, i: int) -> dict:
        answer = "" if i % 25 == 0 else r["output"] + extra
        return {"messages": [{"role": "user", "content": "\n".join(p for p in (r["instruction"], r["input"]) if p)},
                             {"role": "assistant", "content": answer}], "id": f"chat-{i}"}
    train = [conv(rows[i % len(rows)], i) for i in range(n_train)]
    test = [conv(rows[-1 - i], 10_000 + i + 1) for i in range(30)]
    half = n_train // 2    # two shards, as the hub stores a large split
    pq.write_table(pa.Table.from_pylist(train[:half]), snap / "data" / "train_sft-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(train[half:]), snap / "data" / "train_sft-00001-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(test), snap / "data" / "test_sft-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows[:50]), snap / "alpaca" / "train-00000-of-00001.parquet")
    if point_main:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(sha, encoding="utf-8")
    return snap


def write_plain(cache: Path, sha: str = SHA_A) -> Path:
    """acme/plain: JSON Lines files and no dataset card (read with `data_files`)."""
    repo = cache / "datasets--acme--plain"
    snap = repo / "snapshots" / sha
    (snap / "part").mkdir(parents=True, exist_ok=True)
    rows = _alpaca()
    for k in range(2):
        with open(snap / "part" / f"rows-{k}.jsonl", "w", encoding="utf-8") as f:
            for r in rows[k * 30:(k + 1) * 30]:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(sha, encoding="utf-8")
    return snap


def recipe(tmp: Path, sources: str, name: str = "hubby") -> Path:
    p = tmp / f"{name}.yaml"
    p.write_text(f"recipe: {name}\nmodel: {{base: builtin:tiny}}\nsources:\n{sources}", encoding="utf-8")
    return p
