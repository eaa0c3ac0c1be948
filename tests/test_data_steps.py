"""The data steps end to end on a small recipe: artifacts, accounting, determinism, leak freedom."""
from __future__ import annotations

import json
import re

import pytest

from helpers.data import REPO, TANG_FIELDS, recipe, run_data_steps
from runner import api
from runner.data.io import read_jsonl
from runner.data.splits import check_no_leak
from runner.dag.execute import result_of
from runner.steps.base import parse_step
from runner.steps import STEPS

SMALL = f"""seed: 11
sources:
  tang:
    path: '{{data}}/tang_poems.jsonl'
    format: fields
    limit: 3000
    priority: 1{TANG_FIELDS}
  general: {{path: '{{data}}/alpaca_zh_demo.json', format: alpaca}}
  identity: {{path: '{{data}}/identity.json', format: alpaca}}
  tools: {{path: '{{data}}/glaive_toolcall_en_demo.json', format: sharegpt}}
  again: {{path: '{{data}}/identity.json', format: alpaca}}
groups:
  task: [identity, tools]
filters:
  - {{kind: length, field: assistant, min_chars: 10, max_chars: 400, sources: [tang]}}
  - {{kind: repetition}}
  - {{kind: dedup, method: exact}}
  - {{kind: dedup, method: minhash, threshold: 0.85, num_perm: 64}}
split: {{strategy: random, eval: 0.1}}
stages:
  base: {{mix: {{general: 1.0}}}}
  task: {{mix: {{general: 0.6, task: 0.4}}}}
  domain: {{mix: {{general: 0.5, task: 0.3, tang: 0.2}}, size: 0.5}}
"""


def test_every_data_step_module_has_a_version_and_run():
    for kind in ("load", "filter", "dedup", "split", "mix"):
        assert isinstance(STEPS[kind].VERSION, int) and callable(STEPS[kind].run)


def test_data_steps_end_to_end(tmp_path):
    r = recipe(tmp_path, SMALL)
    done = run_data_steps(r, tmp_path / "run")
    assert list(done) == ["load.tang", "filter.tang", "load.general", "filter.general", "load.identity",
                          "filter.identity", "load.tools", "filter.tools", "load.again", "filter.again", "dedup",
                          "split", "mix.base", "mix.task", "mix.domain"]
    for name, (out, stats) in done.items():
        assert result_of(parse_step(name).kind, stats).unbalanced() is None   # the executor's own check
        json.dumps(stats)
    out, stats = done["load.tang"]
    assert stats["rows_in"] == 3000 and len(read_jsonl(out / "records.jsonl")) == stats["rows_out"]
    assert len(read_jsonl(out / "quarantine.jsonl")) == stats["quarantined"] > 0
    out, stats = done["filter.tang"]
    dropped = read_jsonl(out / "dropped.jsonl")
    assert len(dropped) == sum(stats["dropped"].values()) and {d["reason"] for d in dropped} <= {
        "length:min_chars", "length:max_chars", "repetition:line", "repetition:ngram"}
    out, stats = done["dedup"]
    dups = read_jsonl(out / "dropped.jsonl")
    # `again` is identity.json a second time: every row is an exact copy, and identity (listed first) keeps it
    assert stats["by_source"]["again"]["rows_out"] == 0
    assert all(d["duplicate_of_source"] == "identity" for d in dups if d["source"] == "again")
    out, stats = done["split"]
    train = {f.stem: read_jsonl(f) for f in sorted((out / "train").glob("*.jsonl"))}
    evals = {f.stem: read_jsonl(f) for f in sorted((out / "eval").glob("*.jsonl"))}
    assert set(train) == set(evals) == set(r.sources)
    check_no_leak({"train": sum(train.values(), []), "eval": sum(evals.values(), [])})
    out, stats = done["mix.task"]
    mixed = read_jsonl(out / "train.jsonl")
    rep = stats["mix"]
    assert rep["requested"]["general"] == 0.6 and len(mixed) == rep["total"]
    n_task = len(train["identity"]) + len(train["tools"])
    assert rep["requested"]["tools"] == pytest.approx(0.4 * len(train["tools"]) / n_task, abs=1e-6)
    out, stats = done["mix.domain"]
    assert stats["mix"]["total"] == round(0.5 * stats["mix"]["max_total"])
    assert {x["source"] for x in read_jsonl(out / "train.jsonl")} == {"general", "identity", "tools", "tang"}


def test_data_steps_are_byte_identical_across_runs_and_processes(tmp_path):
    """Same input and seed -> the same bytes, also in another process with another str hash seed."""
    import os
    import subprocess
    import sys

    r = recipe(tmp_path, SMALL)
    a = run_data_steps(r, tmp_path / "a")
    script = ("import sys, json; sys.path.insert(0, sys.argv[1]); from helpers.data import run_data_steps; "
              "from runner import api; from pathlib import Path; "
              "done = run_data_steps(api.load(sys.argv[2]), Path(sys.argv[3])); "
              "print(json.dumps({k: v[1] for k, v in done.items()}))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    proc = subprocess.run([sys.executable, "-c", script, str(REPO / "tests"), str(r.file), str(tmp_path / "b")],
                          capture_output=True, text=True, env=env, check=True)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jsonl"))
    assert len(files) > 20
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert json.loads(proc.stdout) == {k: v[1] for k, v in a.items()}


def test_rich_table_shows_every_source_and_reason(tmp_path):
    from rich.console import Console

    from runner.data.stats import rich_table

    r = recipe(tmp_path, SMALL)
    stats = run_data_steps(r, tmp_path / "run", kinds=("load", "filter"))["filter.tang"][1]
    console = Console(record=True, width=200)
    console.print(rich_table(stats, title="filter.tang"))
    out = console.export_text()
    assert "tang" in out and "total" in out and str(stats["rows_out"]) in out
    assert all(f"{k} {v}" in out for k, v in stats["dropped"].items())


def test_curriculum_domain_stage_needs_oversampling_and_counts_the_repeats(tmp_path):
    """The domain stage asks for 3000 rows: more general/task rows than exist. Without oversampling
    that is a clear error; the shipped recipe oversamples, and the repeated rows are counted."""
    limit, tiny = "sources.poetry.limit=2000", "model.base=builtin:tiny"
    r = api.load(REPO / "recipes" / "curriculum_3stage.yaml", [limit, tiny, "sampling.oversample=false"])
    with pytest.raises(Exception, match="stage 'domain': the mix cannot be met without repeating rows"):
        run_data_steps(r, tmp_path / "strict")
    done = run_data_steps(api.load(REPO / "recipes" / "curriculum_3stage.yaml", [limit, tiny]), tmp_path / "shipped")
    _, stats = done["mix.domain"]
    assert stats["rows_out"] == 3000 and stats["added"]["mix:oversampled"] > 0
    assert stats["rows_in"] + sum(stats["added"].values()) == stats["rows_out"] + sum(stats["dropped"].values())


def test_meta_recipe_builds_tasks(tmp_path):
    r = api.load(REPO / "recipes" / "fomaml_poets.yaml", ["sources.tang.limit=4000", "meta.tasks.min_rows=30"])
    done = run_data_steps(r, tmp_path / "run")
    out, stats = done["split"]
    index = read_jsonl(out / "tasks.jsonl")
    assert 2 <= len(index) <= 40 and stats["tasks"] == index
    sides = {p: [] for p in ("support", "query", "test")}
    for t in index:
        parts = {p: read_jsonl(out / "tasks" / t["dir"] / f"{p}.jsonl") for p in sides}
        assert {p: len(v) for p, v in parts.items()} == t["rows"] and sum(t["rows"].values()) >= 30
        assert {x["meta"]["author"] for v in parts.values() for x in v} == {t["name"]}
        for p in sides:
            sides[p] += parts[p]
    check_no_leak(sides)
    assert stats["rows_in"] == stats["rows_out"] + sum(stats["dropped"].values())


def test_meta_recipe_with_explicit_task_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(x) for x in (REPO / "data" / "gsm8k_train.jsonl").read_text().splitlines()]
    for i, part in enumerate(("a_support", "a_query", "b_support", "b_query")):
        chunk = rows[i * 100:(i + 1) * 100]
        pq.write_table(pa.table({"prompt": [x["question"] for x in chunk], "response": [x["answer"] for x in chunk]}),
                       tmp_path / f"{part}.parquet")
    (tmp_path / "b_query_extra.jsonl").write_text('{"prompt": "p"}\n' + json.dumps({"prompt": "q", "response": "r"}) + "\n")
    test = rows[400:420]
    pq.write_table(pa.table({"prompt": [x["question"] for x in test], "response": [x["answer"] for x in test]}),
                   tmp_path / "b_test.parquet")
    r = recipe(tmp_path, """sources:
  unused: {path: '{data}/identity.json', format: alpaca}
meta:
  tasks:
    - {name: a, support: [a_support.parquet], query: [a_query.parquet], support_max_samples: 30}
    - {name: b, support: [b_support.parquet], query: [b_query.parquet, b_query_extra.jsonl], test: [b_test.parquet]}
  few_shot_eval: {held_out_tasks: 1}
""")
    out, stats = run_data_steps(r, tmp_path / "run")["split"]
    index = read_jsonl(out / "tasks.jsonl")
    assert index == [{"name": "a", "dir": "a", "rows": {"support": 30, "query": 100, "test": 0}},
                     {"name": "b", "dir": "b", "rows": {"support": 100, "query": 101, "test": 20}}]
    support = read_jsonl(out / "tasks" / "a" / "support.jsonl")
    assert {x["messages"][0]["content"] for x in support} <= {x["question"] for x in rows[:100]}
    assert [q["code"] for q in read_jsonl(out / "quarantine.jsonl")] == ["missing_field"]
    assert stats["dropped"] == {"quarantine": 1, "split:support_max_samples": 70}
    assert stats["rows_in"] == stats["rows_out"] + sum(stats["dropped"].values())


def test_explicit_task_layout_is_checked_at_validation(tmp_path):
    """Columns, enough support rows after support_max_samples, test rows that are also support/query
    rows (k-shot sets come from support + query), tasks to hold out; and no `sources:` needed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from runner.errors import ValidationError

    rows = [json.loads(x) for x in (REPO / "data" / "gsm8k_train.jsonl").read_text().splitlines()][:60]

    def write(name, chunk, cols=("prompt", "response")):
        data = {"prompt": [x["question"] for x in chunk], "response": [x["answer"] for x in chunk]}
        pq.write_table(pa.table({c: data[c] for c in cols}), tmp_path / name)
    write("s.parquet", rows[:20])
    write("q.parquet", rows[20:40])
    write("t.parquet", rows[40:60])
    write("leak.parquet", rows[35:45])
    write("noresp.parquet", rows[:20], cols=("prompt",))
    ok = """meta:
  tasks:
    - {name: a, support: [s.parquet], query: [q.parquet], test: [t.parquet]}
    - {name: b, support: [s.parquet], query: [q.parquet]}
  few_shot_eval: {held_out_tasks: 1}
"""
    r = recipe(tmp_path, ok.replace("{data}", ""))
    assert not r.sources
    for bad, message in [
        (ok.replace("test: [t.parquet]", "test: [leak.parquet]"), "5 test rows are also support or query rows"),
        (ok.replace("support: [s.parquet], query: [q.parquet], test", "support: [noresp.parquet], query: [q.parquet], test"),
         "no 'response' column"),
        (ok.replace("test: [t.parquet]}", "test: [t.parquet], support_max_samples: 2}"), "2 support rows after support_max_samples"),
        (ok.replace("held_out_tasks: 1", "held_out_tasks: 2"), "only 1 explicit tasks have `test:` files"),
        (ok.replace("few_shot_eval:", "outer: {meta_batch_size: 3}\n  few_shot_eval:")
         + "train: {world_size: 2, batch_size: 8, micro_batch_size: 4}\n", "3 tasks do not divide over train.world_size 2"),
    ]:
        with pytest.raises(ValidationError, match=re.escape(message)):
            recipe(tmp_path, bad)
    with pytest.raises(ValidationError, match="needs at least one source"):
        recipe(tmp_path, "template: {max_length: 64}\n")


def test_max_tokens_uses_the_training_tokenizer_and_template(tmp_path):
    r = recipe(tmp_path, """sources:
  i: {path: '{data}/identity.json', format: alpaca}
template: {chat: chatml, system: "You are a helpful assistant.", max_length: 48}
filters:
  - {kind: length, max_tokens: max_length}
""")
    done = run_data_steps(r, tmp_path / "run", kinds=("load", "filter"))
    out, stats = done["filter.i"]
    from runner.chat import chat_name, token_counter, tokenizer_for
    count = token_counter(tokenizer_for(r.model.base, r.file.parent), chat_name(r.template.chat, r.file.parent),
                          r.template.system)
    kept, dropped = read_jsonl(out / "records.jsonl"), read_jsonl(out / "dropped.jsonl")
    assert kept and dropped and stats["dropped"] == {"length:max_tokens": len(dropped)}
    assert all(count(x) <= 48 for x in kept) and all(count(x) > 48 for x in dropped)
