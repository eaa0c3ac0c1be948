"""The suite's guard against a test that leaves os.environ changed (tests/conftest.py): it fails such a test,
names the variable, and puts the environment back; a test that changes it through monkeypatch passes."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

PROBE = '''
import os

def test_leaves_a_variable(monkeypatch):
    os.environ["RECIPE_LEAK_PROBE"] = "1"

def test_changes_one_through_monkeypatch(monkeypatch):
    monkeypatch.setenv("RECIPE_MONKEYPATCHED_PROBE", "1")
    monkeypatch.delenv("HOME")

def test_the_leak_was_put_back():
    assert "RECIPE_LEAK_PROBE" not in os.environ and "HOME" in os.environ
'''


def test_a_test_that_leaves_the_environment_changed_fails_and_names_it(tmp_path):
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_probe.py").write_text(PROBE, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path / "test_probe.py")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    # the leaking test errs at its teardown; the others pass, the last one because the guard took the leaked variable out again
    assert "3 passed, 1 error" in out and "ERROR test_probe.py::test_leaves_a_variable" in out, out
    assert "left it so: RECIPE_LEAK_PROBE (put it back" in out, out
