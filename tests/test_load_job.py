"""The load step on the executor seam (runner/data/loading.py), a file changed under a run (D13), and hub
`data_files` kept inside the pinned snapshot (D22)."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.hub import ROOT, recipe as hub_recipe, write_chat, write_plain
from runner import api
from runner.dag import execute
from runner.data import loading
from runner.data.formats import load_source
from runner.errors import StepError

# every kind of line a JSON Lines file holds: good rows, a row the mapper refuses, bad JSON, bad UTF-8,
# a blank line, a line of spaces, a non-object, a row with a placeholder
LINES = [b'{"instruction": "q1", "output": "a1"}', b'{"instruction": "q2", "output": "\xe4\xb8\x80 {{name}}"}',
         b'{"instruction": "q3"}', b'{"instruction": ', b'{"instruction": "\xff", "output": "x"}', b"", b"   \r",
         b"[1, 2]", b'{"id": "same", "instruction": "q4", "output": "a4"}']


def _recipe(tmp: Path, body: str) -> Path:
    r = tmp / "r.yaml"
    r.write_text(f"recipe: r\nmodel: {{base: builtin:tiny}}\nsources:\n{body}", encoding="utf-8")
    return r


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=st.lists(st.integers(0, len(LINES) - 1), min_size=1, max_size=40), bom=st.booleans(),
       last_newline=st.booleans(), size=st.integers(1, 300))
def test_ranges_of_any_size_read_the_rows_one_pass_reads(tmp_path_factory, picks, bom, last_newline, size):
    """Batches of whole lines, each numbered from its own start, come back with the file's line and row
    numbers: records, quarantine entries and stats equal the rows read line by line in this process
    (a `limit` larger than the file takes that path)."""
    tmp = tmp_path_factory.mktemp("r")
    body = b"\n".join(LINES[i] for i in picks + [0]) + (b"\n" if last_newline else b"")
    (tmp / "x.jsonl").write_bytes((b"\xef\xbb\xbf" if bom else b"") + body)
    r = api.load(_recipe(tmp, "  s: {path: x.jsonl, format: alpaca}\n"))
    one = load_source("s", dataclasses.replace(r.sources["s"], limit=10 ** 9), tmp)
    old = loading.RANGE_BYTES
    loading.RANGE_BYTES = size
    try:
        ranged = load_source("s", r.sources["s"], tmp)
    finally:
        loading.RANGE_BYTES = old
    assert ranged[0] == one[0] and ranged[1] == one[1]
    assert {k: v for k, v in ranged[2].items()} == one[2]


def test_quarantine_keeps_file_line_and_row_across_batches(tmp_path, monkeypatch):
    lines = [LINES[0]] * 5 + [LINES[3], LINES[5]] + [LINES[0]] * 5 + [LINES[2]]
    (tmp_path / "x.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    r = api.load(_recipe(tmp_path, "  s: {path: x.jsonl, format: alpaca}\n"))
    monkeypatch.setattr(loading, "RANGE_BYTES", 40)   # about one line a batch
    records, quarantine, stats = load_source("s", r.sources["s"], tmp_path)
    assert len(records) == 10 and stats["rows_in"] == 12
    assert [(q["file"], q["line"], q["row"], q["code"]) for q in quarantine] == \
        [("x.jsonl", 6, 6, "invalid_json"), ("x.jsonl", 13, 12, "missing_field")]


def test_the_load_step_runs_on_the_executor_in_batches(tmp_path, monkeypatch):
    """The run's executor gets the load as one Job of many batches (what lets Ray or workers take it)."""
    from runner import executors
    seen = []

    class Counting:
        name = "counting"

        def run(self, job):
            batches = list(job.batches)
            seen.append((job.name, len(batches)))
            return job.reduce(map(job.batch, batches))

    monkeypatch.setattr(executors, "_FACTORIES", {**executors._FACTORIES, "counting": Counting})
    monkeypatch.setattr(loading, "RANGE_BYTES", 1 << 12)
    monkeypatch.chdir(tmp_path)
    api.run(ROOT / "recipes" / "tiny_chat.yaml", ["model.base=builtin:tiny"], dry_run=True, only="load.identity",
            cache_dir=str(tmp_path / "c"), output=str(tmp_path / "o"), executor="counting")
    assert seen and all(name.startswith("load.") for name, _ in seen)


# --- D13: a file changed between its fingerprint and the end of its load step ----------------------------

def test_a_file_changed_while_the_run_reads_it_is_not_cached_under_the_old_key(tmp_path, monkeypatch):
    rows = [json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) for i in range(20)]
    (tmp_path / "a.jsonl").write_text("\n".join(rows[:10]) + "\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text("\n".join(rows[10:]) + "\n", encoding="utf-8")
    r = _recipe(tmp_path, "  a: {path: a.jsonl, format: alpaca}\n  b: {path: b.jsonl, format: alpaca}\n")

    def shorten_b(step):   # while load.a runs (after the fingerprints), b.jsonl loses rows
        if step.name == "load.a":
            (tmp_path / "b.jsonl").write_text("\n".join(rows[10:12]) + "\n", encoding="utf-8")

    monkeypatch.setattr(execute, "before_commit", shorten_b)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StepError, match=r"b\.jsonl changed while the run read it; run again"):
        api.run(r, dry_run=True, cache_dir=str(tmp_path / "c"), output=str(tmp_path / "o"))
    committed = [json.loads(m.read_text())["step"] for m in (tmp_path / "c" / "objects").glob("*/manifest.json")]
    assert committed == ["load.a"]
    # the next run fingerprints what is there now, and loads it
    monkeypatch.setattr(execute, "before_commit", lambda step: None)
    api.run(r, dry_run=True, cache_dir=str(tmp_path / "c"), output=str(tmp_path / "o"))
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert next(s for s in report["steps"] if s["name"] == "load.b")["rows_out"] == 2


# --- D22: hub data_files stay inside the pinned snapshot --------------------------------------------------

@pytest.mark.parametrize("data_files", ["'../../../datasets--acme--chat/snapshots/x/data.jsonl'", "'/etc/x.jsonl'",
                                        "{train: [part/a.jsonl, '../b.jsonl']}", "'hf://datasets/other/repo/x.jsonl'"])
def test_hub_data_files_outside_the_snapshot_are_refused_at_validate(tmp_path, data_files):
    cache = tmp_path / "hf" / "hub"
    write_chat(cache)
    write_plain(cache)
    r = hub_recipe(tmp_path, f"  ok: {{dataset: acme/plain, data_files: 'part/*.jsonl', format: alpaca}}\n"
                             f"  out: {{dataset: acme/plain, data_files: {data_files}, format: alpaca}}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    for cmd in ("validate", "plan"):
        p = subprocess.run([sys.executable, "-m", "runner", cmd, str(r)], capture_output=True, text=True, env=env)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert f"{r.name}:5" in p.stderr and "sources.out.data_files:" in p.stderr
        assert "leaves the dataset's repository" in p.stderr and "sources.ok" not in p.stderr
