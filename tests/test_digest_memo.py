"""A local model.base is hashed once: big files' digests are kept in <cache>/digests.json by path, size,
mtime, ctime and inode, so `plan` does not reread GBs of weights; any write to a file is seen."""
from __future__ import annotations

import os
import shutil

from runner import api
from runner.builtin import tiny_path
from runner.sources import local

RECIPE = """recipe: memo
model: {base: ./model}
sources: {s: {path: data.jsonl, format: text}}
"""


def _setup(tmp_path):
    shutil.copytree(tiny_path(), tmp_path / "model")
    (tmp_path / "model" / "model.safetensors").write_bytes(os.urandom(3 << 20))   # "weights", 3 MiB
    (tmp_path / "data.jsonl").write_text('{"text": "hello"}\n', encoding="utf-8")
    (tmp_path / "r.yaml").write_text(RECIPE, encoding="utf-8")
    return tmp_path / "r.yaml"


def weights_of(tmp_path):
    return tmp_path / "model" / "model.safetensors"


def _plan(path):
    _, steps, _ = api.plan(path)
    return {s.name: s.fingerprint for s in steps}


def test_big_files_are_hashed_once_and_changes_are_seen(tmp_path, monkeypatch):
    path = _setup(tmp_path)
    hashed = []
    real = local.hash_file
    monkeypatch.setattr(local, "hash_file", lambda p: hashed.append(p.name) or real(p))
    first = _plan(path)
    assert "model.safetensors" in hashed
    assert not (tmp_path / ".recipe").exists(), "plan creates no cache"
    (tmp_path / ".recipe" / "cache").mkdir(parents=True)
    _plan(path)                                   # fills digests.json
    kept = (tmp_path / ".recipe" / "cache" / "digests.json").read_text()
    assert "model" in str(weights_of(tmp_path)) and str(tmp_path) not in kept and "safetensors" not in kept, \
        "paths are no names in the cache (a model.base from the environment would be shown by them)"
    hashed.clear()
    assert _plan(path) == first and "model.safetensors" not in hashed
    assert "tokenizer.json" in hashed                 # small files are simply hashed
    weights = tmp_path / "model" / "model.safetensors"
    st = weights.stat()
    weights.write_bytes(os.urandom(3 << 20))          # same size, mtime set back: ctime still moves
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = _plan(path)
    assert "model.safetensors" in hashed and changed != first
    assert any(changed[k] != first[k] for k in first if k.startswith("train"))
