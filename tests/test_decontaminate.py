"""decontaminate: rows sharing a 13-word n-gram with evaluation files are dropped, with the file and line
in the reason; near copies are caught, unrelated real rows are not; the files are part of the
fingerprint; another min_matches is predicted from the cached counts."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers.data import DATA, raw_lines, record, run_data_steps
from runner import api
from runner.data.filters import FILTERS, FilterContext
from runner.data.filters.decontaminate import grams
from runner.data.io import read_jsonl
from runner.errors import RecipeError
from runner.recipe.document import display
from runner.recipe.model import DecontaminateFilter

GSM8K = raw_lines("gsm8k_train.jsonl")
RECIPE = """recipe: deco
model: {base: builtin:tiny-random}
sources:
  gsm8k:
    path: %s
    format: fields
    fields: {user: "{{ question }}", assistant: "{{ answer }}"}
filters:
  - {kind: decontaminate, against: [test.jsonl]%s}
template: {max_length: 512}
"""


def deco(against=("test.jsonl",), **kw) -> DecontaminateFilter:
    args = dict(kind="decontaminate", field="all", against=tuple(against), ngram=13, fields=None, min_matches=1,
                sources=None)
    return DecontaminateFilter(**{**args, **kw})


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def gsm_record(row: dict, rid: str) -> dict:
    return record(row["answer"], rid, user=row["question"])


def test_real_gsm8k_rows_in_the_eval_set_are_dropped_and_no_other(tmp_path):
    """Eval = 40 real GSM8K items; training = all 500: exactly those 40 go, each naming its line."""
    test = GSM8K[100:140]
    write_jsonl(tmp_path / "test.jsonl", test)
    (tmp_path / "r.yaml").write_text(RECIPE % (DATA / "gsm8k_train.jsonl", ""), encoding="utf-8")
    done = run_data_steps(api.load(tmp_path / "r.yaml"), tmp_path / "run")
    out, stats = done["filter.gsm8k"]
    assert stats["dropped"] == {"decontaminate": 40} and stats["rows_out"] == 460
    dropped = read_jsonl(out / "dropped.jsonl")
    for n, row in enumerate(dropped, 1):
        assert row["messages"][0]["content"] == test[n - 1]["question"]
        assert row["reason"] == f"decontaminate 13-gram of test.jsonl:{n}"


def test_near_copies_are_caught_and_a_shorter_overlap_is_not(tmp_path):
    q = GSM8K[7]["question"]
    write_jsonl(tmp_path / "test.jsonl", [{"question": "unrelated words only here"}, GSM8K[7]])
    check = FILTERS["decontaminate"](deco(), FilterContext(base_dir=tmp_path))
    thirteen = " ".join(q.split()[2:15])
    cases = {
        "case and spacing": q.upper().replace(" ", "   \n "),
        "punctuation": q.replace(",", " ,").replace(".", "!!"),
        "13 words inside other text": "Here is a story. " + thirteen + " And then something else entirely.",
        "in the answer only": GSM8K[7]["answer"],
    }
    for name, text in cases.items():
        reason, _ = check(record(text, name))
        assert reason == "decontaminate 13-gram of test.jsonl:2", name
    twelve = " ".join(q.split()[2:14])
    assert check(record("Here is a story. " + twelve + " And then something else.", "12"))[0] is None
    assert check(record(GSM8K[8]["answer"], "other", user=GSM8K[8]["question"]))[0] is None


def test_min_matches_ngram_and_fields(tmp_path):
    row = GSM8K[3]
    write_jsonl(tmp_path / "test.jsonl", [row])
    ctx = FilterContext(base_dir=tmp_path)
    one = " ".join(row["question"].split()[:13])          # exactly one shared 13-gram
    assert FILTERS["decontaminate"](deco(), ctx)(record(one, "a"))[0]
    assert FILTERS["decontaminate"](deco(min_matches=2), ctx)(record(one, "a"))[0] is None
    assert FILTERS["decontaminate"](deco(ngram=14), ctx)(record(one, "a"))[0] is None
    # only the eval rows' answers are indexed: the question no longer matches
    assert FILTERS["decontaminate"](deco(fields=("answer",)), ctx)(record(one, "a"))[0] is None
    assert FILTERS["decontaminate"](deco(field="user"), ctx)(record("x", "b", user=row["question"]))[0]
    assert FILTERS["decontaminate"](deco(field="assistant"), ctx)(record("x", "b", user=row["question"]))[0] is None


def test_parquet_and_json_eval_files_name_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(GSM8K[20:25]), tmp_path / "t.parquet")
    (tmp_path / "t.json").write_text(json.dumps(GSM8K[30:33]), encoding="utf-8")
    check = FILTERS["decontaminate"](deco(against=("t.parquet", "t.json")), FilterContext(base_dir=tmp_path))
    assert check(gsm_record(GSM8K[22], "p"))[0] == "decontaminate 13-gram of t.parquet:3"
    assert check(gsm_record(GSM8K[31], "j"))[0] == "decontaminate 13-gram of t.json:2"
    assert check(gsm_record(GSM8K[40], "n"))[0] is None


def test_chinese_text_counts_characters_as_words(tmp_path):
    poem = "床前明月光疑是地上霜舉頭望明月低頭思故鄉"
    write_jsonl(tmp_path / "test.jsonl", [{"text": poem}])
    check = FILTERS["decontaminate"](deco(), FilterContext(base_dir=tmp_path))
    assert check(record("詩曰：床前明月光，疑是地上霜，舉頭望。", "zh"))[0]   # 13 characters of it, with punctuation
    assert check(record("床前明月光，疑是地上", "short"))[0] is None


def test_a_bad_eval_line_is_one_error_with_its_place(tmp_path):
    (tmp_path / "test.jsonl").write_text('{"q": "fine"}\n{not json\n', encoding="utf-8")
    with pytest.raises(RecipeError, match=r"test.jsonl:2: not JSON"):
        FILTERS["decontaminate"](deco(), FilterContext(base_dir=tmp_path))


def test_ngram_keys_do_not_depend_on_the_hash_seed():
    text = GSM8K[0]["question"]
    here = [int(k) for k in grams(text, 5)]
    code = f"from runner.data.filters.decontaminate import grams; print([int(k) for k in grams({text!r}, 5)])"
    env = {**os.environ, "PYTHONHASHSEED": "4242", "PYTHONPATH": os.pathsep.join(sys.path)}
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert json.loads(there.stdout) == here and len(here) == len(text.split()) - 4


def test_validation_names_the_missing_file_with_its_line(tmp_path):
    text = (RECIPE % (DATA / "gsm8k_train.jsonl", "")).replace("[test.jsonl]",
                                                              "\n      [test.jsonl,\n       missing.jsonl]")
    (tmp_path / "r.yaml").write_text(text, encoding="utf-8")
    write_jsonl(tmp_path / "test.jsonl", GSM8K[:2])
    proc = subprocess.run([sys.executable, "-m", "runner", "validate", str(tmp_path / "r.yaml")], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr + proc.stdout
    assert f"{display(tmp_path / 'r.yaml')}:11:8:" in proc.stderr + proc.stdout     # as shown from this folder
    assert "filters[0].against[1]: missing.jsonl: no such file" in proc.stderr + proc.stdout


def test_eval_file_is_fingerprinted_and_min_matches_is_predicted(tmp_path):
    write_jsonl(tmp_path / "test.jsonl", GSM8K[:30])
    (tmp_path / "r.yaml").write_text(RECIPE % (DATA / "gsm8k_train.jsonl", ", min_matches: 1"), encoding="utf-8")
    cache = str(tmp_path / "cache")
    api.run(tmp_path / "r.yaml", cache_dir=cache, output=str(tmp_path / "out"), dry_run=True, only="filter.gsm8k")
    # a min_matches that keeps the items sharing fewer than 60 n-grams: predicted, then checked by running it
    _, steps, _ = api.plan(tmp_path / "r.yaml", ("filters[0].min_matches=60",), cache_dir=cache)
    st = {s.name: s for s in steps}["filter.gsm8k"]
    assert st.status == "stale" and any("from the cached scores" in w for w in st.why)
    run = api.run(tmp_path / "r.yaml", ("filters[0].min_matches=60",), cache_dir=cache, output=str(tmp_path / "o2"),
                  dry_run=True, only="filter.gsm8k")
    stats = {r.name: r for r in run[2]}["filter.gsm8k"].stats
    assert 470 < stats["rows_out"] < 500 and st.rows == stats["rows_out"]
    # one changed byte of the eval file: the filter reruns
    write_jsonl(tmp_path / "test.jsonl", GSM8K[:29])
    _, steps, _ = api.plan(tmp_path / "r.yaml", cache_dir=cache)
    st = {s.name: s for s in steps}["filter.gsm8k"]
    assert st.status == "stale" and any("test.jsonl" in w for w in st.why)
