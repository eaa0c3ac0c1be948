"""What the tests share. Plain helpers (recipe builders, small training problems, a fake hub cache)
live in the tests/helpers/ package: `from helpers.data import recipe`, `from helpers import train as F`.
This file puts tests/ on sys.path itself, so that works whatever pytest's import mode, and in the
subprocesses tests start with PYTHONPATH=os.pathsep.join(sys.path). Fixtures more than one test file
uses are defined here."""
from __future__ import annotations

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
