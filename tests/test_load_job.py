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
from runner.data import formats
from runner.errors import RecipeError, StepError
from runner.sources.readers import Raw

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


# --- parquet: one part per row group, read where the part runs ------------------------------------------

def write_groups(path: Path, rows: int = 1000, group: int = 100, bad: int = 750) -> None:
    """A parquet file of rows//group row groups; row `bad` (1-based, in a later group) has no output."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    outputs = [None if i == bad else f"a{i} {{{{name}}}}" for i in range(1, rows + 1)]
    table = pa.table({"instruction": [f"q{i}" for i in range(1, rows + 1)], "output": outputs})
    pq.write_table(table, path, row_group_size=group)


def parquet_source(tmp: Path):
    """A source of a multi-row-group parquet file, and how to load it on an executor: (records text,
    quarantine, stats); limit=None reads row groups as parts, a huge limit reads rows here as before."""
    write_groups(tmp / "x.parquet")
    r = api.load(_recipe(tmp, "  s: {path: x.parquet, format: alpaca, placeholders: {name: N}}\n"))

    def load(executor=None, limit=None):
        from runner.data.formats import stream_source
        text, quarantine = [], []
        source = dataclasses.replace(r.sources["s"], limit=limit)
        stats = stream_source("s", source, tmp, 0, write=text.append, put_aside=quarantine.append, executor=executor)
        return "".join(text), quarantine, stats
    return load


class Pids:
    """The local executor, noting which processes ran the batches (forked workers are not this one)."""
    name = "pids"

    def __init__(self, workers: int):
        from runner.executors.local import LocalExecutor
        self.local, self.pids, self.parts = LocalExecutor(workers), set(), []

    def run(self, job):
        def batch(part):
            return os.getpid(), job.batch(part)

        def reduce(results):
            return job.reduce(self._note(r) for r in results)
        return self.local.run(dataclasses.replace(job, batch=batch, reduce=reduce))

    def _note(self, result):
        pid, loaded = result
        self.pids.add(pid)
        self.parts.append(loaded.group)
        return loaded


def test_parquet_row_groups_load_in_forked_workers_as_one_read_in_this_process(tmp_path, monkeypatch):
    """Row groups read by forked workers after pyarrow ran threads here (its pool and the footers read for
    the parts): the records, the quarantine entry's row number (in the 8th group) and the stats are the
    bytes one read of the whole file in this process gives."""
    import pyarrow.parquet as pq
    load = parquet_source(tmp_path)
    pq.read_table(tmp_path / "x.parquet", use_threads=True)      # arrow's thread pool started before the fork
    whole = load(limit=10 ** 9)                                   # today's path: rows read here, in chunks
    assert [q["row"] for q in whole[1]] == [750] and whole[2]["rows_in"] == 1000 and "a1 N" in whole[0]
    assert load() == whole                                        # serial, one part per row group
    monkeypatch.setattr(loading, "BIG_BYTES", 0)                  # a small file, but spread it all the same
    workers = Pids(2)
    assert load(workers) == whole
    assert workers.parts == [("x.parquet", i) for i in range(10)]
    assert workers.pids and os.getpid() not in workers.pids, "no forked worker read a row group"


def test_a_row_group_that_cannot_be_read_ends_the_file_as_one_read_does(tmp_path, monkeypatch):
    """A group that fails is an unreadable_file entry after the rows before it; the later groups are
    dropped, as the whole-file read stops there."""
    load = parquet_source(tmp_path)
    real = loading.parquet

    def failing(path, rel, group=None, first=0):
        if group == 3:
            yield Raw(rel, None, None, None, ("unreadable_file", f"cannot read parquet after {first} rows: boom"))
            return
        yield from real(path, rel, group, first)

    monkeypatch.setattr(loading, "parquet", failing)
    text, quarantine, stats = load()
    assert [(q["row"], q["code"]) for q in quarantine] == [(None, "unreadable_file")]
    assert "after 300 rows: boom" in quarantine[0]["reason"] and stats["rows_out"] == 300


def test_a_file_a_part_names_that_is_not_where_the_part_runs_is_one_line(tmp_path):
    """A Ray node that does not mount the recipe's files, cannot read them or has a stale copy: one line, not a
    parquet group quarantined as unreadable or other rows read."""
    (tmp_path / "x.jsonl").write_bytes(LINES[0] + b"\n")
    (tmp_path / "locked.jsonl").write_bytes(LINES[0] + b"\n")
    (tmp_path / "locked.jsonl").chmod(0)
    load = loading.LoadBatch("s", api.load(_recipe(tmp_path, "  s: {path: x.jsonl, format: alpaca}\n")).sources["s"],
                             False, formats._RULES)
    size = len(LINES[0]) + 1
    cases = [(("rowgroup", tmp_path / "gone.parquet", "gone.parquet", 1, 100, 5000), r"gone\.parquet is not there"),
             (("range", tmp_path / "gone.jsonl", "gone.jsonl", 0, 10, 10), r"gone\.jsonl is not there"),
             (("range", tmp_path / "x.jsonl", "x.jsonl", 0, size, size + 7), rf"x\.jsonl has {size} bytes, not the {size + 7} the run found"),
             (("file", tmp_path / "x.jsonl", tmp_path, size - 1), r"x\.jsonl has \d+ bytes, not the \d+ the run found")]
    if os.geteuid() != 0:   # root reads a file whatever its mode
        cases.append((("range", tmp_path / "locked.jsonl", "locked.jsonl", 0, size, size), r"locked\.jsonl cannot be read"))
    for part, says in cases:
        with pytest.raises(RecipeError, match=says + r" where its rows are read .*does not see the recipe's files"):
            load(part)
    assert load(("range", tmp_path / "x.jsonl", "x.jsonl", 0, size, size)).seen == 1     # the same file: read


# --- a hub split's arrow files, read by load tasks where they run ---------------------------------------

def test_a_hub_split_loads_in_shards_on_workers_with_the_bytes_one_pass_reads(tmp_path, monkeypatch):
    """A prepared split is sliced (hub_arrow.SHARD_ROWS rows of its arrow files) into load tasks that forked workers
    read: record lines, quarantine entries (row numbers within their split) and stats equal the rows
    `datasets` yields to this process (a `limit` past the end takes that path)."""
    from runner.executors.local import LocalExecutor
    from runner.sources import hub, hub_arrow

    cache = tmp_path / "hf" / "hub"
    write_chat(cache, n_train=700)
    for k, v in {"HF_HUB_CACHE": str(cache), "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets"),
                 "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(k, v)
    source = api.load(hub_recipe(tmp_path, "  s: {dataset: acme/chat, split: [train_sft, test_sft], "
                                           "format: messages}\n")).sources["s"]

    def load(src, executor):
        lines, quarantine = [], []
        stats = formats.stream_source("s", src, tmp_path, 0, write=lines.append, put_aside=quarantine.append,
                                      executor=executor)
        return "".join(lines), quarantine, stats

    one = load(dataclasses.replace(source, limit=10 ** 9), None)
    monkeypatch.setattr(hub_arrow, "SHARD_ROWS", 64)
    parts = list(loading.parts("s", source, ["acme/chat"], tmp_path, 0)[0])
    assert [p[0] for p in parts] == ["shard"] * (11 + 1)       # 700 rows of train_sft in 64s, 30 of test_sft
    pids = tmp_path / "pids"
    read = hub.shard_rows

    def shard_rows(shard):   # where each shard is read
        with open(pids, "a") as f:
            f.write(f"{os.getpid()}\n")
        return read(shard)

    monkeypatch.setattr(hub, "shard_rows", shard_rows)

    class Forked(LocalExecutor):   # the job is small: fork anyway
        def run(self, job):
            return super().run(dataclasses.replace(job, big=True))

    sharded = load(source, Forked(workers=2))
    assert sharded == one
    workers = pids.read_text().split()
    assert len(workers) == 12 and str(os.getpid()) not in workers
    assert one[0].count("\n") == 730 - 29 and [q["row"] for q in one[1]][:3] == [1, 26, 51]
    assert [q["file"].rsplit("/", 1)[1] for q in one[1]][-1] == "test_sft"


def test_hub_shards_of_a_split_in_several_arrow_files_number_rows_across_them(tmp_path, monkeypatch):
    """A split `datasets` keeps in several arrow files (one per shard it prepared): the slices of each file
    number their rows after the files before it, as one pass over the split does; a split whose rows are not
    its files' as stored (reordered by an indices mapping, a column renamed) is read here instead."""
    import datasets
    from runner.sources import hub, hub_arrow

    paths = []
    for k, n in enumerate((150, 70)):
        ds = datasets.Dataset.from_list([{"id": f"f{k}-{i}", "text": f"row {i} of file {k}"} for i in range(n)])
        paths.append(str(tmp_path / f"part-{k}"))
        ds.save_to_disk(paths[-1])
    whole = datasets.concatenate_datasets([datasets.load_from_disk(p) for p in paths])
    assert len(whole.cache_files) == 2
    monkeypatch.setattr(hub, "_open", lambda *a: [("hub:x/train", whole)])
    monkeypatch.setattr(hub, "_sha", lambda *a: "a" * 40)
    monkeypatch.setattr(hub_arrow, "SHARD_ROWS", 64)
    source = api.load(hub_recipe(tmp_path, "  s: {dataset: acme/x, format: messages}\n")).sources["s"]
    shards = hub.shards("s", source, tmp_path, 0)
    assert [(s[2][2], s[2][3], s[2][4]) for s in shards] == [(0, 64, 0), (64, 128, 0), (128, 150, 0), (0, 64, 150),
                                                             (64, 70, 150)]
    rows = [(r.file, r.row, r.data) for s in shards for r in hub.shard_rows(s[2])]
    assert rows == [("hub:x/train", i, obj) for i, obj in enumerate(whole, 1)]
    # the same files and number of rows, in another order (an indices mapping) or with a column renamed
    for changed in (whole.select(range(len(whole) - 1, -1, -1)), whole.rename_column("text", "body")):
        assert changed.cache_files == whole.cache_files and len(changed) == len(whole)
        monkeypatch.setattr(hub, "_open", lambda *a: [("hub:x/train", changed)])
        assert hub.shards("s", source, tmp_path, 0) is None
