"""Regression tests for issue 13: the defects an adversarial user found, one test (or more) each, on the
shipped recipes and the real data. Numbers in the names are the issue's."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import example, given, settings, strategies as st

from data_fixtures import DATA, REPO, raw_lines, recipe, run_data_steps
from runner.recipe.load import display   # how the CLI shows a path (relative when close by), so the tests hold wherever they run
from runner import api
from runner.cli import main
from runner.data.formats import load_source
from runner.errors import RecipeError

POETRY = REPO / "recipes" / "poetry_lora.yaml"
CURRICULUM = REPO / "recipes" / "curriculum_3stage.yaml"
LINE = re.compile(r"^\S+:\d+:\d+: ")      # file:line:col: message


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def user_error(capsys, *argv: str) -> list[str]:
    """Run the CLI, expect exit 2 with no traceback; -> the error lines (without the summary)."""
    code, out, err = cli(capsys, *argv)
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    return err.strip().splitlines()[:-1]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = f"model: {{base: builtin:tiny}}\nsources:\n  id: {{path: {DATA}/identity.json, format: alpaca}}\n"


# --- 1. names that are not safe path components --------------------------------------------------------

@pytest.mark.parametrize("name", ["..", ".", "x\n", "../x", ".hidden", "-rf"])
def test_1_recipe_name_must_be_a_plain_path_component(tmp_path, capsys, name):
    r = write(tmp_path / "r.yaml", f"recipe: {json.dumps(name)}\n" + MINIMAL)
    lines = user_error(capsys, "validate", str(r))
    assert any(l.startswith(f"{display(r)}:1:1: recipe:") and "cannot be a recipe name" in l for l in lines), lines


def test_1_source_names_with_a_trailing_newline_are_refused(tmp_path, capsys):
    # Python's `$` matches before a final "\n": the schema's patterns must not let "x\n" through anywhere
    r = write(tmp_path / "r.yaml", f'recipe: r\nmodel: {{base: builtin:tiny}}\nsources:\n  "id\\n": '
                                   f'{{path: {DATA}/identity.json, format: alpaca}}\n')
    lines = user_error(capsys, "validate", str(r))
    assert any("does not match" in l for l in lines), lines


def test_1_under_keeps_every_path_inside_its_root(tmp_path):
    from runner.paths import UnsafePath, under
    assert under(tmp_path, "a", "b.json") == tmp_path / "a" / "b.json"
    for bad in ("..", ".", "", "../x", "/etc/passwd", "a/../../x", "x\0y"):
        with pytest.raises(UnsafePath):
            under(tmp_path, bad)
    (tmp_path / "out").symlink_to("/tmp")
    with pytest.raises(UnsafePath, match="outside"):
        under(tmp_path, "out", "x")


# --- 2. secrets --------------------------------------------------------------------------------------------

def test_2_every_value_from_the_environment_is_masked_whatever_its_name(tmp_path, monkeypatch):
    for var, value in {"HF_AUTH": "hfauth-123456", "GITHUB_PAT": "ghp_abcdef123", "DB_CREDENTIALS": "u:pw-secret"}.items():
        monkeypatch.setenv(var, value)
    r = write(tmp_path / "r.yaml", "recipe: s\n" + MINIMAL +
              "template: {system: 'token=${oc.env:HF_AUTH}'}\n"
              "evaluate: {generate: {prompts: ['${oc.env:GITHUB_PAT}', 'then ${evaluate.generate.prompts[0]}',"
              " '${oc.env:DB_CREDENTIALS}']}}\n")
    rec = api.load(r)
    assert rec.template.system == "token=hfauth-123456"           # the run gets the value
    assert rec.evaluate.generate.prompts[1] == "then ghp_abcdef123"
    shown = api.show(rec) + api.show(rec, "json")
    for value in ("hfauth-123456", "ghp_abcdef123", "u:pw-secret"):
        assert value not in shown
    # the indirect reference is masked too
    assert "then" not in shown


def test_2_set_type_error_does_not_echo_the_value(capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_leakyleakyleaky")
    lines = user_error(capsys, "validate", str(POETRY), "--set", "seed=${oc.env:HF_TOKEN}")
    assert lines and all("hf_leaky" not in l for l in lines), lines
    assert any("seed: expected integer" in l for l in lines)
    lines = user_error(capsys, "validate", str(POETRY), "--set", "template.chat=${oc.env:HF_TOKEN}")
    assert lines and all("hf_leaky" not in l for l in lines), lines


# --- 3. nulls in `fields` rows ---------------------------------------------------------------------------

def test_3_null_fields_are_quarantined_not_written_as_None(tmp_path):
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


def test_3_null_required_field_in_other_formats(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"instruction": null, "output": "x"}\n{"instruction": "q", "output": "a"}\n')
    (tmp_path / "m.jsonl").write_text('{"messages": [{"role": "user", "content": null}, {"role": "assistant", "content": "a"}]}\n'
                                      '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n')
    r = recipe(tmp_path, "sources:\n  a: {path: a.jsonl, format: alpaca}\n  m: {path: m.jsonl, format: messages}\n")
    for name in ("a", "m"):
        _, quarantine, _ = load_source(name, r.sources[name], tmp_path)
        assert [q["code"] for q in quarantine] == ["null_field"], quarantine


# --- 4. symlinks --------------------------------------------------------------------------------------------

def _poems_folder(tmp_path: Path) -> Path:
    d = tmp_path / "poems"
    (d / "sub").mkdir(parents=True)
    lines = (DATA / "tang_poems.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (d / "a.jsonl").write_text("".join(lines[:20]), encoding="utf-8")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "b.jsonl").write_text("".join(lines[20:30]), encoding="utf-8")
    return d


def test_4_glob_follows_a_symlink_loop_once(tmp_path):
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


def test_4_folder_reads_symlinked_subfolder_and_counts_a_dangling_link(tmp_path):
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


# --- 5. NaN and infinity ---------------------------------------------------------------------------------

@pytest.mark.parametrize("override", ["mix={tang: .nan}", "split.eval=.nan", "train.epochs=.nan",
                                      "train.learning_rate=.nan", "train.epochs=.inf", "train.warmup_ratio=-.inf"])
def test_5_nan_and_inf_are_refused_by_validate(capsys, override):
    lines = user_error(capsys, "validate", str(POETRY), "--set", override)
    assert any("NaN and infinity are not allowed" in l for l in lines), lines


def test_5_nan_in_a_file_has_line_and_column(tmp_path, capsys):
    r = write(tmp_path / "r.yaml", "recipe: r\n" + MINIMAL + "train:\n  epochs: .nan\n  learning_rate: .inf\n")
    lines = user_error(capsys, "validate", str(r))
    assert lines == [f"{display(r)}:6:11: train.epochs: nan is not a usable number (NaN and infinity are not allowed)",
                     f"{display(r)}:7:18: train.learning_rate: inf is not a usable number (NaN and infinity are not allowed)"]


# --- 6 / 7. mixing arithmetic ------------------------------------------------------------------------------

def _stage(mix, size=None):
    from runner.recipe.model import Stage
    return Stage(name="s", mix=mix, size=size, from_=None, skip=False, train=None, ewc=None)


def test_6_systematic_sampling_with_a_source_left_out_of_the_stage():
    from runner.data.mixing import mix
    from runner.recipe.model import Sampling
    rows = {"poems": raw_lines("tang_poems.jsonl")[:200], "identity": json.loads((DATA / "identity.json").read_text())}
    out, report = mix(rows, _stage({"poems": 1.0}, 100), {}, Sampling("systematic", False), 7)
    assert len(out) == 100 and report["stats"]["by_source"]["identity"]["dropped"] == {"mix:not_in_stage": len(rows["identity"])}


def test_6_curriculum_first_stage_mixes_with_systematic_sampling(tmp_path):
    r = api.load(CURRICULUM, ["model.base=builtin:tiny", "sampling.method=systematic", "sources.poetry.limit=600", "sources.general.limit=300",
                              "stages.base.size=200", "stages.task.size=100", "stages.domain.size=100"])
    done = run_data_steps(r, tmp_path)
    assert done["mix.base"][1]["rows_out"] == 200


def test_7_default_mix_when_a_filter_empties_a_source(tmp_path):
    r = recipe(tmp_path, "sources:\n  general: {path: '{data}/alpaca_en_demo.json', format: alpaca}\n"
                         "  identity: {path: '{data}/identity.json', format: alpaca}\n"
                         "filters:\n  - {kind: length, field: assistant, min_chars: 100000, sources: [identity]}\n")
    done = run_data_steps(r, tmp_path)
    stats = done["mix.main"][1]
    assert stats["mix"]["requested"] == {"general": 1.0}
    assert stats["rows_out"] == stats["mix"]["available"]["general"] > 0 == stats["mix"]["available"]["identity"]


# --- 8. alias bombs --------------------------------------------------------------------------------------

def test_8_alias_bomb_is_refused_quickly_with_a_line(tmp_path, capsys):
    text, prev = "recipe: bomb\na: &a [x, x, x, x, x, x, x, x, x, x]\n", "a"
    for level in "bcdefgh":   # 10^8 values from ~400 bytes
        text += f"{level}: &{level} [" + ", ".join([f"*{prev}"] * 10) + "]\n"
        prev = level
    r = write(tmp_path / "bomb.yaml", text)
    start = time.perf_counter()
    lines = user_error(capsys, "validate", str(r))
    assert time.perf_counter() - start < 5
    assert len(lines) == 1 and LINE.match(lines[0]) and "alias" in lines[0], lines
    # the line is one the user wrote aliases on (a top-level value), not a place inside the first anchor
    line, col = map(int, re.match(r"^.*?:(\d+):(\d+): ", lines[0]).groups())
    assert text.splitlines()[line - 1][col - 1:].startswith("&") and "*" in text.splitlines()[line - 1], lines


def test_8_recursive_aliases_in_a_file_or_a_set_value(tmp_path, capsys):
    r = write(tmp_path / "r.yaml", "recipe: r\nmix: &a [*a]\n" + MINIMAL)
    lines = user_error(capsys, "validate", str(r))
    assert lines == [f"{display(r)}:2:6: a YAML alias refers to the anchor it is inside (a recursive structure); a recipe is a tree"]
    lines = user_error(capsys, "validate", str(POETRY), "--set", "mix=&a {x: *a}")
    assert lines == ["--set mix=&a {x: *a}: a YAML alias refers to the anchor it is inside (a recursive structure); "
                     "a recipe is a tree"]
    lines = user_error(capsys, "validate", str(POETRY), "--set", "mix=!!python/object/apply:os.system [ls]")
    assert "is not allowed: recipes are plain data" in lines[0]


# --- 9 / 10. --set crashes -----------------------------------------------------------------------------

@pytest.mark.parametrize("override", ["train.micro_batch_size=0", "train.world_size=0",
                                      "stages.task.train.micro_batch_size=0"])
def test_9_zero_batch_divisors_are_schema_errors(capsys, override):
    lines = user_error(capsys, "validate", str(CURRICULUM), "--set", override)
    assert any("is less than the minimum of 1" in l for l in lines), lines


@pytest.mark.parametrize("override", ["...=1", ".=1", "=1", "[0]=1"])
def test_10_set_without_a_key(capsys, override):
    lines = user_error(capsys, "validate", str(POETRY), "--set", override)
    assert len(lines) == 1 and lines[0].startswith(f"--set {override}:"), lines


# --- 12. extends chains -------------------------------------------------------------------------------------

def test_12_a_500_file_extends_chain_is_one_clear_error(tmp_path):
    for i in range(500):
        write(tmp_path / f"r{i}.yaml", f"extends: r{i + 1}.yaml\n" if i < 499 else "recipe: deep\n" + MINIMAL)
    res = subprocess.run([sys.executable, "-m", "runner", "validate", str(tmp_path / "r0.yaml")],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and "`extends` chain is more than 32 files deep" in lines[0], lines


def test_12_a_chain_within_the_limit_still_loads(tmp_path):
    for i in range(10):
        write(tmp_path / f"r{i}.yaml", f"extends: r{i + 1}.yaml\nseed: {i}\n")
    write(tmp_path / "r10.yaml", "recipe: deep\n" + MINIMAL)
    assert api.load(tmp_path / "r0.yaml").seed == 0


# --- messages ----------------------------------------------------------------------------------------------

def test_msg_set_a_name_on_a_list(capsys):
    lines = user_error(capsys, "validate", str(POETRY), "--set", "filters.x.kind=length")
    assert lines == ["--set filters.x.kind=length: filters is a list: name an item by its index "
                     "(filters[0], filters[1], ...), not 'x'"]
    lines = user_error(capsys, "validate", str(POETRY), "--set", "filters[9].kind=length")
    assert "filters has 4 items; index 9 is out of range" in lines[0]


def test_msg_json_reason_reads_once(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"instruction": "unterminated\n{"instruction": "q", "output": "a"}\n')
    r = recipe(tmp_path, "sources:\n  a: {path: a.jsonl, format: alpaca}\n")
    _, quarantine, _ = load_source("a", r.sources["a"], tmp_path)
    assert quarantine[0]["reason"] == "invalid_json: Unterminated string starting at column 17"


def test_msg_on_error_fail_names_the_place_once(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"instruction": "q", "output": "a"}\n{"output": "no instruction"}\n')
    r = recipe(tmp_path, "sources:\n  a: {path: a.jsonl, format: alpaca, on_error: fail}\n")
    with pytest.raises(RecipeError) as e:
        load_source("a", r.sources["a"], tmp_path)
    assert str(e.value).count("a.jsonl:2") == 1, str(e.value)


@pytest.mark.parametrize("target,message", [("/tmp", "names a folder, not a recipe file"),
                                            ("/dev/null", "which is not a regular file")])
def test_msg_extends_a_folder_or_a_device(tmp_path, capsys, target, message):
    r = write(tmp_path / "r.yaml", f"recipe: r\nextends: {target}\n" + MINIMAL)
    lines = user_error(capsys, "validate", str(r))
    assert lines[0].startswith(f"{display(r)}:2:10: ") and message in lines[0], lines


@pytest.mark.parametrize("text,kind", [("null\n", "null"), ("~\n", "null"), ("3\n", "an integer"),
                                       ("[a]\n", "a list"), ("hello\n", "a string")])
def test_msg_a_document_that_is_not_a_mapping(tmp_path, capsys, text, kind):
    r = write(tmp_path / "r.yaml", text)
    lines = user_error(capsys, "validate", str(r))
    assert lines == [f"{display(r)}:1:1: the recipe must be a mapping of keys (recipe:, model:, sources: ...), not {kind}"]


def test_msg_nul_byte_has_line_and_column(tmp_path, capsys):
    r = write(tmp_path / "r.yaml", "recipe: r\nmodel: {base: buil\0tin:tiny}\n")
    lines = user_error(capsys, "validate", str(r))
    assert lines == [f"{display(r)}:2:19: YAML: character U+0000 is not allowed in a YAML file; remove it"]


def test_msg_sharegpt_turns_must_alternate(tmp_path):
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


def test_msg_messages_format_system_only_at_the_start(tmp_path):
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


def test_msg_duplicate_ids_are_counted(tmp_path):
    rows = json.loads((DATA / "identity.json").read_text())[:10]
    rows = [dict(x, id=f"row{i % 7}") for i, x in enumerate(rows)]     # ids row0..row2 twice
    (tmp_path / "a.json").write_text(json.dumps(rows))
    r = recipe(tmp_path, "sources:\n  a: {path: a.json, format: alpaca}\n")
    records, _, stats = load_source("a", r.sources["a"], tmp_path)
    assert len(records) == 10
    assert stats["duplicate_ids"] == {"rows": 3, "ids": 3, "examples": ["row0", "row1", "row2"]}


# --- 11. a file where a folder belongs ----------------------------------------------------------------------

@pytest.mark.parametrize("argv,message", [
    (("run", "{r}", "--output", "{f}"), "--output {f}: this is a file, not a folder"),
    (("run", "{r}", "--cache-dir", "{f}"), "--cache-dir {f}: this is a file, not a folder"),
    (("run", "{r}", "--cache-dir", "{f}/sub"), "--cache-dir {f}/sub: {f} is a file"),
    (("plan", "{r}", "--cache-dir", "{f}"), "--cache-dir {f}: this is a file, not a folder"),
])
def test_11_a_file_given_as_a_folder(tmp_path, capsys, argv, message):
    f = write(tmp_path / "afile", "keep me\n")
    argv = [a.format(r=POETRY, f=f) for a in argv] + ["--set", "model.base=builtin:tiny"]
    code, out, err = cli(capsys, *argv)
    assert code == 2 and "Traceback" not in err
    assert err.strip() == "error: " + message.format(f=f) + err.strip().split(message.format(f=f), 1)[1], err
    assert f.read_text() == "keep me\n"


# --- messages: command-line counts, init_from ---------------------------------------------------------------

@pytest.mark.parametrize("argv", [("inspect", str(POETRY), "--n", "-1"), ("inspect", str(POETRY), "--n", "0"),
                                  ("run", str(POETRY), "--launcher", "torchrun", "--num-procs", "0")])
def test_msg_counts_below_one_are_refused(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "it must be at least 1" in err and "is required" not in err, err


def test_msg_missing_init_from_is_said_by_validate_and_plan(tmp_path, capsys):
    import shutil
    shutil.copytree(REPO / "recipes", tmp_path / "recipes", ignore=shutil.ignore_patterns(".recipe"))
    (tmp_path / "data").symlink_to(DATA)        # a checkout where curriculum_3stage has not run yet
    r = tmp_path / "recipes" / "stage2_correction.yaml"
    code, out, err = cli(capsys, "validate", str(r))
    assert code == 0 and "warning: model.init_from: no saved weights at ../runs/curriculum_3stage/base/final" in err
    code, out, err = cli(capsys, "plan", str(r), "--cache-dir", str(tmp_path / "cache"))
    assert code == 0 and "warning: model.init_from: no saved weights" in err


# --- 1, 2, 13 through `recipe run`: what lands on disk ------------------------------------------------------

SECRET_RECIPE = """recipe: masked
model: {base: builtin:tiny}
sources:
  a: {path: a.jsonl, format: alpaca}
template: {system: "token=${oc.env:HF_AUTH}", max_length: 64}
split: {eval: 0.2}
"""


def _all_text(root: Path) -> str:
    out = []
    for p in root.rglob("*"):
        if p.is_file() and p.suffix in (".json", ".jsonl", ".md", ".yaml", ".txt"):
            out.append(p.read_text(encoding="utf-8", errors="replace"))
    return "\n".join(out)


def test_2_13_run_masks_secrets_on_disk_and_keeps_one_runs_quarantine(tmp_path, capsys, monkeypatch):
    rows = json.loads((DATA / "identity.json").read_text())[:40]
    bad = '{"instruction": "no output"}\n'
    (tmp_path / "a.jsonl").write_text(bad + "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows))
    r = write(tmp_path / "r.yaml", SECRET_RECIPE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_AUTH", "hf_firstsecret")
    before = {p for p in tmp_path.rglob("*")}
    code, out, err = cli(capsys, "run", str(r), "--dry-run", "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, err
    written = {p for p in tmp_path.rglob("*")} - before
    assert all(p.is_relative_to(tmp_path / "runs" / "masked") or p.is_relative_to(tmp_path / "cache") or p == tmp_path / "runs"
               for p in written), sorted(map(str, written))
    run = tmp_path / "runs" / "masked"
    assert (run / "quarantine" / "a.jsonl").is_file()
    on_disk = _all_text(tmp_path / "cache") + _all_text(run)
    assert "hf_firstsecret" not in on_disk and "token=" not in on_disk      # manifests, index files, report
    # the value changes: plan says so without showing either value
    monkeypatch.setenv("HF_AUTH", "hf_secondsecret")
    code, out, err = cli(capsys, "plan", str(r), "--cache-dir", str(tmp_path / "cache"))
    assert code == 0 and "a value from the environment changed (not shown)" in out
    assert "secret" not in out + err
    for fmt in ("text", "markdown", "json"):
        code, out, err = cli(capsys, "diff", str(r), "--set-b", "template.system=other ${oc.env:GITHUB_PAT}",
                             "--format", fmt, "--cache-dir", str(tmp_path / "cache"))
        assert "secret" not in out + err and "token=" not in out + err, (fmt, out)
    # 13: the source is fixed; the run directory reflects this run only
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows))
    code, out, err = cli(capsys, "run", str(r), "--dry-run", "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, err
    report = json.loads((run / "report.json").read_text())
    assert report["quarantine"]["a"]["count"] == 0
    assert not list((run / "quarantine").glob("*.jsonl"))
    # duplicate ids are kept and reported
    dup = dict(rows[0], id="same")
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows + [dup, dup]))
    code, out, err = cli(capsys, "run", str(r), "--dry-run", "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, err
    report = json.loads((run / "report.json").read_text())
    assert report["quarantine"]["a"]["duplicate_ids"] == {"rows": 1, "ids": 1, "examples": ["same"]}
    assert "a: 1 rows share an id with an earlier row (1 ids, e.g. same)" in (run / "report.md").read_text()


# --- values from the environment in what a run stores ---------------------------------------------------

def test_2_a_number_from_the_environment_is_masked_in_step_parameters(tmp_path, monkeypatch):
    from runner.dag.compile import compile_recipe
    from runner.dag.fingerprint import fingerprint_graph
    from runner.steps import STEPS

    monkeypatch.setenv("LR", "0.000234")
    r = api.load(write(tmp_path / "r.yaml", "recipe: s\n" + MINIMAL.replace("builtin:tiny", "builtin:tiny-random") +
                       "train: {learning_rate: '${oc.decode:${oc.env:LR}}', max_steps: 7}\n"))
    assert r.train.learning_rate == 0.000234
    graph = compile_recipe(r)
    fps = fingerprint_graph(graph, tmp_path, {k: m.VERSION for k, m in STEPS.items()})
    stored = json.dumps({n: f.components for n, f in fps.items()})
    assert "0.000234" not in stored and "2.34e-04" not in stored
    assert '"max_steps":7' in stored.replace(" ", "")        # a number not from the environment is shown
    monkeypatch.setenv("LR", "0.0003")
    assert fingerprint_graph(compile_recipe(api.load(tmp_path / "r.yaml")), tmp_path,
                             {k: m.VERSION for k, m in STEPS.items()})["train.main"].value != fps["train.main"].value


def test_2_the_multi_process_spec_file_holds_no_value_from_the_environment(tmp_path, monkeypatch):
    from runner.dag.compile import compile_recipe
    from runner.steps.train import stage_spec
    from runner.train import worker

    monkeypatch.setenv("HF_AUTH", "hfauth-123456")
    monkeypatch.setenv("LR", "0.000234")
    r = api.load(write(tmp_path / "r.yaml", "recipe: s\n" + MINIMAL +
                       "template: {system: 'token=${oc.env:HF_AUTH}'}\n"
                       "train: {learning_rate: '${oc.decode:${oc.env:LR}}'}\n"))
    graph = compile_recipe(r)
    spec = stage_spec(r, "main")
    assert spec.template.system == "token=hfauth-123456" and spec.train.learning_rate == 0.000234
    path = worker.write_spec(tmp_path / "spec.json", "runner.trainers.sft.driver", spec,
                             {"train_rows": "rows.jsonl", "out_dir": str(tmp_path)}, secrets=graph.secrets)
    text = path.read_text()
    assert "hfauth-123456" not in text and "0.000234" not in text
    # the processes the launcher starts get the values in their environment and train the same stage
    monkeypatch.setenv(worker.SECRETS_ENV, json.dumps(list(graph.secrets)))
    assert worker.read_spec(path)[1] == spec
    monkeypatch.delenv(worker.SECRETS_ENV)
    with pytest.raises(RecipeError, match="RECIPE_SECRETS"):
        worker.read_spec(path)


_SPEC_VALUES = st.recursive(
    st.one_of(st.text(alphabet="ab2${}[]0.-S", max_size=8), st.integers(-3, 300),
              st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=False), st.booleans(), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text("xyz", max_size=3), inner, max_size=4)),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@example(value="a-aab", secrets=["aab", "S[0"])   # "S[0" is inside ${RECIPE_SECRETS[0]}
@given(value=_SPEC_VALUES, secrets=st.lists(st.text(alphabet="ab2.0-S[]", min_size=1, max_size=4), unique=True, max_size=3))
def test_2_the_spec_file_round_trips_whatever_the_values_from_the_environment(value, secrets):
    """Values from the environment of any length (a "2" is one too, masked where a value is exactly it)
    leave the spec file and come back: the launched process trains the very same stage. Secrets such as
    "S[0" occur inside a placeholder (`${RECIPE_SECRETS[0]}`): hiding is one pass, so none is found there."""
    from runner.train import worker

    secrets = tuple(sorted(secrets, key=len, reverse=True))     # as the graph holds them: longest first
    hidden = worker._hide(value, secrets)
    assert worker._show(hidden, list(secrets)) == value
    exact = (isinstance(value, str) and value in secrets) or \
        (isinstance(value, (int, float)) and not isinstance(value, bool) and str(value) in secrets)
    if exact:   # a value that is exactly one from the environment never stays in the file
        assert hidden != value


def test_2_a_count_that_equals_a_value_from_the_environment_is_masked_and_the_run_still_reports(tmp_path, capsys,
                                                                                             monkeypatch):
    """A threshold from the environment equal to a row count (494 rows load from the first 500 poems) makes
    that count *** wherever it is stored: the run, its cached rerun and their reports must still work."""
    from data_fixtures import TANG_FIELDS

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINC", "494")
    r = write(tmp_path / "r.yaml", f"recipe: counted\nmodel: {{base: builtin:tiny}}\nsources:\n  tang:\n"
              f"    path: {DATA}/tang_poems.jsonl\n    format: fields\n    limit: 500{TANG_FIELDS}\n"
              "filters:\n  - {kind: length, field: assistant, max_chars: '${oc.decode:${oc.env:MINC}}'}\n"
              "split: {strategy: random, eval: 0.1}\n")
    for attempt in ("ran", "cached"):
        code, out, err = cli(capsys, "run", str(r), "--dry-run", "--cache-dir", str(tmp_path / "cache"))
        assert code == 0 and "Traceback" not in err, (attempt, err[-3000:])
        report = (tmp_path / "runs" / "counted" / "report.md").read_text()
        assert "| load.tang |" in report, attempt
    stored = _all_text(tmp_path / "cache")
    assert '"rows_out": "***"' in stored.replace(" ", "").replace('"rows_out":"***"', '"rows_out": "***"')


def test_2_masked_keys_stay_apart_so_a_changed_value_changes_the_fingerprint():
    # a mix keyed by names from the environment: masking both keys to one "***" would keep one weight only,
    # and a changed weight would then reuse the cached step
    from runner.recipe.secrets import redact

    secrets = ["corpus-east", "corpus-west"]
    a = redact({"mix": {"corpus-east": 0.3, "corpus-west": 0.7}}, secrets)
    b = redact({"mix": {"corpus-east": 0.5, "corpus-west": 0.7}}, secrets)
    assert a != b and len(a[0]["mix"]) == 2
    assert "corpus" not in json.dumps(a) + json.dumps(b)
