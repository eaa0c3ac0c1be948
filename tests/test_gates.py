"""evaluate.gates: validate refuses a gate on a metric the recipe does not produce (file:line, did-you-mean);
a run checks every gate after each step, a breach stops it with exit 3 and a table of every gate (the
steps that ran stay cached, the reports say fail), and changing a gate reruns nothing."""
import json

import pytest
from helpers.cli import cli, user_error, write
from helpers.data import DATA

from runner import api
from runner.dag.gates import check
from runner.recipe.document import display

RECIPE = f"""\
recipe: gated
seed: 7
model:
  base: builtin:tiny-random
  adapter: {{type: lora, r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj]}}
sources:
  a: {{path: {DATA}/identity.json, format: alpaca}}
  b: {{path: {DATA}/identity.json, format: alpaca}}
split: {{eval: 0.2}}
template: {{chat: chatml, max_length: 64}}
train: {{max_steps: 2, micro_batch_size: 2, batch_size: 4, save_steps: 100, learning_rate: 0.001, precision: fp32}}
evaluate:
  before: false
  max_rows: 8
  generate: {{prompts: ["question 3"], max_new_tokens: 4, temperature: 0, eval_prompts: 1}}
"""
STAGES = "stages:\n  first: {mix: {a: 1.0}}\n  second: {mix: {b: 1.0}}\n  third: {mix: {a: 0.5, b: 0.5}}\n"


def _gates(*gates: str) -> str:
    return "  gates:\n" + "".join(f"    - {g}\n" for g in gates)


@pytest.mark.parametrize("gate, message", [
    ("{metric: eval_los.a, max: 1}", "evaluate.gates[0].metric: no metric 'eval_los' (did you mean 'eval_loss'?)"),
    ("{metric: eval_loss.c, max: 1}", "evaluate.gates[0].metric: no source 'c'; expected one of: a, b"),
    ("{metric: perplexity.aa, max: 1}", "no source 'aa' (did you mean 'a'?)"),
    ("{metric: few_shot_gain, min: 0}", "'few_shot_gain' is produced by a meta recipe's eval.few_shot only"),
    ("{metric: stop_rate}", "evaluate.gates[0]: a gate needs a bound: `min`, `max` or both"),
    ("{metric: stop_rate, min: 0.9, max: 0.5}", "min 0.9 is above max 0.5: no value can pass"),
    ("{metric: forgetting.b, max: 1}", "no stage before the last trains source 'b', so no later stage can forget it"),
    ("{metric: forgetting, max: 1, stage: frist}", "evaluate.gates[0].stage: no stage 'frist' runs (did you mean 'first'?)"),
])
def test_validate_refuses_a_gate_on_a_metric_the_recipe_does_not_produce(tmp_path, capsys, gate, message):
    body = RECIPE + _gates(gate) + "stages:\n  first: {mix: {a: 1.0}}\n  second: {mix: {b: 1.0}}\n"
    lines = user_error(capsys, "validate", str(write(tmp_path / "r.yaml", body)))
    # the path as messages show it (relative to the working directory unless far up: a checkout in /tmp sees
    # pytest's tmp_path as ../pytest-of-...)
    assert len(lines) == 1 and lines[0].startswith(f"{display(tmp_path / 'r.yaml')}:17:") and message in lines[0], lines


def test_metrics_that_need_more_than_the_recipe_has(tmp_path, capsys):
    body = (RECIPE.replace("before: false", "before: false\n  every_stage: false")
            .replace("prompts: [\"question 3\"]", "prompts: []").replace("eval_prompts: 1", "eval_prompts: 0")
            + _gates("{metric: forgetting, max: 1}", "{metric: role_leak_rate, max: 0.1}",
                     "{metric: eval_loss, max: 9, stage: first}") + STAGES)
    lines = user_error(capsys, "validate", str(write(tmp_path / "r.yaml", body)))
    assert [line.split(": ", 1)[1] for line in lines] == [
        "evaluate.gates[0].metric: forgetting compares evaluations of successive stages, and evaluate.every_stage is false",
        "evaluate.gates[1].metric: 'role_leak_rate' is measured on evaluate.generate.prompts and eval rows' prompts, "
        "and this recipe generates none; add evaluate.generate.prompts",
        "evaluate.gates[2].stage: stage 'first' is not evaluated (evaluate.every_stage is false: only the last stage, "
        "'third', is)"]
    fine = write(tmp_path / "ok.yaml", RECIPE + _gates("{metric: forgetting.a, max: 1}", "{metric: stop_rate, min: 0.5}",
                                                       "{metric: perplexity, max: 1e9, stage: second}") + STAGES)
    assert [g.metric for g in api.load(fine).evaluate.gates] == ["forgetting.a", "stop_rate", "perplexity"]


def test_a_recipe_without_gates_keeps_its_fingerprints(tmp_path):
    """Gates are declared by no step: adding or changing one makes no step stale."""
    from runner.dag.compile import compile_recipe
    from runner.dag.fingerprint import fingerprint_graph
    from runner.steps import versions

    def fps(text):
        r = api.load(write(tmp_path / "r.yaml", text))
        return {k: v.value for k, v in fingerprint_graph(compile_recipe(r), tmp_path, versions()).items()}
    plain = fps(RECIPE + STAGES)
    assert fps(RECIPE + _gates("{metric: eval_loss, max: 3}") + STAGES) == plain
    assert fps(RECIPE + _gates("{metric: eval_loss, max: 4}", "{metric: stop_rate, min: 0}") + STAGES) == plain


def _report(losses: dict, health: dict | None = None) -> dict:
    return {"stages": [{"name": st, "metrics": {"eval": {"loss": loss, **(health or {})}}} for st, loss in losses.items()]}


def test_forgetting_is_the_rise_since_the_last_stage_that_trained_the_source(tmp_path):
    r = api.load(write(tmp_path / "r.yaml", RECIPE + _gates("{metric: forgetting, max: 0.5}") + STAGES))
    g = check(r, _report({"first": {"a": 2.0, "b": 5.0}, "second": {"a": 2.75, "b": 1.0}}))
    # a: trained by first, forgotten at second (+0.75); b is first trained at second; third trains both
    assert [(c["metric"], c["stage"], c["value"], c["status"]) for c in g["checks"]] == [
        ("forgetting.a", "second", 0.75, "fail")]
    assert (g["status"], g["failed"], g["pending"]) == ("fail", 1, 0)
    g = check(r, _report({"first": {"a": 2.0, "b": 5.0}}))
    assert [(c["metric"], c["stage"], c["status"]) for c in g["checks"]] == [("forgetting.a", "second", "pending")]


def test_a_gate_never_passes_unmeasured(tmp_path):
    r = api.load(write(tmp_path / "r.yaml", RECIPE + _gates("{metric: eval_loss.b, max: 9}", "{metric: stop_rate, min: 0.5}")))
    g = check(r, _report({"main": {"a": 2.0}}, {"stop_rate": None}))
    assert [(c["metric"], c["value"], c["status"]) for c in g["checks"]] == [("eval_loss.b", None, "fail"),
                                                                            ("stop_rate", None, "fail")]
    g = check(r, _report({"main": {"a": 2.0, "b": float("nan")}}, {"stop_rate": 0.5}))
    assert [c["status"] for c in g["checks"]] == ["fail", "pass"]


def test_a_breached_gate_stops_the_run_and_a_changed_gate_reruns_nothing(tmp_path, capsys, monkeypatch):
    """A real run (builtin:tiny-random, 2 steps): a gate that passes and one that fails after the stage; exit 3,
    one table of every gate, no traceback, the evaluated steps cached, the export not run; then the same run
    with the failing gate relaxed finds every step it ran cached and passes."""
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "r.yaml", RECIPE + _gates("{metric: stop_rate, min: 0}", "{metric: eval_loss.a, max: 0.01}"))
    code, _, err = cli(capsys, "run", str(path), "--cache-dir", str(tmp_path / "cache"))
    assert code == 3 and "Traceback" not in err, err
    msg = err[err.index("error: "):].splitlines()
    assert msg[0].startswith("error: 1 of 2 gate checks failed after eval.main (evaluate.gates)")
    assert msg[1].split() == ["metric", "stage", "value", "bound", "status"]
    assert msg[2].split()[:2] == ["stop_rate", "main"] and msg[2].split()[-1] == "pass"
    assert msg[3].split()[:2] == ["eval_loss.a", "main"] and msg[3].split()[-2:] == ["0.01", "FAIL"]
    report = json.loads((tmp_path / "runs" / "gated" / "report.json").read_text())
    assert (report["gates"]["status"], report["gates"]["passed"], report["gates"]["failed"]) == ("fail", 1, 1)
    loss = report["forgetting"]["main"]["a"]
    assert report["gates"]["checks"][1] == {"metric": "eval_loss.a", "stage": "main", "min": None, "max": 0.01,
                                            "value": loss, "status": "fail"}
    names = [s["name"] for s in report["steps"]]
    assert "eval.main" in names and "export" not in names
    md = (tmp_path / "runs" / "gated" / "report.md").read_text()
    assert "## Gates: fail" in md and f"| eval_loss.a | main | {loss:.4g} | <= 0.01 | **FAIL** |" in md
    page = (tmp_path / "runs" / "gated" / "report.html").read_text()
    assert '"gates": {"status": "fail", "passed": 1, "failed": 1, "pending": 0' in page

    code, _, err = cli(capsys, "run", str(path), "--cache-dir", str(tmp_path / "cache"), "--only", "eval.main",
                       "--set", "evaluate.gates=[{metric: eval_loss, max: 100}, {metric: stop_rate, min: 0}]")
    assert code == 0, err
    report = json.loads((tmp_path / "runs" / "gated" / "report.json").read_text())
    assert {s["status"] for s in report["steps"]} == {"cached"}
    assert report["gates"]["status"] == "pass" and [c["metric"] for c in report["gates"]["checks"]] == [
        "eval_loss.a", "eval_loss.b", "stop_rate"]


def test_few_shot_gain_is_the_models_smallest_mean_gain_over_shot_counts(tmp_path):
    from helpers.cli import REPO
    r = api.load(REPO / "recipes" / "fomaml_poets.yaml",
                 ["evaluate.gates=[{metric: few_shot_gain, min: 0.1}, {metric: few_shot_gain.start, min: 0}]"])
    assert check(r, {"stages": [], "few_shot_summary": None})["status"] == "pending"
    table = [{"model": "fomaml", "shots": 1, "gain": 0.05}, {"model": "fomaml", "shots": 4, "gain": 0.3},
             {"model": "start", "shots": 1, "gain": 0.2}, {"model": "start", "shots": 4, "gain": 0.25}]
    g = check(r, {"stages": [], "few_shot_summary": {"table": table}})
    assert [(c["metric"], c["stage"], c["value"], c["status"]) for c in g["checks"]] == [
        ("few_shot_gain.fomaml", None, 0.05, "fail"), ("few_shot_gain.start", None, 0.2, "pass")]
