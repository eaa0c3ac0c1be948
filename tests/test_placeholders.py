"""`{{name}}` placeholders in identity-style data: filled from `sources.<src>.placeholders` when loading,
and every one left unresolved counted and reported (log, report.json, report.md)."""
from __future__ import annotations

import json

from runner.dag.compile import compile_recipe
from runner.data.placeholders import fill

from helpers.data import recipe, run_data_steps

BODY = """sources:
  identity: {{path: '{{data}}/identity.json', format: alpaca{extra}}}
"""


def _load(tmp_path, extra=""):
    r = recipe(tmp_path, BODY.format(extra=extra))
    done = run_data_steps(r, tmp_path / "steps", kinds=("load",))
    out, stats = done["load.identity"]
    rows = [json.loads(x) for x in (out / "records.jsonl").read_text(encoding="utf-8").splitlines()]
    return r, rows, stats


def test_identity_placeholders_are_filled(tmp_path):
    _, rows, stats = _load(tmp_path, ", placeholders: {name: Tiny, author: the recipe project}")
    text = "\n".join(m["content"] for r in rows for m in r["messages"])
    assert "{{" not in text and "I am Tiny, an AI assistant developed by the recipe project" in text
    assert stats["placeholders"]["filled"] > 130 and stats["placeholders"]["unresolved"] == {}


def test_unresolved_placeholders_are_counted_and_named(tmp_path):
    _, rows, stats = _load(tmp_path, ", placeholders: {name: Tiny}")
    found = stats["placeholders"]
    assert set(found["unresolved"]) == {"author"} and found["unresolved"]["author"] > 40
    example = next(r for r in rows if r["id"] == found["example"]["author"])
    assert any("{{author}}" in m["content"] for m in example["messages"])
    assert all("{{name}}" not in m["content"] for r in rows for m in r["messages"])


def test_no_map_reports_every_placeholder(tmp_path):
    _, _, stats = _load(tmp_path)
    assert set(stats["placeholders"]["unresolved"]) == {"name", "author"} and stats["placeholders"]["filled"] == 0


def test_fill_leaves_other_braces_and_text_alone():
    recs = [{"id": "a", "messages": [{"role": "user", "content": "{{ name }} and {{x-y}} and {name} and {{ 1 }}"}]}]
    assert fill(recs, {"name": "N"}) == {"filled": 1, "unresolved": {}, "example": {}}
    assert recs[0]["messages"][0]["content"] == "N and {{x-y}} and {name} and {{ 1 }}"
    assert fill([{"id": "b", "messages": [{"role": "user", "content": "plain"}]}], {}) == {}


def test_an_empty_map_keeps_the_load_fingerprint(tmp_path):
    r0 = recipe(tmp_path, BODY.format(extra=""), name="a.yaml")
    r1 = recipe(tmp_path, BODY.format(extra=", placeholders: {}"), name="b.yaml")
    r2 = recipe(tmp_path, BODY.format(extra=", placeholders: {name: X}"), name="c.yaml")
    p = [compile_recipe(r).steps[0].params_json for r in (r0, r1, r2)]
    assert p[0] == p[1] != p[2] and "placeholders" not in p[0]


def test_run_report_names_unresolved_placeholders(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    (tmp_path / "r.yaml").write_text(
        f"recipe: ph\nmodel: {{base: builtin:tiny}}\nsources:\n  identity: {{path: {root}/data/identity.json, "
        f"format: alpaca, placeholders: {{name: Tiny}}}}\n", encoding="utf-8")
    p = subprocess.run([sys.executable, "-m", "runner", "run", str(tmp_path / "r.yaml"), "--dry-run", "--output",
                        str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")], capture_output=True,
                       text=True, cwd=root)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "unresolved placeholders {{author}}" in p.stdout + p.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(report["placeholders"]["identity"]["unresolved"]) == {"author"}
    assert "## Unresolved placeholders" in (tmp_path / "out" / "report.md").read_text()
