"""The run index (<cache>/runs.jsonl): every finished run appends one line (recipe digest, step fingerprints,
git commit, times, metrics), values from the environment masked, appends from concurrent runs never torn;
`recipe runs` lists it. Dry runs (data steps only) keep this fast; tests/test_compare.py trains."""
from __future__ import annotations

import json
import multiprocessing
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner import api
from runner.cli import main
from runner.dag import runindex

ROOT = Path(__file__).resolve().parent.parent
SMALL = """\
recipe: small
model: {base: builtin:tiny-random}
sources:
  en: {path: data/alpaca_en_demo.json, format: alpaca}
  ident: {path: data/identity.json, format: alpaca}
filters:
  - {kind: length, field: assistant, min_chars: 5, max_chars: 2000, max_tokens: max_length}
mix: {en: 0.8, ident: 0.2}
size: 40
template: {max_length: 128, system: '${oc.env:RUNS_TEST_TOKEN}'}
train: {max_steps: 1, micro_batch_size: 2, batch_size: 2}
evaluate: {max_rows: 4, generate: {prompts: ["Who are you?"], max_new_tokens: 4}}
"""


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def small(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    for f in ("alpaca_en_demo.json", "identity.json"):
        shutil.copy(ROOT / "data" / f, tmp_path / "data" / f)
    (tmp_path / "small.yaml").write_text(SMALL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUNS_TEST_TOKEN", "hf_sekrit_value_42")
    return tmp_path / "small.yaml"


def test_a_finished_run_appends_one_masked_line_with_its_fingerprints_and_commit(small, tmp_path, capsys):
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "x")
    _, _, records, run_dir = api.run(small, dry_run=True)
    raw = (tmp_path / ".recipe" / "cache" / "runs.jsonl").read_bytes()
    assert b"hf_sekrit_value_42" not in raw and raw.count(b"\n") == 1
    (line,) = runindex.read(tmp_path / ".recipe" / "cache")
    assert line["steps"] == {r.name: r.fingerprint for r in records} and line["recipe"] == "small"
    assert line["document"]["template"]["system"] == "***"
    assert line["git"] == {"commit": _git(tmp_path, "rev-parse", "HEAD"), "dirty": False}
    assert line["selection"]["dry_run"] is True and line["metrics"] == {} and line["gates"] is None
    assert line["started"] <= line["ended"] and line["ended"].endswith("Z")
    # the digest is the resolved recipe's: another run of it has the same one; a changed setting another
    api.run(small, dry_run=True)
    api.run(small, ["size=30"], dry_run=True)
    lines = runindex.read(tmp_path / ".recipe" / "cache")
    assert [x["recipe_digest"] == line["recipe_digest"] for x in lines] == [True, True, False]
    assert len({x["id"] for x in lines}) == 3
    assert main(["runs", "small.yaml", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [x["id"] for x in listed] == [x["id"] for x in lines]
    assert [x["current"] for x in listed] == [False, False, False]   # a dry run does not stand for the recipe
    assert main(["runs"]) == 0
    text = capsys.readouterr().out
    assert text.count("dry-run") == 3 and line["git"]["commit"][:10] in text


def _append_many(args) -> None:
    root, worker = args
    for i in range(40):   # lines far over PIPE_BUF: a torn or interleaved write would show
        runindex.append(Path(root), {"id": f"w{worker}-{i}", "steps": {}, "pad": "x" * 200_000})


def test_concurrent_appends_never_tear_a_line(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_append_many, [(str(tmp_path), w) for w in range(4)])
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 160 and all(json.loads(x)["pad"] == "x" * 200_000 for x in lines)


def test_a_torn_or_foreign_line_is_skipped_and_ids_resolve_by_prefix(tmp_path):
    runindex.append(tmp_path, {"id": "abcdef1234", "steps": {}})
    runindex.append(tmp_path, {"id": "abcd999999", "steps": {}})
    with open(tmp_path / "runs.jsonl", "a") as f:
        f.write('[1, 2]\n{"id": "zz", "steps"')   # a line of another shape, a crash mid-write
    lines = runindex.read(tmp_path)
    assert [x["id"] for x in lines] == ["abcdef1234", "abcd999999"]
    assert runindex.find(lines, "abcde")["id"] == "abcdef1234" and runindex.find(lines, "nope") is None
    with pytest.raises(Exception, match="ambiguous"):
        runindex.find(lines, "abcd")


def test_runs_of_a_folder_without_runs_and_an_unknown_id_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["runs"]) == 0 and "no runs in the index yet" in capsys.readouterr().out
    assert main(["compare", "0123abcd", "4567abcd"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "neither a recipe file nor a run id" in err


LIGHT = """
import sys
from runner.cli import main
main(["runs", sys.argv[1]]); main(["compare", sys.argv[1], sys.argv[1], "--set-b", "size=30"])
main(["lock", sys.argv[1]])
print("HEAVY:", sorted(m for m in ("torch", "transformers", "datasets", "trl", "peft", "deepspeed", "ray")
                       if m in sys.modules), file=sys.stderr)
"""


def test_review_commands_import_nothing_heavy(small):
    out = subprocess.run([sys.executable, "-c", LIGHT, str(small)], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "PYTHONPATH": __import__("os").pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.rsplit("HEAVY: ", 1)[1].strip() == "[]"


def test_runs_show_the_gates_pass_fail_from_the_report():
    from runner.diff.runs import render_runs
    gates = {"status": "fail", "passed": 4, "failed": 1, "pending": 0, "checks": []}
    lines = [{"id": "a" * 10, "recipe": "r", "ended": "t", "steps": {}, "gates": gates},
             {"id": "b" * 10, "recipe": "r", "ended": "t", "steps": {}, "gates": None}]
    rows = render_runs(lines, set(), "text").splitlines()
    assert "fail 4/5" in rows[1] and rows[2].split()[-2:] == ["-", "-"]
