"""Hostile or broken data (issue 13's adversarial review), on the shipped recipes and the real data:
paths stay inside their root, symlink loops are walked once, bad rows are quarantined with their reason
said once (nulls, bad JSON, turns out of order), and the mixing arithmetic holds when a source is left
out or filtered empty."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.cli import CURRICULUM, POETRY
from helpers.data import DATA, raw_lines, recipe, run_data_steps
from runner import api
from runner.data.formats import load_source
from runner.errors import RecipeError


# --- paths stay inside their root; symlinks -----------------------------------------------------------

def test_under_keeps_every_path_inside_its_root(tmp_path):
    from runner.paths import UnsafePath, under
    assert under(tmp_path, "a", "b.json") == tmp_path / "a" / "b.json"
    for bad in ("..", ".", "", "../x", "/etc/passwd", "a/../../x", "x\0y"):
        with pytest.raises(UnsafePath):
            under(tmp_path, bad)
    (tmp_path / "out").symlink_to("/tmp")
    with pytest.raises(UnsafePath, match="outside"):
        under(tmp_path, "out", "x")


def _poems_folder(tmp_path: Path) -> Path:
    d = tmp_path / "poems"
    (d / "sub").mkdir(parents=True)
    lines = (DATA / "tang_poems.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (d / "a.jsonl").write_text("".join(lines[:20]), encoding="utf-8")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "b.jsonl").write_text("".join(lines[20:30]), encoding="utf-8")
    return d


def test_a_glob_or_a_folder_walks_a_symlink_loop_once(tmp_path):
    d = _poems_folder(tmp_path)
    (d / "b.jsonl").symlink_to(tmp_path / "elsewhere" / "b.jsonl")
    (d / "loop").symlink_to(".")                      # loop -> .
    (d / "sub" / "up").symlink_to("..")
    text = POETRY.read_text(encoding="utf-8")
    fields = text[text.index("    format: fields"):text.index("filters:")]
    for spec in ("poems/**/*.jsonl", "poems"):
        r = recipe(tmp_path, f"sources:\n  tang:\n    path: '{spec}'\n" + fields)
        records, quarantine, _ = load_source("tang", r.sources["tang"], tmp_path)
        assert len(records) == 30, (spec, len(records))
        assert len({x["id"] for x in records}) == 30
        assert {q["code"] for q in quarantine} == {"symlink_loop"}, quarantine


def test_a_folder_reads_a_symlinked_subfolder_and_quarantines_a_dangling_link(tmp_path):
    d = _poems_folder(tmp_path)
    (d / "linked").symlink_to(tmp_path / "elsewhere")   # a symlinked subfolder is data too
    (d / "gone.jsonl").symlink_to(tmp_path / "nothing.jsonl")
    text = POETRY.read_text(encoding="utf-8")
    fields = text[text.index("    format: fields"):text.index("filters:")]
    r = recipe(tmp_path, "sources:\n  tang:\n    path: poems\n" + fields)
    records, quarantine, stats = load_source("tang", r.sources["tang"], tmp_path)
    assert len(records) == 30
    assert [(q["file"], q["code"]) for q in quarantine] == [("poems/gone.jsonl", "dangling_symlink")]
    assert stats["dropped"] == {"quarantine:dangling_symlink": 1}



# --- rows that are quarantined, with the reason said once ---------------------------------------------

def test_null_fields_are_quarantined_not_written_as_None(tmp_path):
    poems = raw_lines("tang_poems.jsonl")[:4]
    rows = [dict(poems[0], paragraphs=[None] + poems[0]["paragraphs"][1:]),
            dict(poems[1], paragraphs=poems[1]["paragraphs"][:1] + [None, None]),
            dict(poems[2], author=None),
            poems[3]]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows), encoding="utf-8")
    text = POETRY.read_text(encoding="utf-8")
    fields = text[text.index("    format: fields"):text.index("filters:")]
    r = recipe(tmp_path, "sources:\n  tang:\n    path: t.jsonl\n" + fields)
    records, quarantine, stats = load_source("tang", r.sources["tang"], tmp_path)
    assert len(records) == 1 and records[0]["meta"]["author"] == poems[3]["author"]
    assert [q["code"] for q in quarantine] == ["null_field"] * 3
    assert [q["line"] for q in quarantine] == [1, 2, 3]
    assert "None" not in json.dumps(records, ensure_ascii=False)
    assert stats["dropped"] == {"quarantine:null_field": 3}


def test_a_null_required_field_is_quarantined_in_every_format(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"instruction": null, "output": "x"}\n{"instruction": "q", "output": "a"}\n')
    (tmp_path / "m.jsonl").write_text('{"messages": [{"role": "user", "content": null}, {"role": "assistant", "content": "a"}]}\n'
                                      '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n')
    r = recipe(tmp_path, "sources:\n  a: {path: a.jsonl, format: alpaca}\n  m: {path: m.jsonl, format: messages}\n")
    for name in ("a", "m"):
        _, quarantine, _ = load_source(name, r.sources[name], tmp_path)
        assert [q["code"] for q in quarantine] == ["null_field"], quarantine


def test_an_invalid_json_reason_is_said_once(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"instruction": "unterminated\n{"instruction": "q", "output": "a"}\n')
    r = recipe(tmp_path, "sources:\n  a: {path: a.jsonl, format: alpaca}\n")
    _, quarantine, _ = load_source("a", r.sources["a"], tmp_path)
    assert quarantine[0]["reason"] == "invalid_json: Unterminated string starting at column 17"


def test_on_error_fail_names_the_file_and_line_once(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"instruction": "q", "output": "a"}\n{"output": "no instruction"}\n')
    r = recipe(tmp_path, "sources:\n  a: {path: a.jsonl, format: alpaca, on_error: fail}\n")
    with pytest.raises(RecipeError) as e:
        load_source("a", r.sources["a"], tmp_path)
    assert str(e.value).count("a.jsonl:2") == 1, str(e.value)


def test_sharegpt_turns_out_of_order_are_quarantined(tmp_path):
    good = json.loads((DATA / "glaive_toolcall_en_demo.json").read_text())[:40]
    def conv(*turns):
        return {"conversations": [{"from": f, "value": f"{f} says {i}"} for i, f in enumerate(turns)]}
    bad = [conv("gpt", "human", "gpt"),                           # assistant first
           conv("human", "human", "gpt"),                         # two user turns in a row
           conv("human", "gpt", "system", "human", "gpt"),        # system mid-conversation
           conv("observation", "gpt"),                            # a tool result nobody asked for
           conv("human", "gpt", "gpt")]                           # two answers in a row
    (tmp_path / "s.json").write_text(json.dumps(good + bad))
    r = recipe(tmp_path, "sources:\n  s: {path: s.json, format: sharegpt}\n")
    records, quarantine, _ = load_source("s", r.sources["s"], tmp_path)
    assert len(records) == 40                                     # real tool-call data: all valid
    assert [q["code"] for q in quarantine] == ["bad_turn_order"] * 5, quarantine


def test_messages_format_allows_system_only_at_the_start(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"},
                          {"role": "assistant", "content": "a"}]},
            {"messages": [{"role": "tool", "content": "t"}, {"role": "assistant", "content": "a"}]},
            {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                          {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a"}]}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    r = recipe(tmp_path, "sources:\n  m: {path: m.jsonl, format: messages}\n")
    records, quarantine, _ = load_source("m", r.sources["m"], tmp_path)
    assert [q["code"] for q in quarantine] == ["bad_turn_order", "bad_turn_order"]
    assert len(records) == 1       # OpenAI-style messages may hold two user turns in a row


def test_duplicate_ids_are_kept_and_counted(tmp_path):
    rows = json.loads((DATA / "identity.json").read_text())[:10]
    rows = [dict(x, id=f"row{i % 7}") for i, x in enumerate(rows)]     # ids row0..row2 twice
    (tmp_path / "a.json").write_text(json.dumps(rows))
    r = recipe(tmp_path, "sources:\n  a: {path: a.json, format: alpaca}\n")
    records, _, stats = load_source("a", r.sources["a"], tmp_path)
    assert len(records) == 10
    assert stats["duplicate_ids"] == {"rows": 3, "ids": 3, "examples": ["row0", "row1", "row2"]}



# --- mixing arithmetic --------------------------------------------------------------------------------

def _stage(mix, size=None):
    from runner.recipe.model import Stage
    return Stage(name="s", mix=mix, size=size, from_=None, skip=False, train=None, ewc=None)


def test_systematic_sampling_drops_a_source_left_out_of_the_stage():
    from runner.data.mixing import mix
    from runner.recipe.model import Sampling
    rows = {"poems": raw_lines("tang_poems.jsonl")[:200], "identity": json.loads((DATA / "identity.json").read_text())}
    out, report = mix(rows, _stage({"poems": 1.0}, 100), {}, Sampling("systematic", False), 7)
    assert len(out) == 100 and report["stats"]["by_source"]["identity"]["dropped"] == {"mix:not_in_stage": len(rows["identity"])}


def test_systematic_sampling_fills_a_curriculum_first_stage(tmp_path):
    r = api.load(CURRICULUM, ["model.base=builtin:tiny", "sampling.method=systematic", "sources.poetry.limit=600", "sources.general.limit=300",
                              "stages.base.size=200", "stages.task.size=100", "stages.domain.size=100"])
    done = run_data_steps(r, tmp_path)
    assert done["mix.base"][1]["rows_out"] == 200


def test_the_default_mix_survives_a_filter_that_empties_a_source(tmp_path):
    r = recipe(tmp_path, "sources:\n  general: {path: '{data}/alpaca_en_demo.json', format: alpaca}\n"
                         "  identity: {path: '{data}/identity.json', format: alpaca}\n"
                         "filters:\n  - {kind: length, field: assistant, min_chars: 100000, sources: [identity]}\n")
    done = run_data_steps(r, tmp_path)
    stats = done["mix.main"][1]
    assert stats["mix"]["requested"] == {"general": 1.0}
    assert stats["rows_out"] == stats["mix"]["available"]["general"] > 0 == stats["mix"]["available"]["identity"]


# --- a row nested deeper than any reader allows (issue 26 D10): parquet and saved datasets bypass the
# readers' MAX_DEPTH, so the null check and the null wrapper of `fields` must not recurse ---------------------

def test_a_fields_row_nested_100000_levels_beside_a_null_renders_or_names_the_null():
    from runner.data.fields import Fields
    from runner.data.mapped import MapError
    from runner.recipe import model
    deep = 1
    for i in range(100_000):
        deep = [deep] if i % 2 else {"k": deep}
    row = {"q": None, "a": "y", "deep": deep}
    fields = lambda user: Fields("s", model.Fields(system=None, user=user, assistant="{{ a }}", id=None, meta={}))
    assert fields("{{ q or 'none' }}").render(row) == {"user": "none", "assistant": "y"}
    with pytest.raises(MapError) as e:
        fields("{{ q }}").render(row)
    assert e.value.code == "null_field" and "'q' is null" in e.value.detail


# --- D15: bad rows of explicit task files are quarantined like a source's -------------------------------------

def test_bad_rows_of_explicit_task_files_are_in_the_report_and_the_run_quarantine(tmp_path, capsys):
    from helpers.cli import cli
    from helpers.data import REPO
    (tmp_path / "recipes").mkdir()
    (tmp_path / "data").symlink_to(REPO / "data")
    for name in ("base_lora.yaml", "fomaml_explicit.yaml"):
        (tmp_path / "recipes" / name).write_text((REPO / "recipes" / name).read_text(encoding="utf-8"), encoding="utf-8")
    huge = "9" * 5_000     # metadata holding an integer past Python's digit limit: was an AttributeError
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": null, "response": "r"}\n{"prompt": "p", "response": "r", "metadata": "{x"}\n'
                   + json.dumps({"prompt": "p2", "response": "r2", "metadata": huge}) + "\n", encoding="utf-8")
    query = "meta.tasks[0].query=[../data/meta_tasks/math_2step/query.parquet, ../bad.jsonl]"
    argv = ["run", str(tmp_path / "recipes" / "fomaml_explicit.yaml"), "--set", "model.base=builtin:tiny",
            "--set", "template.max_length=256", "--set", query, "--dry-run",
            "--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "out")]
    code, out, err = cli(capsys, *argv)
    assert code == 0, err
    q = tmp_path / "out" / "quarantine" / "meta.tasks.jsonl"
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert report["quarantine"] == {"meta.tasks": {"count": 3, "file": str(q)}}
    rows = [json.loads(x) for x in q.read_text(encoding="utf-8").splitlines()]
    assert [(r["source"], r["file"], r["line"], r["code"]) for r in rows] == [
        ("math_2step", "../bad.jsonl", 1, "null_field"), ("math_2step", "../bad.jsonl", 2, "bad_metadata"),
        ("math_2step", "../bad.jsonl", 3, "bad_metadata")]
    assert "4300 digits" in rows[2]["reason"]
    assert f"task files: 3 rows quarantined (bad_metadata 2, null_field 1): see {q}" in out + err
    assert "| meta.tasks | 3 |" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    # fixed: the run directory and the report say so
    bad.write_text('{"prompt": "p", "response": "r"}\n', encoding="utf-8")
    code, out, err = cli(capsys, *argv)
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))["quarantine"] == {}
    assert not q.exists()


# --- D7: a null inside a list or dict is null, or the row is null_field; never the text "Undefined" ------------

NULL_FILTERS = ["{{ v }}", "{{ v | list }}", "{{ v | pprint }}", "{{ v | string }}", "{{ v | dictsort }}",
                "{{ v | tojson }}", "{{ v is none }}", "{{ v | join(',') }}", "{{ v | first is none }}",
                "{{ v | map('string') | join }}", "{{ v | select | list }}", "{{ v | length }}",
                "{% for x in v %}{{ x is none }}{% endfor %}", "{{ v | default('d') }}", "{{ v or 'd' }}"]


def _render_v(template: str, v):
    """-> ("text", output) or ("quarantined", code) for a `fields` row {"q": "q", "v": v}."""
    from runner.data.fields import Fields
    from runner.data.mapped import MapError
    from runner.recipe import model
    f = Fields("s", model.Fields(system=None, user="{{ q }}", assistant=template, id=None, meta={}))
    try:
        return "text", f.render({"q": "q", "v": v})["assistant"]
    except MapError as e:
        return "quarantined", e.code


def test_a_null_inside_a_list_or_dict_is_null_to_tests_and_tojson_and_never_printed():
    printed = ("{{ v }}", "{{ v | pprint }}", "{{ v | string }}")
    for v, more in (([None, "p1"], ("{{ v | list }}", "{{ v | join(',') }}")),
                    ({"a": None, "b": 1}, ("{{ v | dictsort }}",))):
        for t in printed + more:
            assert _render_v(t, v) == ("quarantined", "null_field"), (t, v)
        assert json.loads(_render_v("{{ v | tojson }}", v)[1]) == v
    assert _render_v("{{ v | list }}", {"a": None}) == ("text", "['a']")      # a dict's keys: no null printed
    assert _render_v("{{ v[0] is none }}", [None]) == ("text", "True")
    assert _render_v("{{ v is none }}", None) == ("text", "True")
    assert _render_v("{{ v[0] or 'none' }}", [None]) == ("text", "none")


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

_LEAF = st.one_of(st.none(), st.integers(-5, 5), st.text("abc ", max_size=3), st.booleans())


def _containers(inner):
    return st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text("xyz", min_size=1, max_size=2), inner, max_size=3))


_NESTED = st.recursive(_LEAF, _containers, max_leaves=8)


def _has_none(v) -> bool:
    return v is None or any(map(_has_none, v.values() if isinstance(v, dict) else v if isinstance(v, list) else ()))


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(v=_NESTED, template=st.sampled_from(NULL_FILTERS))
def test_generated_nested_rows_with_nulls_through_every_filter(v, template):
    """Property: a row's nulls never reach the text as "Undefined" or "None"; tojson writes them as null;
    a row without nulls renders as plain Jinja renders it."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    got = _render_v(template, v)
    if got[0] == "quarantined":
        assert got[1] in ("null_field", "template_error"), (template, v, got)
        assert _has_none(v) or got[1] == "template_error", (template, v, got)
        return
    assert "Undefined" not in got[1] and ("None" not in got[1] or not _has_none(v)), (template, v, got)
    if template == "{{ v | tojson }}":
        assert json.loads(got[1]) == v
    if not _has_none(v):
        plain = ImmutableSandboxedEnvironment().from_string(template)
        assert got[1] == plain.render(q="q", v=v), (template, v)
