"""The executor seam (runner/executors/): where a data step's batches run changes no byte of its artifact.

A test-only executor, registered from here without editing any step module, runs every batch on a pickled
copy of the batch function (what a process on another host would get), in a shuffled order, and hands the
reducer the results in input order, one at a time from a generator. The shipped recipes' dry runs on it
must write exactly the files the local executor writes, under the same fingerprints."""
from __future__ import annotations

import hashlib
import json
import pickle
import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner import api, executors
from runner.data.dedup import dedup_indices
from runner.errors import RecipeError
from runner.executors import Job
from runner.executors.store import Store
from runner.recipe.model import _filter

REPO = Path(__file__).resolve().parents[1]


class Shuffled:
    """Batches in a shuffled order, each on a fresh unpickled copy of the batch function and its batch."""
    name = "shuffled"
    jobs: list[str] = []

    def __init__(self, seed: int = 7):
        self.rand = random.Random(seed)

    def run(self, job: Job):
        Shuffled.jobs.append(job.name)
        batches = [pickle.dumps(b) for b in job.batches]
        fn = pickle.dumps(job.batch)
        order = list(range(len(batches)))
        self.rand.shuffle(order)
        results: list = [None] * len(batches)
        for i in order:
            results[i] = pickle.loads(pickle.dumps(pickle.loads(fn)(pickle.loads(batches[i]))))
        return job.reduce(r for r in results)


def _artifacts(cache: Path) -> dict[str, dict]:
    """{fingerprint: {"step", "stats", "files": {path: sha256}}} of every artifact in a cache."""
    out = {}
    for d in sorted((cache / "objects").iterdir()):
        m = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
        files = {str(f.relative_to(d)): hashlib.sha256(f.read_bytes()).hexdigest()
                 for f in sorted(d.rglob("*")) if f.is_file() and f.name != "manifest.json"}
        out[d.name] = {"step": m["step"], "stats": m["stats"], "files": files}
    return out


@pytest.mark.parametrize("name, overrides, kinds", [
    # every data step kind: load (in line ranges of its file), filter, dedup (exact + MinHash), split, mix, render
    ("poetry_lora", ["model.base=builtin:tiny", "size=2000"], {"load", "filter", "dedup", "split", "render"}),
    # a meta recipe: its split writes through the Store (task files, quarantine), render.tasks on the executor
    ("fomaml_explicit", ["model.base=builtin:tiny", "template.max_length=256"], {"render"}),
])
def test_a_test_executor_writes_the_local_executors_bytes(tmp_path, monkeypatch, name, overrides, kinds):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(executors, "_FACTORIES", {**executors._FACTORIES, "shuffled": Shuffled})
    Shuffled.jobs = []
    recipe = REPO / "recipes" / f"{name}.yaml"
    for executor in ("local", "shuffled"):
        api.run(recipe, overrides, dry_run=True, cache_dir=str(tmp_path / executor), output=str(tmp_path / f"run-{executor}"),
                executor=executor)
    local, shuffled = _artifacts(tmp_path / "local"), _artifacts(tmp_path / "shuffled")
    assert sorted(local) == sorted(shuffled), "the executor moved a fingerprint"
    for fp, art in local.items():
        assert shuffled[fp] == art, f"{art['step']}: other bytes or stats on the shuffled executor"
    ran = {job.split(" ")[0].split(".")[0] for job in Shuffled.jobs}
    assert kinds <= ran, f"these step kinds did not run on the executor: {kinds - ran}"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(st.sampled_from(["白日依山盡", "黃河入海流", "欲窮千里目", "更上一層樓", "",
                                      "白日依山盡，黃河入海流", "白日依山盡，黃河入海流。"]), min_size=0, max_size=60),
       chunk=st.integers(1, 9), seed=st.integers(0, 5))
def test_dedup_on_any_executor_and_batching_equals_one_process(texts, chunk, seed):
    rows = [{"id": str(i), "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": t}],
             "source": "a" if i % 3 else "b", "meta": {}} for i, t in enumerate(texts)]
    by = {"a": [r for r in rows if r["source"] == "a"], "b": [r for r in rows if r["source"] == "b"]}
    filters = [_filter({"kind": "dedup", "method": "exact", "field": "assistant", "threshold": 0.85, "num_perm": 128,
                        "shingle": 5, "sources": None}),
               _filter({"kind": "dedup", "method": "minhash", "field": "assistant", "threshold": 0.5, "num_perm": 32,
                        "shingle": 2, "sources": ["a"]})]
    one = dedup_indices(by, filters, {"a": 0, "b": 1}, ["a", "b"])
    spread = dedup_indices(by, filters, {"a": 0, "b": 1}, ["a", "b"], executor=Shuffled(seed),
                           chunks=lambda s: (by[s][k:k + chunk] for k in range(0, len(by[s]), chunk)))
    assert spread == one


def test_an_executor_is_one_module_found_by_its_name(tmp_path, monkeypatch):
    """A new runner/executors/<name>.py that registers itself is all it takes (the Ray executor's way in)."""
    (tmp_path / "elsewhere.py").write_text(
        "from runner.executors import register, serial\n"
        "class Elsewhere:\n    name = 'elsewhere'\n    def run(self, job):\n        return serial(job)\n"
        "register('elsewhere', Elsewhere)\n", encoding="utf-8")
    monkeypatch.setattr(executors, "__path__", [*executors.__path__, str(tmp_path)])
    monkeypatch.setattr(executors, "_FACTORIES", dict(executors._FACTORIES))
    monkeypatch.delitem(sys.modules, "runner.executors.elsewhere", raising=False)
    ex = executors.get("elsewhere")
    assert ex.name == "elsewhere"
    assert ex.run(Job(lambda b: b * 2, [1, 2, 3], list)) == [2, 4, 6]
    assert "elsewhere" in executors.names()


def test_an_unknown_executor_is_one_line_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError, match=r"executor 'nowhere': no such executor \(known: local\)"):
        api.run(REPO / "recipes" / "tiny_chat.yaml", dry_run=True, cache_dir=str(tmp_path / "c"), executor="nowhere")
    assert not (tmp_path / "c").exists()
    with pytest.raises(RecipeError, match="no such executor"):
        executors.get("../base")


def test_the_local_executor_forks_only_a_big_job_that_survives_a_fork(monkeypatch):
    import os

    from runner.executors.local import LocalExecutor
    pids = lambda job: set(LocalExecutor(workers=2).run(job))   # noqa: E731
    big = Job(lambda b: os.getpid(), range(8), list)
    assert os.getpid() not in pids(big)
    assert pids(Job(big.batch, range(8), list, big=False)) == {os.getpid()}
    assert pids(Job(big.batch, range(8), list, forkable=False)) == {os.getpid()}


def test_the_store_writes_only_inside_its_artifact(tmp_path):
    store = Store(tmp_path / "art")
    (tmp_path / "art").mkdir()
    assert store.write_jsonl("records/a.jsonl", [{"b": 1, "a": "é"}]) == 1
    assert (tmp_path / "art" / "records" / "a.jsonl").read_bytes() == '{"a":"é","b":1}\n'.encode()
    for bad in ("../x.jsonl", "/tmp/x.jsonl", "a/../../x"):
        with pytest.raises(RecipeError):
            store.path(bad)
