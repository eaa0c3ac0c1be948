"""The broken-recipe corpus: every file in tests/broken/ (except _helpers) must fail validation with
exit code 2, one line per problem at the marked line (`#! message` on that line, also in the bases
it extends), or with the `# expect:` text for command-line overrides. Never a traceback."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BROKEN = Path(__file__).parent / "broken"
CASES = sorted(p for p in BROKEN.glob("*.yaml") if not p.name.startswith("_"))


def _markers(path: Path) -> list[tuple[Path, int, str]]:
    out = []
    text = path.read_text()
    for i, line in enumerate(text.splitlines(), 1):
        if "#!" in line:
            out.append((path, i, line.split("#!", 1)[1].strip()))
    m = re.search(r"^extends:\s*(\S+)", text, re.M)
    if m and (path.parent / m.group(1)).is_file() and m.group(1).startswith("_"):
        out += _markers(path.parent / m.group(1))
    return out


def _run(case: Path) -> subprocess.CompletedProcess:
    text = case.read_text()
    args = [sys.executable, "-m", "runner", "validate", str(case)]
    for s in re.findall(r"^# set: (.+)$", text, re.M):
        args += ["--set", s.strip()]
    return subprocess.run(args, capture_output=True, text=True, cwd=BROKEN.parent.parent, timeout=60)


def test_corpus_is_big_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_broken_recipe(case: Path):
    res = _run(case)
    out = res.stderr
    assert res.returncode == 2, f"exit {res.returncode}\n{res.stdout}\n{out}"
    assert "Traceback" not in out
    lines = out.strip().splitlines()
    assert re.search(r"\d+ errors?; nothing was run$", lines[-1]), lines[-1]
    expected = _markers(case)
    expects = re.findall(r"^# expect: (.+)$", case.read_text(), re.M)
    assert expected or expects, "a case must say what it expects"
    for path, line, message in expected:
        rel = str(path.relative_to(BROKEN.parent.parent))
        hits = [l for l in lines if l.startswith(f"{rel}:{line}:")]
        assert hits, f"no error at {rel}:{line}; got:\n{out}"
        assert any(message in h for h in hits), f"expected {message!r} at line {line}; got:\n{out}"
    for message in expects:
        assert any(message in l for l in lines), f"expected {message!r}; got:\n{out}"
