"""The run directory (--output) is shared with the user: recipe replaces only the files it wrote there
(runner/paths.py publish_files keeps their list in .recipe-written.json), never writes or removes through a
symlink, and refuses a link in its way in one line. Property: generated user files survive every command."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import train as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.cli import main as cli
from runner.paths import WRITTEN, UnsafePath, publish_files, publish_tree
from runner.steps import train as train_step
from runner.steps.base import StepId

META = F.REPO / "recipes" / "fomaml_poets.yaml"
SETS = [a for s in F.META for a in ("--set", s)]


def _run(capsys, out: Path, cache: Path, *extra: str) -> tuple[int, str]:
    code = cli(["run", str(META), "--dry-run", "--output", str(out), "--cache-dir", str(cache), *SETS, *extra])
    return code, capsys.readouterr().err


def _user_files(run: Path) -> dict[Path, bytes]:
    files = {run / "tasks" / "TODO.md": b"ask about the poets\n", run / "few_shot" / "n.txt": b"5 shots?\n",
             run / "quarantine" / "manual.jsonl": b'{"id": "mine"}\n', run / "export" / "notes.txt": b"gguf next\n",
             run / "meta" / "final" / "README.md": b"my notes on the adapter\n"}
    for p, data in files.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


# --- D16: what a user keeps in the run directory stays ----------------------------------------------

def test_user_files_survive_a_meta_dry_run_and_stale_outputs_still_go(tmp_path, capsys):
    run, cache = tmp_path / "run", tmp_path / "cache"
    mine = _user_files(run)
    assert _run(capsys, run, cache)[0] == 0
    assert all(p.read_bytes() == data for p, data in mine.items())
    tasks = {p.name for p in (run / "tasks").iterdir() if p.is_dir()}
    assert len(tasks) == 6 and any((run / "few_shot").glob("*.parquet"))
    assert _run(capsys, run, cache)[0] == 0                          # cached: published again, nothing lost
    assert all(p.read_bytes() == data for p, data in mine.items())
    assert _run(capsys, run, cache, "--set", "meta.tasks.max_tasks=4")[0] == 0
    fewer = {p.name for p in (run / "tasks").iterdir() if p.is_dir()}
    assert len(fewer) == 4 and fewer < tasks                         # what we wrote for the 2 others is gone
    written = json.loads((run / WRITTEN).read_text())["units"]
    assert all(f.split("/")[1] in fewer for f in written["tasks"])
    assert all(p.read_bytes() == data for p, data in mine.items())


def test_a_unit_replaces_only_its_own_files_and_removes_folders_it_emptied(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "x.bin").write_bytes(b"x")
    (src / "b.bin").write_bytes(b"b")
    run = tmp_path / "run"
    (run / "out").mkdir(parents=True)
    (run / "out" / "mine.txt").write_text("mine")
    publish_tree(run, "out", src)
    assert (run / "out" / "a" / "x.bin").read_bytes() == b"x"
    (src / "a" / "x.bin").unlink()
    publish_tree(run, "out", src)
    assert not (run / "out" / "a").exists() and (run / "out" / "b.bin").is_file()
    publish_tree(run, "out", None)
    assert sorted(p.name for p in (run / "out").iterdir()) == ["mine.txt"]
    assert "out" not in json.loads((run / WRITTEN).read_text())["units"]


# --- D17 / D18: symlinks in the run directory are never followed --------------------------------------

def _train_artifact(tmp_path: Path) -> Path:
    art = tmp_path / "artifact"
    (art / "final").mkdir(parents=True)
    (art / "final" / "adapter_model.safetensors").write_bytes(b"weights")
    inputs = {str(StepId("render", stage="sft")): "f" * 64}
    (art / "manifest.json").write_text(json.dumps({"components": {"inputs": inputs}}))
    return art


class _Step:
    stage = "sft"


class _Result:
    history: list = []


def test_a_symlinked_data_fingerprint_is_not_written_through(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    run = tmp_path / "run"
    (run / "sft").mkdir(parents=True)
    os.symlink(outside, run / "sft" / "data_fingerprint.txt")
    with pytest.raises(UnsafePath):
        train_step.publish(_Step(), _train_artifact(tmp_path), run, _Result())
    assert outside.read_text() == "keep me"


def test_a_link_inside_the_run_dir_at_a_file_we_write_is_replaced_not_followed(tmp_path):
    run = tmp_path / "run"
    (run / "sft").mkdir(parents=True)
    (run / "notes.txt").write_text("mine")
    os.symlink(run / "notes.txt", run / "sft" / "data_fingerprint.txt")
    os.symlink(run / "notes.txt", run / "loss_sft.png")
    result = _Result()
    result.history = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
    train_step.publish(_Step(), _train_artifact(tmp_path), run, result)
    assert (run / "notes.txt").read_text() == "mine"
    assert not (run / "sft" / "data_fingerprint.txt").is_symlink() and not (run / "loss_sft.png").is_symlink()
    assert (run / "loss_sft.png").read_bytes().startswith(b"\x89PNG")
    assert (run / "sft" / "data_fingerprint.txt").read_text() == "f" * 64 + "\n"
    assert (run / "sft" / "final" / "adapter_model.safetensors").read_bytes() == b"weights"


@pytest.mark.parametrize("target", ["inside", "outside"])
def test_a_symlinked_final_folder_is_refused_in_one_line(tmp_path, target):
    elsewhere = (tmp_path / "run" / "mine") if target == "inside" else (tmp_path / "elsewhere")
    elsewhere.mkdir(parents=True)
    (elsewhere / "precious.bin").write_bytes(b"p")
    (tmp_path / "run" / "sft").mkdir(parents=True)
    os.symlink(elsewhere, tmp_path / "run" / "sft" / "final")
    with pytest.raises(UnsafePath) as e:
        train_step.publish(_Step(), _train_artifact(tmp_path), tmp_path / "run", _Result())
    assert "\n" not in str(e.value) and ("symlink" in str(e.value))
    assert [p.name for p in elsewhere.iterdir()] == ["precious.bin"]


def test_a_symlinked_tasks_folder_is_one_line_from_the_cli(tmp_path, capsys):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.md").write_text("mine")
    run.mkdir()
    os.symlink(elsewhere, run / "tasks")
    code, err = _run(capsys, run, tmp_path / "cache")
    assert code != 0 and "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert errors == [err.strip().splitlines()[-1]] and errors[0].startswith("error: ") and "symlink" in errors[0], err
    assert [p.name for p in elsewhere.iterdir()] == ["keep.md"] and (run / "tasks").is_symlink()


def test_publish_refuses_a_name_that_leaves_the_run_dir(tmp_path):
    with pytest.raises(UnsafePath):
        publish_files(tmp_path, "x", {"../escape.txt": b"no"})
    assert not (tmp_path.parent / "escape.txt").exists()


# --- property: generated user files survive every command ---------------------------------------------

NAME = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..") and not s.startswith("."))
PLACES = st.sampled_from(["", "tasks", "few_shot", "quarantine", "export", "meta/final", "tasks/李白", "sft"])
USER_FILES = st.dictionaries(st.tuples(PLACES, NAME.map(lambda s: "u" + s)), st.binary(max_size=64),
                             min_size=1, max_size=6)


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A cache with the meta recipe's data steps (both task counts used below), so each command is quick."""
    cache = tmp_path_factory.mktemp("cache")
    for extra in ((), ("--set", "meta.tasks.max_tasks=4")):
        assert cli(["run", str(META), "--dry-run", "--output", str(cache / "warmup"), "--cache-dir", str(cache),
                    *SETS, *extra]) == 0
    return cache


COMMANDS = [
    ["run", "{recipe}", "--dry-run", "--output", "{run}", "--cache-dir", "{cache}", *SETS],
    ["run", "{recipe}", "--dry-run", "--output", "{run}", "--cache-dir", "{cache}", *SETS,
     "--set", "meta.tasks.max_tasks=4"],
    ["plan", "{recipe}", "--cache-dir", "{cache}", *SETS],
    ["diff", "{recipe}", "--cache-dir", "{cache}", *SETS, "--set-b", "meta.tasks.max_tasks=4"],
    ["validate", "{recipe}", *SETS],
    ["gc", "{recipe}", "--dry-run", "--cache-dir", "{cache}", *SETS],
]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=USER_FILES, order=st.permutations(range(len(COMMANDS))))
def test_generated_user_files_survive_every_command(warm, tmp_path_factory, files, order):
    run = tmp_path_factory.mktemp("run")
    mine = {}
    for (place, name), data in files.items():
        p = run / place / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        mine[p] = data
    for i in order:
        argv = [a.format(recipe=META, run=run, cache=warm) for a in COMMANDS[i]]
        assert cli(argv) in (0, 1), argv      # diff/plan may say "stale"; none may raise
        assert {p: p.read_bytes() for p in mine} == mine, argv


# --- gc in a shared cache says how much of what it removes another recipe's last run used -------------

GC_RECIPE = """recipe: {name}
model: {{base: builtin:tiny}}
sources: {{tang: {{path: {data}/tang_poems.jsonl, format: fields, limit: 60,
          fields: {{user: "{{{{ paragraphs[0] }}}}", assistant: "{{{{ paragraphs[1:] | join('\\\\n') }}}}"}}}}}}
filters: [{{kind: length, field: assistant, min_chars: 10, max_chars: {max_chars}}}]
template: {{chat: chatml, max_length: 128}}
"""


def test_gc_says_how_many_removed_artifacts_other_recipes_last_used(tmp_path, capsys):
    cache = tmp_path / "shared"
    for name, chars in (("mine", 400), ("theirs", 300)):
        (tmp_path / name).mkdir()
        path = tmp_path / name / f"{name}.yaml"
        path.write_text(GC_RECIPE.format(name=name, data=F.REPO / "data", max_chars=chars), encoding="utf-8")
        assert cli(["run", str(path), "--dry-run", "--cache-dir", str(cache), "--output", str(tmp_path / "runs")]) == 0
    capsys.readouterr()
    assert cli(["gc", str(tmp_path / "mine"), "--dry-run", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    n = int(out.split("would free")[1].split("(")[1].split(" ")[0])
    assert n > 0 and f"{n} of them are used by the last run of 1 other recipe sharing this cache" in out, out
    assert cli(["gc", str(tmp_path / "mine"), str(tmp_path / "theirs"), "--dry-run", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "other recipe" not in out and "(0 to remove)" in out, out


def test_an_edited_record_cannot_make_publish_remove_a_users_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "precious.txt").write_text("mine")
    (run / "mine.txt").write_text("mine")
    (run / WRITTEN).write_text(json.dumps({"units": {"out": ["../precious.txt", str(tmp_path / "precious.txt")]}}))
    publish_files(run, "out", {"out/a.txt": b"a"})
    assert (tmp_path / "precious.txt").read_text() == "mine" and (run / "out" / "a.txt").read_bytes() == b"a"


TOOL_TREE = st.dictionaries(st.lists(NAME.map(lambda s: "t" + s), min_size=1, max_size=3).map("/".join),
                            st.binary(max_size=16), max_size=5)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=USER_FILES, publishes=st.lists(st.tuples(st.sampled_from(["tasks", "export", "sft/final"]), TOOL_TREE),
                                           min_size=1, max_size=4))
def test_generated_user_files_survive_any_sequence_of_publishes(tmp_path_factory, user, publishes):
    """Whatever the tool publishes, in any order and shape, the user's files stay and each unit holds exactly
    its last publish (nothing stale of ours)."""
    run = tmp_path_factory.mktemp("run")
    mine = {}
    for (place, name), data in user.items():
        (run / place).mkdir(parents=True, exist_ok=True)
        if (run / place).is_dir():
            (run / place / name).write_bytes(data)
            mine[run / place / name] = data
    last: dict[str, dict[str, bytes]] = {}
    for unit, tree in publishes:
        tree = {k: v for k, v in tree.items() if not any(k.startswith(o + "/") for o in tree if o != k)}
        publish_files(run, unit, {f"{unit}/{k}": v for k, v in tree.items()})
        last[unit] = {f"{unit}/{k}": v for k, v in tree.items()}
    assert {p: p.read_bytes() for p in mine} == mine
    ours = {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file() and p not in mine
            and p.name != WRITTEN}
    assert ours == {k: v for files in last.values() for k, v in files.items()}


def test_a_file_of_ours_can_become_a_folder_of_ours_and_back(tmp_path):
    publish_files(tmp_path, "u", {"u/a": b"1"})
    publish_files(tmp_path, "u", {"u/a/b": b"2"})
    assert (tmp_path / "u" / "a" / "b").read_bytes() == b"2"
    publish_files(tmp_path, "u", {"u/a": b"3"})
    assert (tmp_path / "u" / "a").read_bytes() == b"3"
    (tmp_path / "u" / "mine").write_text("mine")
    with pytest.raises(UnsafePath, match="is a file"):
        publish_files(tmp_path, "u", {"u/mine/x": b"4"})
    assert (tmp_path / "u" / "mine").read_text() == "mine" and (tmp_path / "u" / "a").read_bytes() == b"3"


def test_two_runs_publishing_into_one_folder_at_once_lose_no_unit(tmp_path):
    """Each publish reads, changes and writes the record of what recipe wrote: two at once (two runs with
    one --output) must not lose either's entry, or a later run would leave that file behind as the user's."""
    import threading
    from runner.paths import WRITTEN, publish_files
    errors: list[BaseException] = []

    def publish(i: int) -> None:
        try:
            for n in range(15):
                publish_files(tmp_path, f"unit{i}", {f"u{i}/f{n % 3}.txt": f"{i} {n}".encode()})
        except BaseException as e:         # noqa: BLE001 (reported below)
            errors.append(e)
    threads = [threading.Thread(target=publish, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    record = json.loads((tmp_path / WRITTEN).read_text())["units"]
    assert sorted(record) == [f"unit{i}" for i in range(6)], record
    assert all(record[f"unit{i}"] == [f"u{i}/f2.txt"] for i in range(6)), record


def test_tensorboard_and_the_run_report_are_never_written_through_a_link(tmp_path):
    from runner.paths import UnsafePath, own_folder, publish_files
    outside = tmp_path / "outside"
    outside.mkdir()
    run = tmp_path / "run"
    (run / "sft").mkdir(parents=True)
    (run / "sft" / "tensorboard").symlink_to(outside)
    with pytest.raises(UnsafePath):
        own_folder(run, "sft/tensorboard")
    (run / "report.md").symlink_to(outside / "report.md")
    with pytest.raises(UnsafePath):
        publish_files(run, "report.md", {"report.md": b"# report\n"})
    assert not (outside / "report.md").exists()
    assert own_folder(run, "main/tensorboard").is_dir()
