"""`recipe compare` and the metric deltas in `recipe diff`, on two real runs of a small recipe on
builtin:tiny-random (the second changes evaluate.max_rows, so only the evaluation reruns): the deltas are
the two report.json's numbers, by recipe or by run id, in text, markdown and JSON, and `diff --git` shows
them for a changed recipe whose two sides have run, or says the new side has not."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from runner import api
from runner.cli import main
from runner.dag import runindex
from runner.diff.metrics import compare_runs, delta_text

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
template: {max_length: 128}
train: {max_steps: 1, micro_batch_size: 2, batch_size: 2}
evaluate: {max_rows: 4, generate: {prompts: ["Who are you?"], max_new_tokens: 4}}
"""


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """(folder, report A, report B): the recipe run as written, then with evaluate.max_rows=6."""
    work = tmp_path_factory.mktemp("compare")
    (work / "data").mkdir()
    for f in ("alpaca_en_demo.json", "identity.json"):
        shutil.copy(ROOT / "data" / f, work / "data" / f)
    (work / "small.yaml").write_text(SMALL)
    git = lambda *a: subprocess.run(["git", *a], cwd=work, capture_output=True, check=True)  # noqa: E731
    git("init", "-q")
    (work / ".gitignore").write_text(".recipe/\nruns/\n")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "small")
    cwd = Path.cwd()
    try:
        os.chdir(work)
        a = api.run(work / "small.yaml", output=str(work / "runs" / "a")).run_dir
        b = api.run(work / "small.yaml", ["evaluate.max_rows=6"], output=str(work / "runs" / "b")).run_dir
    finally:
        os.chdir(cwd)
    return work, *(json.loads((d / "report.json").read_text()) for d in (a, b))


def _json(capsys, *argv) -> object:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_compare_two_recipes_latest_runs_gives_the_reports_deltas(two_runs, monkeypatch, capsys):
    work, ra, rb = two_runs
    monkeypatch.chdir(work)
    (one,) = _json(capsys, "compare", "small.yaml", "--set-b", "evaluate.max_rows=6", "--format", "json")
    assert [(c["path"], c["before"], c["after"]) for c in one["changes"]] == [("evaluate.max_rows", 4, 6)]
    deltas = {d["key"]: d for d in one["metrics"]["deltas"]}
    for src in ("en", "ident"):
        d = deltas[f"eval.main.loss.{src}"]
        assert (d["before"], d["after"]) == (ra["forgetting"]["main"][src], rb["forgetting"]["main"][src])
        assert d["delta"] == d["after"] - d["before"] and d["noise"] is None and d["inside_noise"] is None
        assert deltas[f"eval.before.perplexity.{src}"]["after"] == rb["before"]["perplexity"][src]
    assert deltas["eval.main.stop_rate"]["before"] == ra["generation_health"]["main"]["stop_rate"]
    assert deltas["train.main.train_loss"]["delta"] == 0   # the same training: cached, same loss
    # by run id (a prefix of it) the same numbers, and the settings from the index's resolved recipes
    ids = [x["id"] for x in _json(capsys, "runs", "small.yaml", "--format", "json")]
    (by_id,) = _json(capsys, "compare", ids[0][:6], ids[1], "--format", "json")
    assert by_id["metrics"]["deltas"] == one["metrics"]["deltas"] and by_id["changes"] == one["changes"]
    assert main(["compare", ids[0], ids[1]]) == 0
    text = capsys.readouterr().out
    en = deltas["eval.main.loss.en"]
    lines = [runindex.find(runindex.read(work / ".recipe" / "cache"), i) for i in ids]
    shown = next(d for d in compare_runs(*lines).deltas if d.key == "eval.main.loss.en")
    assert re.search(r"eval loss en \(main\) +" + re.escape(delta_text(shown)), text)
    assert main(["compare", "small.yaml", "--set-b", "evaluate.max_rows=6", "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert f"| eval loss en (main) | {en['before']:.4g} | {en['after']:.4g} | {en['delta']:+.4g} |" in md


def test_diff_shows_metric_deltas_or_says_the_new_side_has_not_run(two_runs, monkeypatch, capsys):
    work, ra, rb = two_runs
    monkeypatch.chdir(work)
    assert main(["diff", "small.yaml", "--set-b", "evaluate.max_rows=6"]) == 0
    text = capsys.readouterr().out
    assert "metrics: run " in text and "eval loss en (main)" in text and "not run" not in text
    assert main(["diff", "small.yaml", "--set-b", "train.learning_rate=1e-5", "--format", "json"]) == 0
    m = json.loads(capsys.readouterr().out)["recipes"][0]["metrics"]
    assert m["after"] is None and m["deltas"] == [] and m["note"].startswith("not run")
    # a pull request's view: the recipe changed in the working tree; both sides' fingerprints have run
    (work / "small.yaml").write_text(SMALL.replace("max_rows: 4", "max_rows: 6"))
    try:
        assert main(["diff", "--git", "HEAD", "--format", "markdown"]) == 0
        md = capsys.readouterr().out
        en = (ra["forgetting"]["main"]["en"], rb["forgetting"]["main"]["en"])
        assert f"| eval loss en (main) | {en[0]:.4g} | {en[1]:.4g} |" in md
        (work / "small.yaml").write_text(SMALL.replace("max_rows: 4", "max_rows: 5"))
        assert main(["diff", "--git", "HEAD"]) == 0
        assert "not run: the new side has no run in the cache" in capsys.readouterr().out
        (cmp,) = _json(capsys, "compare", "--git", "HEAD", "--format", "json")
        assert cmp["metrics"]["after"] is None and cmp["metrics"]["before"]["recipe"] == "small"
    finally:
        (work / "small.yaml").write_text(SMALL)


def test_a_delta_inside_the_few_shot_spread_is_marked_as_noise():
    """The report knows a spread for the few-shot table (sd over tasks x seeds, n): a delta within two
    standard errors of the difference is inside the noise, a larger one is not."""
    def report(gain: float, loss_after: float) -> dict:
        return {"stages": [], "few_shot_summary": {"table": [
            {"model": "fomaml", "shots": 4, "n": 16, "loss_before": 3.0, "loss_after": loss_after,
             "loss_after_sd": 0.4, "gain": gain, "gain_sd": 0.4}]}}
    lines = []
    for gain, after in ((0.5, 2.5), (0.6, 2.0)):
        metrics, spread = runindex.metrics_of(report(gain, after))
        lines.append({"id": f"r{gain}", "recipe": "m", "ended": "t", "metrics": metrics, "spread": spread})
    d = {x.key: x for x in compare_runs(*lines).deltas}
    noise = 2 * (0.4 ** 2 / 16 * 2) ** 0.5    # 0.2828
    gain, loss = d["few_shot.fomaml.k4.gain"], d["few_shot.fomaml.k4.loss_after"]
    assert gain.noise == pytest.approx(noise) and gain.inside_noise is True       # |0.1| < 0.28
    assert loss.inside_noise is False and "outside the noise" in delta_text(loss)  # |-0.5| > 0.28
    assert d["few_shot.fomaml.k4.loss_before"].noise is None and gain.label == "few-shot gain fomaml k=4"


def test_a_long_metric_table_is_folded_in_markdown_and_cells_are_escaped():
    from runner.diff.output import FOLD, metrics_markdown
    metrics = {f"eval.main.loss.s|{i}": float(i) for i in range(FOLD + 1)}
    a = {"id": "a", "recipe": "r", "ended": "t", "metrics": metrics}
    md = "\n".join(metrics_markdown(compare_runs(a, {**a, "id": "b"})))
    assert md.count("<details>") == 1 and "| eval loss s\\|0 (main) | 0 | 0 | +0 |" in md
    small = [{**a, "metrics": {"x": v}} for v in (1.0, 2.0)]
    assert "<details>" not in "\n".join(metrics_markdown(compare_runs(*small)))
