"""The CLI run as a user runs it, for the tests of what a user sees: exit 2, one line per problem, no
traceback; and the recipes they start from."""
from __future__ import annotations

import re
from pathlib import Path

from runner.cli import main

from .data import DATA, REPO

POETRY = REPO / "recipes" / "poetry_lora.yaml"
CURRICULUM = REPO / "recipes" / "curriculum_3stage.yaml"
LINE = re.compile(r"^\S+:\d+:\d+: ")      # file:line:col: message
MINIMAL = f"model: {{base: builtin:tiny}}\nsources:\n  id: {{path: {DATA}/identity.json, format: alpaca}}\n"


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
