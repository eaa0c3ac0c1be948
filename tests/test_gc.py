"""`recipe gc`: keeps what the recipes in a folder reference (as written, and their last run's), removes the
rest, and says how many bytes it freed; the recipes stay fully cached afterwards."""
from __future__ import annotations

import json
from pathlib import Path

from runner import api
from runner.cli import main as cli

ROOT = Path(__file__).resolve().parent.parent
RECIPE = """recipe: {name}
model: {{base: builtin:tiny}}
sources: {{tang: {{path: {data}/tang_poems.jsonl, format: fields, limit: 120,
          fields: {{user: "{{{{ paragraphs[0] }}}}", assistant: "{{{{ paragraphs[1:] | join('\\\\n') }}}}"}}}}}}
filters: [{{kind: length, field: assistant, min_chars: 10, max_chars: {max_chars}}}]
template: {{chat: chatml, max_length: 128}}
"""


def _write(path: Path, name: str, max_chars: int) -> Path:
    path.write_text(RECIPE.format(name=name, data=ROOT / "data", max_chars=max_chars), encoding="utf-8")
    return path


def _objects(cache: Path) -> set[str]:
    return {p.name for p in (cache / "objects").iterdir()}


def _fps(path: Path) -> set[str]:
    return {s.fingerprint for s in api.plan(path)[1]}


def _run(path: Path, *overrides: str) -> None:
    api.run(path, overrides, dry_run=True, output=str(path.parent.parent / "runs" / path.stem))


def test_gc_keeps_what_recipes_use_and_frees_the_rest(tmp_path, capsys):
    rdir = tmp_path / "recipes"
    rdir.mkdir()
    a, b = _write(rdir / "a.yaml", "a", 400), _write(rdir / "b.yaml", "b", 300)
    (rdir / "fragment.yaml").write_text("template: {chat: chatml}\n", encoding="utf-8")
    cache = rdir / ".recipe" / "cache"
    _run(a)
    old_a = _fps(a)
    _run(b)
    _run(b, "filters[0].max_chars=200")                    # b's last run used --set
    last_b = {json.loads(p.read_text())["fingerprint"] for p in (cache / "index" / "b").glob("*.json")}
    _write(a, "a", 350)                                    # a moved on
    _run(a)
    before = _objects(cache)
    live = _fps(a) | _fps(b) | last_b

    assert cli(["gc", str(rdir), "--dry-run"]) == 0
    assert "would free" in capsys.readouterr().out and _objects(cache) == before
    assert cli(["gc", str(rdir)]) == 0
    out = capsys.readouterr().out
    after = _objects(cache)
    assert after == before & live                          # exactly the unreferenced ones went
    assert before - after and (before - after) <= old_a    # ... which are a's old artifacts
    freed = float(out.split("freed ")[1].split(" MB")[0].replace(",", ""))
    assert freed > 0 and "fragment.yaml: not a complete recipe" in out
    assert {s.status for s in api.plan(a)[1] if s.kind != "train" and s.kind not in ("evaluate", "export")} \
        == {"cached"}
    assert cli(["gc", str(rdir)]) == 0
    assert "freed 0.0 MB (0 removed)" in capsys.readouterr().out
