"""Values from the environment (`${oc.env:...}`, issue 13's adversarial review): the run gets them, no
message, show, plan, diff, manifest, report or spec file shows them, whatever the variable is called,
and a changed value still changes the cache key."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import example, given, settings, strategies as st

from helpers.cli import MINIMAL, POETRY, cli, user_error, write
from helpers.data import DATA
from runner import api
from runner.errors import RecipeError


# --- what validate, show and --set say ----------------------------------------------------------------

def test_every_value_from_the_environment_is_masked_whatever_its_name(tmp_path, monkeypatch):
    for var, value in {"HF_AUTH": "hfauth-123456", "GITHUB_PAT": "ghp_abcdef123", "DB_CREDENTIALS": "u:pw-secret"}.items():
        monkeypatch.setenv(var, value)
    r = write(tmp_path / "r.yaml", "recipe: s\n" + MINIMAL +
              "template: {system: 'token=${oc.env:HF_AUTH}'}\n"
              "evaluate: {generate: {prompts: ['${oc.env:GITHUB_PAT}', 'then ${evaluate.generate.prompts[0]}',"
              " '${oc.env:DB_CREDENTIALS}']}}\n")
    rec = api.load(r)
    assert rec.template.system == "token=hfauth-123456"           # the run gets the value
    assert rec.evaluate.generate.prompts[1] == "then ghp_abcdef123"
    shown = api.show(rec) + api.show(rec, "json")
    for value in ("hfauth-123456", "ghp_abcdef123", "u:pw-secret"):
        assert value not in shown
    # the indirect reference is masked too
    assert "then" not in shown


def test_a_set_type_error_does_not_echo_a_value_from_the_environment(capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_leakyleakyleaky")
    lines = user_error(capsys, "validate", str(POETRY), "--set", "seed=${oc.env:HF_TOKEN}")
    assert lines and all("hf_leaky" not in l for l in lines), lines
    assert any("seed: expected integer" in l for l in lines)
    lines = user_error(capsys, "validate", str(POETRY), "--set", "template.chat=${oc.env:HF_TOKEN}")
    assert lines and all("hf_leaky" not in l for l in lines), lines



# --- what a run stores --------------------------------------------------------------------------------

SECRET_RECIPE = """recipe: masked
model: {base: builtin:tiny}
sources:
  a: {path: a.jsonl, format: alpaca}
template: {system: "token=${oc.env:HF_AUTH}", max_length: 64}
split: {eval: 0.2}
"""


def _all_text(root: Path) -> str:
    out = []
    for p in root.rglob("*"):
        if p.is_file() and p.suffix in (".json", ".jsonl", ".md", ".yaml", ".txt"):
            out.append(p.read_text(encoding="utf-8", errors="replace"))
    return "\n".join(out)


def test_a_run_stores_no_value_from_the_environment_and_only_its_own_quarantine(tmp_path, capsys, monkeypatch):
    rows = json.loads((DATA / "identity.json").read_text())[:40]
    bad = '{"instruction": "no output"}\n'
    (tmp_path / "a.jsonl").write_text(bad + "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows))
    r = write(tmp_path / "r.yaml", SECRET_RECIPE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_AUTH", "hf_firstsecret")
    before = {p for p in tmp_path.rglob("*")}
    code, out, err = cli(capsys, "run", str(r), "--dry-run", "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, err
    written = {p for p in tmp_path.rglob("*")} - before
    assert all(p.is_relative_to(tmp_path / "runs" / "masked") or p.is_relative_to(tmp_path / "cache") or p == tmp_path / "runs"
               for p in written), sorted(map(str, written))
    run = tmp_path / "runs" / "masked"
    assert (run / "quarantine" / "a.jsonl").is_file()
    on_disk = _all_text(tmp_path / "cache") + _all_text(run)
    assert "hf_firstsecret" not in on_disk and "token=" not in on_disk      # manifests, index files, report
    # the value changes: plan says so without showing either value
    monkeypatch.setenv("HF_AUTH", "hf_secondsecret")
    code, out, err = cli(capsys, "plan", str(r), "--cache-dir", str(tmp_path / "cache"))
    assert code == 0 and "a value from the environment changed (not shown)" in out
    assert "secret" not in out + err
    for fmt in ("text", "markdown", "json"):
        code, out, err = cli(capsys, "diff", str(r), "--set-b", "template.system=other ${oc.env:GITHUB_PAT}",
                             "--format", fmt, "--cache-dir", str(tmp_path / "cache"))
        assert "secret" not in out + err and "token=" not in out + err, (fmt, out)
    # 13: the source is fixed; the run directory reflects this run only
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows))
    code, out, err = cli(capsys, "run", str(r), "--dry-run", "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, err
    report = json.loads((run / "report.json").read_text())
    assert report["quarantine"]["a"]["count"] == 0
    assert not list((run / "quarantine").glob("*.jsonl"))
    # duplicate ids are kept and reported
    dup = dict(rows[0], id="same")
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows + [dup, dup]))
    code, out, err = cli(capsys, "run", str(r), "--dry-run", "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, err
    report = json.loads((run / "report.json").read_text())
    assert report["quarantine"]["a"]["duplicate_ids"] == {"rows": 1, "ids": 1, "examples": ["same"]}
    assert "a: 1 rows share an id with an earlier row (1 ids, e.g. same)" in (run / "report.md").read_text()


def test_a_number_from_the_environment_is_masked_in_step_parameters_and_still_keys_the_cache(tmp_path, monkeypatch):
    from runner.dag.compile import compile_recipe
    from runner.dag.fingerprint import fingerprint_graph
    from runner.steps import STEPS

    monkeypatch.setenv("LR", "0.000234")
    r = api.load(write(tmp_path / "r.yaml", "recipe: s\n" + MINIMAL.replace("builtin:tiny", "builtin:tiny-random") +
                       "train: {learning_rate: '${oc.decode:${oc.env:LR}}', max_steps: 7}\n"))
    assert r.train.learning_rate == 0.000234
    graph = compile_recipe(r)
    fps = fingerprint_graph(graph, tmp_path, {k: m.VERSION for k, m in STEPS.items()})
    stored = json.dumps({n: f.components for n, f in fps.items()})
    assert "0.000234" not in stored and "2.34e-04" not in stored
    assert '"max_steps":7' in stored.replace(" ", "")        # a number not from the environment is shown
    monkeypatch.setenv("LR", "0.0003")
    assert fingerprint_graph(compile_recipe(api.load(tmp_path / "r.yaml")), tmp_path,
                             {k: m.VERSION for k, m in STEPS.items()})["train.main"].value != fps["train.main"].value


def test_a_count_that_equals_a_value_from_the_environment_stays_a_count(tmp_path, capsys, monkeypatch):
    """A threshold from the environment equal to a row count (494 rows load from the first 500 poems): the
    threshold is masked where the parameter goes (the fingerprint's params), the count is a count wherever
    it is stored or shown (masking numbers by value made three bugs: d307592, de74dca, c095674)."""
    from helpers.data import TANG_FIELDS

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINC", "494")
    r = write(tmp_path / "r.yaml", f"recipe: counted\nmodel: {{base: builtin:tiny}}\nsources:\n  tang:\n"
              f"    path: {DATA}/tang_poems.jsonl\n    format: fields\n    limit: 500{TANG_FIELDS}\n"
              "filters:\n  - {kind: length, field: assistant, max_chars: '${oc.decode:${oc.env:MINC}}'}\n"
              "split: {strategy: random, eval: 0.1}\n")
    for attempt in ("ran", "cached"):
        code, out, err = cli(capsys, "run", str(r), "--dry-run", "--cache-dir", str(tmp_path / "cache"))
        assert code == 0 and "Traceback" not in err, (attempt, err[-3000:])
        report = (tmp_path / "runs" / "counted" / "report.md").read_text()
        assert "| load.tang | " in report and "| 500 | 494 |" in report, (attempt, report[:600])
        assert "tang               494" in out or " 494 " in out, out
    stored = _all_text(tmp_path / "cache").replace(" ", "")
    assert '"rows_out":494' in stored and '"max_chars":"***"' in stored and '"max_chars":494' not in stored


def test_masked_keys_stay_apart_so_a_changed_value_changes_the_fingerprint():
    # a mix keyed by names from the environment: masking both keys to one "***" would keep one weight only,
    # and a changed weight would then reuse the cached step
    from runner.recipe.secrets import redact

    secrets = ["corpus-east", "corpus-west"]
    a = redact({"mix": {"corpus-east": 0.3, "corpus-west": 0.7}}, secrets)
    b = redact({"mix": {"corpus-east": 0.5, "corpus-west": 0.7}}, secrets)
    assert a != b and len(a[0]["mix"]) == 2
    assert "corpus" not in json.dumps(a) + json.dumps(b)



# --- the spec file a multi-process run reads ----------------------------------------------------------

def test_the_multi_process_spec_file_holds_no_value_from_the_environment(tmp_path, monkeypatch):
    from runner.dag.compile import compile_recipe
    from runner.steps.train import stage_spec
    from runner.train import worker

    monkeypatch.setenv("HF_AUTH", "hfauth-123456")
    monkeypatch.setenv("LR", "0.000234")
    r = api.load(write(tmp_path / "r.yaml", "recipe: s\n" + MINIMAL +
                       "template: {system: 'token=${oc.env:HF_AUTH}'}\n"
                       "train: {learning_rate: '${oc.decode:${oc.env:LR}}'}\n"))
    graph = compile_recipe(r)
    spec = stage_spec(r, "main")
    assert spec.template.system == "token=hfauth-123456" and spec.train.learning_rate == 0.000234
    path = worker.write_spec(tmp_path / "spec.json", "runner.trainers.sft.driver", spec,
                             {"train_rows": "rows.jsonl", "out_dir": str(tmp_path)}, secrets=graph.secrets)
    text = path.read_text()
    assert "hfauth-123456" not in text and "0.000234" not in text
    # the processes the launcher starts get the values in their environment and train the same stage
    monkeypatch.setenv(worker.SECRETS_ENV, json.dumps(list(graph.secrets)))
    assert worker.read_spec(path)[1] == spec
    monkeypatch.delenv(worker.SECRETS_ENV)
    with pytest.raises(RecipeError, match="RECIPE_SECRETS"):
        worker.read_spec(path)


_SPEC_VALUES = st.recursive(
    st.one_of(st.text(alphabet="ab2${}[]0.-S", max_size=8), st.integers(-3, 300),
              st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=False), st.booleans(), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text("xyz", max_size=3), inner, max_size=4)),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@example(value="a-aab", secrets=["aab", "S[0"])   # "S[0" is inside ${RECIPE_SECRETS[0]}
@given(value=_SPEC_VALUES, secrets=st.lists(st.text(alphabet="ab2.0-S[]", min_size=1, max_size=4), unique=True, max_size=3))
def test_the_spec_file_round_trips_whatever_the_values_from_the_environment(value, secrets):
    """Values from the environment of any length (a "2" is one too, masked where a value is exactly it)
    leave the spec file and come back: the launched process trains the very same stage. Secrets such as
    "S[0" occur inside a placeholder (`${RECIPE_SECRETS[0]}`): hiding is one pass, so none is found there."""
    from runner.train import worker

    secrets = tuple(sorted(secrets, key=len, reverse=True))     # as the graph holds them: longest first
    hidden = worker._hide(value, secrets)
    assert worker._show(hidden, list(secrets)) == value
    exact = (isinstance(value, str) and value in secrets) or \
        (isinstance(value, (int, float)) and not isinstance(value, bool) and str(value) in secrets)
    if exact:   # a value that is exactly one from the environment never stays in the file
        assert hidden != value


def test_a_prompt_from_the_environment_reaches_no_log_line_and_no_file(tmp_path, monkeypatch):
    """A generation prompt from the environment: the model is asked it, and every sample echoes it; the run's
    log (stdout and stderr), eval.json in the cache, report.json/report.md and every other file show ***."""
    import subprocess
    import sys
    secret = "Sekret-Prompt-Xq7"
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "poetry_lora.yaml"
    args = ["run", str(recipe), "--set", "model.base=builtin:tiny-random", "--set", "sources.tang.limit=200",
            "--set", "size=40", "--set", "train.max_steps=1", "--set", "train.deepspeed=null",
            "--set", "evaluate.max_rows=4", "--set", "evaluate.generate.max_new_tokens=4",
            "--set", 'evaluate.generate.prompts=["${oc.env:SEC_PR}"]',
            "--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "run")]
    p = subprocess.run([sys.executable, "-m", "runner", *args], capture_output=True, text=True, timeout=900,
                       env={**__import__("os").environ, "SEC_PR": secret})
    assert p.returncode == 0, p.stderr[-3000:]
    assert "sample: '***'" in p.stderr, p.stderr[-2000:]          # the model was asked; the line masks it
    assert secret not in p.stdout + p.stderr
    stored = _all_text(tmp_path / "cache") + _all_text(tmp_path / "run")
    assert secret not in stored
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert any(s["prompt"] == "***" for s in report["stages"][0]["metrics"]["eval"]["samples"])
