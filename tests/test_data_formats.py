"""Readers and formats on the real data files, and a corrupted file for every quarantine reason."""
from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from helpers.data import DATA, REPO, raw_lines, recipe
from runner import api
from runner.data.formats import content_id, load_source
from runner.data.io import read_jsonl, write_jsonl
from runner.errors import RecipeError


def load(r, name):
    return load_source(name, r.sources[name], r.file.parent)


def test_tang_poems_via_fields_exactly_as_poetry_lora():
    r = api.load(REPO / "recipes" / "poetry_lora.yaml")
    records, quarantine, stats = load(r, "tang")
    raw = raw_lines("tang_poems.jsonl")
    one_line = [x for x in raw if len(x["paragraphs"]) == 1]
    assert len(records) == len(raw) - len(one_line) and len(quarantine) == len(one_line) > 0
    assert {q["code"] for q in quarantine} == {"empty_turn"}
    assert stats["rows_in"] == len(raw) and stats["dropped"] == {"quarantine:empty_turn": len(one_line)}
    first = records[0]
    src = raw[0]
    assert first["id"] == src["id"]                      # the row's own id is kept
    assert first["messages"] == [
        {"role": "user", "content": "以下是一首唐詩的第一句話，請用你的知識判斷並完成整首詩。\n" + src["paragraphs"][0]},
        {"role": "assistant", "content": "\n".join(src["paragraphs"][1:])}]
    assert first["meta"] == {"author": src["author"], "title": src["title"]} and first["source"] == "tang"
    q = quarantine[0]
    line = next(i for i, x in enumerate(raw, 1) if len(x["paragraphs"]) == 1)
    assert (q["file"], q["line"]) == ("../data/tang_poems.jsonl", line)
    assert json.loads(q["raw"]) == raw[line - 1]


@pytest.mark.parametrize("name", ["alpaca_en_demo.json", "alpaca_zh_demo.json"])
def test_alpaca(tmp_path, name):
    r = recipe(tmp_path, f"sources:\n  a: {{path: {{data}}/{name}, format: alpaca}}\n")
    records, quarantine, _ = load(r, "a")
    raw = json.loads((DATA / name).read_text(encoding="utf-8"))
    assert len(records) == len(raw) and not quarantine
    for rec, src in zip(records, raw):
        user = src["instruction"] + ("\n" + src["input"] if src["input"] else "")
        assert rec["messages"] == [{"role": "user", "content": user}, {"role": "assistant", "content": src["output"]}]
        assert rec["id"] == content_id(rec["messages"])   # no id in the data: a content hash
    again, _, _ = load(r, "a")
    assert [x["id"] for x in again] == [x["id"] for x in records]


def test_sharegpt_tool_roles_and_tools_field(tmp_path):
    r = recipe(tmp_path, "sources:\n  t: {path: '{data}/glaive_toolcall_en_demo.json', format: sharegpt}\n")
    records, quarantine, _ = load(r, "t")
    raw = json.loads((DATA / "glaive_toolcall_en_demo.json").read_text(encoding="utf-8"))
    assert len(records) == len(raw) == 300 and not quarantine
    roles = {"human": "user", "gpt": "assistant", "function_call": "assistant", "observation": "tool"}
    for rec, src in zip(records, raw):
        assert [m["role"] for m in rec["messages"]] == [roles[t["from"]] for t in src["conversations"]]
        assert [m["content"] for m in rec["messages"]] == [t["value"] for t in src["conversations"]]
        assert rec["meta"]["tools"] == src["tools"]
    assert Counter(m["role"] for rec in records for m in rec["messages"])["tool"] == 211


def test_sharegpt_roles_table_is_used(tmp_path):
    rows = [{"conversations": [{"from": "q", "value": "hi"}, {"from": "a", "value": "hello"}]}]
    (tmp_path / "c.jsonl").write_text(json.dumps(rows[0]) + "\n")
    r = recipe(tmp_path, "sources:\n  c: {path: c.jsonl, format: sharegpt, roles: {q: user, a: assistant}}\n")
    records, _, _ = load(r, "c")
    assert [m["role"] for m in records[0]["messages"]] == ["user", "assistant"]


def test_gsm8k_prompt_response_from_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = raw_lines("gsm8k_train.jsonl")
    table = pa.table({"prompt": [x["question"] for x in raw], "response": [x["answer"] for x in raw],
                      "metadata": [json.dumps({"answer": x["answer"].split("#### ")[-1], "n": i}) for i, x in enumerate(raw)]})
    pq.write_table(table, tmp_path / "gsm8k.parquet", row_group_size=128)
    r = recipe(tmp_path, "sources:\n  g: {path: gsm8k.parquet, format: prompt_response}\n")
    records, quarantine, _ = load(r, "g")
    assert len(records) == len(raw) == 500 and not quarantine
    assert records[7]["messages"][0]["content"] == raw[7]["question"]
    assert records[7]["meta"] == {"answer": raw[7]["answer"].split("#### ")[-1], "n": 7}


def test_gsm8k_via_fields_with_id_template(tmp_path):
    r = recipe(tmp_path, """sources:
  g:
    path: '{data}/gsm8k_train.jsonl'
    format: fields
    limit: 50
    fields:
      user: "{{ question }}"
      assistant: "{{ answer }}"
      id: "gsm8k-{{ question | length }}-{{ answer.split('#### ')[-1] }}"
      meta: {final: "{{ answer.split('#### ')[-1] }}"}
""")
    records, _, stats = load(r, "g")
    raw = raw_lines("gsm8k_train.jsonl")[:50]
    assert stats["rows_in"] == 50 and len(records) == 50      # limit respected
    assert records[0]["id"] == f"gsm8k-{len(raw[0]['question'])}-72" and records[0]["meta"] == {"final": "72"}


def test_messages_and_text_formats(tmp_path):
    (tmp_path / "m.jsonl").write_text(json.dumps({"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"}], "tools": [{"name": "calc"}], "id": 17}) + "\n")
    (tmp_path / "t.jsonl").write_text(json.dumps({"text": "Once upon a time."}) + "\n")
    r = recipe(tmp_path, "sources:\n  m: {path: m.jsonl, format: messages}\n  t: {path: t.jsonl, format: text}\n")
    m = load(r, "m")[0][0]
    assert m["id"] == "17" and m["meta"] == {"tools": [{"name": "calc"}]} and len(m["messages"]) == 3
    t = load(r, "t")[0][0]
    assert t["messages"] == [{"role": "assistant", "content": "Once upon a time."}]


def test_folder_glob_json_object_and_csv(tmp_path):
    d = tmp_path / "parts"
    d.mkdir()
    raw = json.loads((DATA / "alpaca_en_demo.json").read_text(encoding="utf-8"))[:30]
    write_jsonl(d / "b.jsonl", raw[10:])
    write_jsonl(d / "a.jsonl", raw[:10])
    (d / "notes.txt").write_text("not data")
    (d / ".cache").mkdir()
    write_jsonl(d / ".cache" / "old.jsonl", raw[:3])             # hidden folders are not data
    (tmp_path / "obj.json").write_text(json.dumps({"version": 2, "data": raw[:5]}))
    import csv
    with open(tmp_path / "rows.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, ["instruction", "input", "output"])
        w.writeheader()
        w.writerows(raw[:4])
    r = recipe(tmp_path, "sources:\n  d: {path: parts, format: alpaca}\n  g: {path: 'parts/*.jsonl', format: alpaca}\n"
                         "  o: {path: obj.json, format: alpaca}\n  c: {path: rows.csv, format: alpaca}\n")
    by_dir, by_glob = load(r, "d")[0], load(r, "g")[0]
    assert [x["messages"][1]["content"] for x in by_dir] == [x["output"] for x in raw]   # sorted: a then b
    assert [(x["id"], x["messages"]) for x in by_glob] == [(x["id"], x["messages"]) for x in by_dir]
    assert [x["messages"][1]["content"] for x in load(r, "o")[0]] == [x["output"] for x in raw[:5]]
    assert [x["messages"][1]["content"] for x in load(r, "c")[0]] == [x["output"] for x in raw[:4]]


def test_saved_datasets_dataset(tmp_path):
    import datasets

    raw = json.loads((DATA / "identity.json").read_text(encoding="utf-8"))
    datasets.Dataset.from_list(raw).save_to_disk(str(tmp_path / "ds"))
    r = recipe(tmp_path, "sources:\n  i: {path: ds, format: alpaca}\n")
    records, quarantine, _ = load(r, "i")
    assert len(records) == len(raw) and not quarantine
    assert records[3]["messages"][1]["content"] == raw[3]["output"]


# --- a corrupted file for every quarantine reason ---------------------------------------------------

def corrupt(tmp_path):
    """One bad row per reason, with good rows between them; -> {(file, line): code}."""
    good = json.dumps({"instruction": "Say hi", "input": "", "output": "hi"})
    alpaca = [good,
              '{"instruction": "x", "output": ',                          # 2 invalid_json
              good,
              b'{"instruction": "caf\xe9", "output": "y"}',               # 4 invalid_utf8
              '["a", "list"]',                                           # 5 not_an_object
              '{"output": "no instruction"}',                            # 6 missing_field
              '{"instruction": 5, "output": "y"}',                       # 7 wrong_type
              '{"instruction": "q", "output": "   "}',                   # 8 empty_turn
              "",
              good,
              '{"instruction": "q", "output": "a \\ud800 b"}']          # 11 invalid_unicode
    with open(tmp_path / "alpaca.jsonl", "wb") as f:
        for line in alpaca:
            f.write((line if isinstance(line, bytes) else line.encode()) + b"\n")
    share = [{"conversations": [{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}]},   # unknown_role
             {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"},
                                {"from": "human", "value": "c"}]},                                       # no_answer (line 14)
             {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}]
    (tmp_path / "share.json").write_text(json.dumps(share, indent=1))
    pr = [{"prompt": "p", "response": "r", "metadata": "{not json"},          # bad_metadata
          {"prompt": "p", "response": "r", "metadata": "[1, 2]"},             # bad_metadata
          {"prompt": "p", "response": "r", "metadata": '{"k": 1}'}]
    (tmp_path / "pr.jsonl").write_text("".join(json.dumps(x) + "\n" for x in pr))
    fields = [{"q": "a", "a": "b", "n": 0}, {"q": "a", "a": "b", "n": "x"}, {"a": "b", "n": 1}]
    (tmp_path / "f.jsonl").write_text("".join(json.dumps(x) + "\n" for x in fields))
    (tmp_path / "trunc.json").write_text('[\n {"instruction": "a", "output": "b"},\n {"instruction": "c", "outp')
    (tmp_path / "bad.csv").write_text("instruction,input,output\nq,,a\nq,a\n")
    (tmp_path / "dup.csv").write_text("instruction,output,output\nq,a,b\n")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    return {("alpaca.jsonl", 2): "invalid_json", ("alpaca.jsonl", 4): "invalid_utf8",
            ("alpaca.jsonl", 5): "not_an_object", ("alpaca.jsonl", 6): "missing_field",
            ("alpaca.jsonl", 7): "wrong_type", ("alpaca.jsonl", 8): "empty_turn",
            ("alpaca.jsonl", 11): "invalid_unicode",
            ("share.json", 2): "unknown_role", ("share.json", 14): "no_answer",
            ("pr.jsonl", 1): "bad_metadata", ("pr.jsonl", 2): "bad_metadata",
            ("f.jsonl", 2): "template_error", ("f.jsonl", 3): "missing_field",
            ("trunc.json", 3): "invalid_json", ("bad.csv", 3): "bad_csv_row", ("bad.parquet", None): "unreadable_file",
            ("dup.csv", 1): "bad_csv_header"}


CORRUPT = """sources:
  alpaca: {path: alpaca.jsonl, format: alpaca}
  share: {path: share.json, format: sharegpt}
  pr: {path: pr.jsonl, format: prompt_response}
  f:
    path: f.jsonl
    format: fields
    fields: {user: "{{ q }}", assistant: "{{ a }}", meta: {half: "{{ n / 2 }}"}}
  trunc: {path: trunc.json, format: alpaca}
  csv: {path: bad.csv, format: alpaca}
  pq: {path: bad.parquet, format: alpaca}
  dup: {path: dup.csv, format: alpaca}
"""


def test_every_quarantine_reason_with_file_and_line(tmp_path):
    expected = corrupt(tmp_path)
    r = recipe(tmp_path, CORRUPT)
    found, kept = {}, {}
    for name in r.sources:
        whole = {"pq": ("bad.parquet", None, "unreadable_file"), "dup": ("dup.csv", 1, "bad_csv_header")}
        if name in whole:   # nothing readable at all: a clear error, not an empty source
            file, line, code = whole[name]
            place = f"{file}:{line}" if line else file
            with pytest.raises(RecipeError, match=f"none of its 1 rows could be used; 1 failed with {code}, "
                                                  f"e.g. {re.escape(place)}: {code}"):
                load(r, name)
            found[(file, line)] = code
            continue
        records, quarantine, stats = load(r, name)
        assert stats["rows_in"] == len(records) + len(quarantine)          # nothing lost silently
        assert sum(stats["dropped"].values()) == len(quarantine)
        kept[name] = len(records)
        for q in quarantine:
            assert set(q) == {"source", "file", "line", "row", "code", "reason", "raw"} and q["reason"].startswith(q["code"])
            found[(q["file"], q["line"])] = q["code"]
    assert found == expected
    assert kept == {"alpaca": 3, "share": 1, "pr": 1, "f": 1, "trunc": 1, "csv": 1}
    q = {x["line"]: x for x in load(r, "alpaca")[1]}
    assert q[4]["raw"] == '{"instruction": "caf\\xe9", "output": "y"}'     # the bad byte, shown, valid UTF-8
    assert "'q' is undefined" in next(x for x in load(r, "f")[1] if x["line"] == 3)["reason"]
    assert "rest of the file" in load(r, "trunc")[1][0]["reason"]
    write_jsonl(tmp_path / "q.jsonl", load(r, "alpaca")[1])               # quarantine entries are JSON-safe
    assert len(read_jsonl(tmp_path / "q.jsonl")) == 7


def test_on_error_fail_names_file_line_and_reason(tmp_path):
    corrupt(tmp_path)
    r = recipe(tmp_path, "sources:\n  a: {path: alpaca.jsonl, format: alpaca, on_error: fail}\n")
    with pytest.raises(RecipeError) as e:
        load(r, "a")
    assert str(e.value).startswith("alpaca.jsonl:2:1: source 'a': invalid_json")   # the place once
    assert "on_error: skip" in str(e.value)


def test_invalid_template_is_a_recipe_error(tmp_path):
    (tmp_path / "f.jsonl").write_text('{"q": "a"}\n')
    # caught by validate, at the template's line and column, before any row is read
    with pytest.raises(RecipeError, match=r"recipe.yaml:\d+:\d+: sources\.f\.fields\.user: invalid template"):
        recipe(tmp_path, "sources:\n  f: {path: f.jsonl, format: fields, fields: {user: '{{ q ', assistant: x}}\n")


def test_load_is_byte_identical_across_runs(tmp_path):
    r = api.load(REPO / "recipes" / "curriculum_3stage.yaml", ["sources.poetry.limit=3000"])
    for i in (1, 2):
        for name in r.sources:
            records, quarantine, _ = load(r, name)
            write_jsonl(tmp_path / str(i) / f"{name}.jsonl", records)
            write_jsonl(tmp_path / str(i) / f"{name}.q.jsonl", quarantine)
    for f in (tmp_path / "1").iterdir():
        assert f.read_bytes() == (tmp_path / "2" / f.name).read_bytes()
