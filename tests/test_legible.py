"""Short modules read top to bottom: no module in runner/ over 450 lines, no function over 80 (counted
from its `def` line to its last line, nested functions inside their parent's count too)."""
from __future__ import annotations

import ast
from pathlib import Path

RUNNER = Path(__file__).resolve().parents[1] / "runner"
MAX_MODULE, MAX_FUNCTION = 450, 80



def _sources() -> dict[str, str]:
    return {p.relative_to(RUNNER.parent).as_posix(): p.read_text(encoding="utf-8") for p in sorted(RUNNER.rglob("*.py"))}


def _module_lengths() -> dict[str, int]:
    return {name: len(text.splitlines()) for name, text in _sources().items()}


def _function_lengths() -> dict[str, int]:
    out = {}
    for name, text in _sources().items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                key = f"{name}:{node.name}"
                out[key] = max(out.get(key, 0), node.end_lineno - node.lineno + 1)
    return out


def test_no_module_over_450_lines():
    long = {m: n for m, n in _module_lengths().items() if n > MAX_MODULE}
    assert not long, f"modules over {MAX_MODULE} lines (split them by what they do): {long}"


def test_no_function_over_80_lines():
    long = {f: n for f, n in _function_lengths().items() if n > MAX_FUNCTION}
    assert not long, f"functions over {MAX_FUNCTION} lines: {long}"


def test_the_counter_counts_what_it_says():
    """From the `def` line to the last line (a decorator above it not counted), nested bodies included."""
    tree = ast.parse("@staticmethod\ndef f():\n    def g():\n        pass\n    return g\n")
    f = tree.body[0]
    assert f.end_lineno - f.lineno + 1 == 4
