"""What the tests share. Plain helpers (recipe builders, small training problems, a fake hub cache)
live in the tests/helpers/ package: `from helpers.data import recipe`, `from helpers import train as F`.
This file puts tests/ on sys.path itself, so that works whatever pytest's import mode, and in the
subprocesses tests start with PYTHONPATH=os.pathsep.join(sys.path). Fixtures more than one test file
uses are defined here."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)


@pytest.fixture(scope="session")
def tok():
    """builtin:tiny's tokenizer (every builtin model shares it), loaded once per session."""
    from runner.builtin import TINY, load_tokenizer
    return load_tokenizer(TINY)


@pytest.fixture(autouse=True)
def _float_mode_left_as_it_was():
    """Every test leaves the process's float arithmetic IEEE. Training here flushes subnormal floats to
    zero (runner/train/process.py: flushing_subnormals) and must put the mode back; a run that does not
    leaves every later test in this process computing non-IEEE floats, and hypothesis refuses to draw
    floats at all then (what CI saw as three test_fuzz failures far from their cause)."""
    from runner.train.process import subnormals_flushed

    before = subnormals_flushed()
    yield
    if subnormals_flushed() and not before:
        import torch
        torch.set_flush_denormal(False)
        pytest.fail("this test left subnormal floats flushed to zero in the test process: a run in-process "
                    "must restore the float mode (wrap it in runner.train.process.flushing_subnormals)")


# Variables a library sets in os.environ on its first use in a process (not ours to put back), and pytest's own.
_LIBRARIES_SET = {"PYTEST_CURRENT_TEST": "pytest", "TORCHINDUCTOR_CACHE_DIR": "torch._inductor",
                  "_TORCHINDUCTOR_PYOBJECT_TENSOR_DATA_PTR": "torch._inductor",
                  "PYTORCH_NVML_BASED_CUDA_CHECK": "deepspeed"}


@pytest.fixture(autouse=True)
def _environment_left_as_it_was():
    """Every test leaves os.environ as it found it (monkeypatch's changes are undone before this runs). A
    variable left behind changes every later test in the process: ray.init's RAY_AUTH_MODE made a later
    cluster test fail far from its cause, and --ray-address's RAY_ADDRESS sent a later bench to a dead
    cluster (runner.environment.environment_kept is the mechanism; this holds the family)."""
    before = dict(os.environ)
    yield
    after = dict(os.environ)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k) and k not in _LIBRARIES_SET)
    if changed:
        for k in changed:
            if k in before:
                os.environ[k] = before[k]
            else:
                del os.environ[k]
        pytest.fail(f"this test changed the environment of the test process and left it so: {', '.join(changed)} "
                    "(put it back: monkeypatch.setenv, or runner.environment.environment_kept around the call)")
