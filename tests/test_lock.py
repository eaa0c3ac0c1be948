"""`recipe lock R` writes R.lock (every recipe file, input, model, template digest and the training
libraries' versions), byte for byte the same when nothing changed; `recipe run --locked` refuses with one
line per difference before anything runs; `recipe diff` shows how two sides' lock files differ."""
from __future__ import annotations

import json
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from runner.cli import main
from runner.dag import lock

ROOT = Path(__file__).resolve().parent.parent
BASE = """\
model: {base: builtin:tiny-random}
template: {max_length: 128, chat: chat.jinja}
"""
SMALL = """\
recipe: small
extends: base.yaml
sources:
  ident: {path: data/identity.json, format: alpaca}
size: 20
train: {max_steps: 1}
"""


@pytest.fixture
def small(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    shutil.copy(ROOT / "data" / "identity.json", tmp_path / "data" / "identity.json")
    shutil.copy(ROOT / "recipes" / "templates" / next(p.name for p in (ROOT / "recipes" / "templates").glob("*.jinja")),
                tmp_path / "chat.jinja")
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "small.yaml").write_text(SMALL)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "small.yaml"


def test_lock_pins_every_input_and_is_deterministic(small, tmp_path):
    assert main(["lock", "small.yaml"]) == 0
    first = (tmp_path / "small.lock").read_bytes()
    data = json.loads(first)
    assert set(data["recipe_files"]) == {"small.yaml", "base.yaml"}
    assert set(data["inputs"]) >= {"data/identity.json", "chat.jinja"}
    assert data["template"]["files"] == {"chat.jinja": data["inputs"]["chat.jinja"]}
    assert data["model"]["base"] == "builtin:tiny-random"
    assert data["libraries"]["transformers"] == metadata.version("transformers")
    assert set(data["libraries"]) == set(lock.LIBRARIES)
    assert main(["lock", "small.yaml"]) == 0 and (tmp_path / "small.lock").read_bytes() == first
    assert main(["lock", "small.yaml", "--check"]) == 0


def test_run_locked_refuses_and_lists_every_difference(small, tmp_path, capsys):
    assert main(["run", "small.yaml", "--locked", "--dry-run"]) == 2
    assert "no readable lock file" in capsys.readouterr().err
    assert main(["lock", "small.yaml"]) == 0
    assert main(["run", "small.yaml", "--locked", "--dry-run"]) == 0   # nothing changed: it runs
    capsys.readouterr()
    with open(tmp_path / "data" / "identity.json", "r+") as f:       # the data changes, and a base recipe
        rows = json.load(f)
        f.seek(0)
        json.dump(rows[:-1], f)
        f.truncate()
    (tmp_path / "base.yaml").write_text(BASE.replace("128", "96"))
    index = tmp_path / ".recipe" / "cache" / "runs.jsonl"
    before = index.read_bytes()
    assert main(["run", "small.yaml", "--locked", "--dry-run"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "3 differences from small.lock" in err[0]
    assert any(x.strip().startswith("inputs data/identity.json:") for x in err)
    assert any(x.strip().startswith("recipe_files base.yaml:") for x in err)
    assert any(x.strip().startswith("recipe digest:") for x in err)
    assert len(err) == 1 + 3   # the head line, then one line each: data, base file, resolved recipe
    assert index.read_bytes() == before                                 # refused before anything ran
    assert main(["lock", "small.yaml", "--check"]) == 1 and len(capsys.readouterr().out.splitlines()) == 3


def test_diff_shows_lock_changes(small, tmp_path, capsys):
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, capture_output=True, check=True)  # noqa: E731
    assert main(["lock", "small.yaml"]) == 0
    git("init", "-q")
    (tmp_path / ".gitignore").write_text(".recipe/\n")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "locked")
    (tmp_path / "chat.jinja").write_text((tmp_path / "chat.jinja").read_text() + "\n")
    assert main(["lock", "small.yaml"]) == 0
    capsys.readouterr()
    assert main(["diff", "--git", "HEAD", "--exit-code"]) == 1
    out = capsys.readouterr().out
    assert "lock: inputs chat.jinja:" in out and "lock: template files.chat.jinja:" in out
    assert "lock file: 2 differences" in out
