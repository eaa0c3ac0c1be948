"""A hostile or broken recipe or command line (issue 13's adversarial review) is refused with one clear
line (file:line:col where there is one), exit 2 and no traceback, and quickly: names that would escape
the run folder, NaN and infinity, alias bombs, --set without a key, deep `extends` chains, a file where
a folder belongs."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from helpers.cli import CURRICULUM, LINE, MINIMAL, POETRY, cli, user_error, write
from helpers.data import DATA, REPO
from runner import api
from runner.cli import main
from runner.recipe.document import display   # how the CLI shows a path (relative when close by), so the tests hold wherever they run


# --- names that are not safe path components ----------------------------------------------------------

@pytest.mark.parametrize("name", ["..", ".", "x\n", "../x", ".hidden", "-rf"])
def test_a_recipe_name_that_is_not_a_plain_path_component_is_refused(tmp_path, capsys, name):
    r = write(tmp_path / "r.yaml", f"recipe: {json.dumps(name)}\n" + MINIMAL)
    lines = user_error(capsys, "validate", str(r))
    assert any(l.startswith(f"{display(r)}:1:1: recipe:") and "cannot be a recipe name" in l for l in lines), lines


def test_a_source_name_with_a_trailing_newline_is_refused(tmp_path, capsys):
    # Python's `$` matches before a final "\n": the schema's patterns must not let "x\n" through anywhere
    r = write(tmp_path / "r.yaml", f'recipe: r\nmodel: {{base: builtin:tiny}}\nsources:\n  "id\\n": '
                                   f'{{path: {DATA}/identity.json, format: alpaca}}\n')
    lines = user_error(capsys, "validate", str(r))
    assert any("does not match" in l for l in lines), lines



# --- numbers: NaN, infinity, zero divisors ------------------------------------------------------------

@pytest.mark.parametrize("override", ["mix={tang: .nan}", "split.eval=.nan", "train.epochs=.nan",
                                      "train.learning_rate=.nan", "train.epochs=.inf", "train.warmup_ratio=-.inf"])
def test_nan_and_infinity_are_refused(capsys, override):
    lines = user_error(capsys, "validate", str(POETRY), "--set", override)
    assert any("NaN and infinity are not allowed" in l for l in lines), lines


def test_nan_in_a_file_is_refused_at_its_line_and_column(tmp_path, capsys):
    r = write(tmp_path / "r.yaml", "recipe: r\n" + MINIMAL + "train:\n  epochs: .nan\n  learning_rate: .inf\n")
    lines = user_error(capsys, "validate", str(r))
    assert lines == [f"{display(r)}:6:11: train.epochs: nan is not a usable number (NaN and infinity are not allowed)",
                     f"{display(r)}:7:18: train.learning_rate: inf is not a usable number (NaN and infinity are not allowed)"]


@pytest.mark.parametrize("override", ["train.micro_batch_size=0", "train.world_size=0",
                                      "stages.task.train.micro_batch_size=0"])
def test_a_zero_batch_divisor_is_a_schema_error_not_a_crash(capsys, override):
    lines = user_error(capsys, "validate", str(CURRICULUM), "--set", override)
    assert any("is less than the minimum of 1" in l for l in lines), lines



# --- YAML that expands or recurses, and what is not YAML data -----------------------------------------

def test_an_alias_bomb_is_refused_in_seconds_at_the_line_that_expands(tmp_path, capsys):
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


def test_recursive_aliases_and_python_tags_are_refused_in_a_file_and_in_set(tmp_path, capsys):
    r = write(tmp_path / "r.yaml", "recipe: r\nmix: &a [*a]\n" + MINIMAL)
    lines = user_error(capsys, "validate", str(r))
    assert lines == [f"{display(r)}:2:6: a YAML alias refers to the anchor it is inside (a recursive structure); a recipe is a tree"]
    lines = user_error(capsys, "validate", str(POETRY), "--set", "mix=&a {x: *a}")
    assert lines == ["--set mix=&a {x: *a}: a YAML alias refers to the anchor it is inside (a recursive structure); "
                     "a recipe is a tree"]
    lines = user_error(capsys, "validate", str(POETRY), "--set", "mix=!!python/object/apply:os.system [ls]")
    assert "is not allowed: recipes are plain data" in lines[0]


def test_a_nul_byte_is_refused_at_its_line_and_column(tmp_path, capsys):
    r = write(tmp_path / "r.yaml", "recipe: r\nmodel: {base: buil\0tin:tiny}\n")
    lines = user_error(capsys, "validate", str(r))
    assert lines == [f"{display(r)}:2:19: YAML: character U+0000 is not allowed in a YAML file; remove it"]


@pytest.mark.parametrize("text,kind", [("null\n", "null"), ("~\n", "null"), ("3\n", "an integer"),
                                       ("[a]\n", "a list"), ("hello\n", "a string")])
def test_a_document_that_is_not_a_mapping_is_refused_saying_what_it_is(tmp_path, capsys, text, kind):
    r = write(tmp_path / "r.yaml", text)
    lines = user_error(capsys, "validate", str(r))
    assert lines == [f"{display(r)}:1:1: the recipe must be a mapping of keys (recipe:, model:, sources: ...), not {kind}"]



# --- --set --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override", ["...=1", ".=1", "=1", "[0]=1"])
def test_set_without_a_key_is_one_error_line(capsys, override):
    lines = user_error(capsys, "validate", str(POETRY), "--set", override)
    assert len(lines) == 1 and lines[0].startswith(f"--set {override}:"), lines


def test_set_on_a_list_asks_for_an_index_in_range(capsys):
    lines = user_error(capsys, "validate", str(POETRY), "--set", "filters.x.kind=length")
    assert lines == ["--set filters.x.kind=length: filters is a list: name an item by its index "
                     "(filters[0], filters[1], ...), not 'x'"]
    lines = user_error(capsys, "validate", str(POETRY), "--set", "filters[9].kind=length")
    assert "filters has 4 items; index 9 is out of range" in lines[0]



# --- extends ------------------------------------------------------------------------------------------

def test_an_extends_chain_past_32_files_is_one_error(tmp_path):
    for i in range(500):
        write(tmp_path / f"r{i}.yaml", f"extends: r{i + 1}.yaml\n" if i < 499 else "recipe: deep\n" + MINIMAL)
    res = subprocess.run([sys.executable, "-m", "runner", "validate", str(tmp_path / "r0.yaml")],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and "`extends` chain is more than 32 files deep" in lines[0], lines


def test_an_extends_chain_within_the_limit_loads(tmp_path):
    for i in range(10):
        write(tmp_path / f"r{i}.yaml", f"extends: r{i + 1}.yaml\nseed: {i}\n")
    write(tmp_path / "r10.yaml", "recipe: deep\n" + MINIMAL)
    assert api.load(tmp_path / "r0.yaml").seed == 0


@pytest.mark.parametrize("target,message", [("/tmp", "names a folder, not a recipe file"),
                                            ("/dev/null", "which is not a regular file")])
def test_extends_naming_a_folder_or_a_device_is_refused_at_its_line(tmp_path, capsys, target, message):
    r = write(tmp_path / "r.yaml", f"recipe: r\nextends: {target}\n" + MINIMAL)
    lines = user_error(capsys, "validate", str(r))
    assert lines[0].startswith(f"{display(r)}:2:10: ") and message in lines[0], lines



# --- the command line ---------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,message", [
    (("run", "{r}", "--output", "{f}"), "--output {f}: this is a file, not a folder"),
    (("run", "{r}", "--cache-dir", "{f}"), "--cache-dir {f}: this is a file, not a folder"),
    (("run", "{r}", "--cache-dir", "{f}/sub"), "--cache-dir {f}/sub: {f} is a file"),
    (("plan", "{r}", "--cache-dir", "{f}"), "--cache-dir {f}: this is a file, not a folder"),
])
def test_a_file_given_as_an_output_folder_is_refused_and_left_untouched(tmp_path, capsys, argv, message):
    f = write(tmp_path / "afile", "keep me\n")
    argv = [a.format(r=POETRY, f=f) for a in argv] + ["--set", "model.base=builtin:tiny"]
    code, out, err = cli(capsys, *argv)
    assert code == 2 and "Traceback" not in err
    assert err.strip() == "error: " + message.format(f=f) + err.strip().split(message.format(f=f), 1)[1], err
    assert f.read_text() == "keep me\n"


@pytest.mark.parametrize("argv", [("inspect", str(POETRY), "--n", "-1"), ("inspect", str(POETRY), "--n", "0"),
                                  ("run", str(POETRY), "--launcher", "torchrun", "--num-procs", "0")])
def test_command_line_counts_below_one_are_refused(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "it must be at least 1" in err and "is required" not in err, err


def test_validate_and_plan_warn_of_missing_init_from_weights(tmp_path, capsys):
    import shutil
    shutil.copytree(REPO / "recipes", tmp_path / "recipes", ignore=shutil.ignore_patterns(".recipe"))
    (tmp_path / "data").symlink_to(DATA)        # a checkout where curriculum_3stage has not run yet
    r = tmp_path / "recipes" / "stage2_correction.yaml"
    code, out, err = cli(capsys, "validate", str(r))
    assert code == 0 and "warning: model.init_from: no saved weights at ../runs/curriculum_3stage/base/final" in err
    code, out, err = cli(capsys, "plan", str(r), "--cache-dir", str(tmp_path / "cache"))
    assert code == 0 and "warning: model.init_from: no saved weights" in err
