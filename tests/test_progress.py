"""Progress of long steps: a bar with rows/s and an ETA on a terminal, plain periodic lines otherwise."""
from __future__ import annotations

import io
from types import SimpleNamespace

from rich.console import Console

from runner import api
from runner.dag.ui import StepUI, progress_text

BODY = """recipe: prog
model: {{base: builtin:tiny}}
sources: {{tang: {{path: {data}/tang_poems.jsonl, format: fields, limit: 3000,
          fields: {{user: "{{{{ paragraphs[0] }}}}", assistant: "{{{{ paragraphs[1:] | join('\\\\n') }}}}"}}}}}}
filters: [{{kind: length, field: assistant, min_chars: 10}}]
template: {{chat: chatml, max_length: 128}}
"""


def test_progress_text():
    t = progress_text("render.main", 250_000, 1_000_000, 10.0)
    assert "25% 250,000/1,000,000 rows" in t and "25,000 rows/s" in t and "ETA 0:30" in t and "━" in t
    assert progress_text("filter.x", 5, None, 1.0) == "filter.x  5 rows  5 rows/s"
    assert "ETA 1:00:00" in progress_text("s", 1, 3601, 1.0)


def test_terminal_shows_a_bar_in_the_spinner_line():
    ui = StepUI(Console(file=io.StringIO(), force_terminal=True))
    ui.started(SimpleNamespace(name="render.main"))
    ui.progress(400, 1000)
    text = str(ui._status.renderable.text)
    ui.failed("render.main")
    assert "render.main" in text and "40% 400/1,000 rows" in text and "ETA" in text


def test_plain_lines_when_not_a_terminal(tmp_path, monkeypatch):
    from pathlib import Path
    monkeypatch.setenv("RECIPE_PROGRESS_EVERY", "0")
    (tmp_path / "r.yaml").write_text(BODY.format(data=Path(__file__).resolve().parents[1] / "data"), encoding="utf-8")
    out = io.StringIO()
    api.run(tmp_path / "r.yaml", dry_run=True, output=str(tmp_path / "run"), console=Console(file=out, width=200))
    lines = [x for x in out.getvalue().splitlines() if "rows/s" in x]
    assert any(x.strip().startswith("render.main") and "/" in x and "ETA" in x for x in lines), out.getvalue()
    assert any(x.strip().startswith("filter.tang") for x in lines)
    assert "\x1b[" not in out.getvalue()          # no terminal control codes in a log
