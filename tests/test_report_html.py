"""runs/<recipe>/report.html: one self-contained page (no network), opened in headless Chromium: every chart
marks itself drawn, the console stays empty and no error reaches window.onerror; recipe strings and data
rows are shown as text, never as markup. Chromium is a test prerequisite (.ci/run installs it): without it the
browser tests fail with one line saying how to install it."""
import json
import re
import shutil
import subprocess

import pytest
from helpers.cli import cli, write
from helpers.data import DATA

from runner.dag.report_html import page, script_json

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHARTS = ("funnel", "curves", "forgetting", "fewshot", "gates", "samples", "trained")
PWN = "document.body.setAttribute('data-pwned',1)"
HOSTILE = f'</script><script>{PWN}</script><img src=x onerror="{PWN}">&amp;\u2028'


def open_page(path, tmp_path) -> tuple[str, list[str]]:
    """The DOM after the page's scripts ran, and every console line the page produced."""
    assert CHROMIUM, "no chromium on PATH: apt-get install chromium (.ci/run installs it)"
    profile = tmp_path / "chromium-profile"
    shutil.rmtree(profile, ignore_errors=True)
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr",
         "--v=0", "--dump-dom", path.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


def drawn(dom: str) -> dict[str, str]:
    return dict(re.findall(r'data-chart="(\w+)" data-drawn="(\w+)"', dom))


def body_errors(dom: str) -> str | None:
    m = re.search(r'<body[^>]*data-errors="([^"]*)"', dom)
    return m and m[1]


def test_the_browser_check_sees_a_broken_page(tmp_path):
    """The checks below can fail: a page that throws shows in the console and in body[data-errors]."""
    broken = page({"recipe": "r", "funnel": [], "curves": [], "forgetting": {"sources": [], "rows": []},
                   "few_shot": [], "gates": None, "samples": {"stages": [], "rows": []}, "trained": {"rows": []}})
    broken = broken.replace("[funnel,curves", "undefinedFunction();[funnel,curves")
    dom, console = open_page(write(tmp_path / "broken.html", broken), tmp_path)
    assert any("undefinedFunction is not defined" in line for line in console)
    assert "undefinedFunction" in body_errors(dom)
    assert 'data-ready="yes"' not in dom and drawn(dom) == {}


def _hostile_data() -> dict:
    return {"recipe": "r<b>", "funnel": [{"name": "load." + HOSTILE, "rows_in": 10, "rows_out": 7, "dropped": {HOSTILE: 3}}],
            "curves": [{"name": "train." + HOSTILE, "points": [[1, 2.5], [2, 2.0], [3, 1.75]]}],
            "forgetting": {"sources": ["a", HOSTILE], "rows": [["before", [3.0, 2.0]], ["main", [2.5, None]]]},
            "few_shot": [{"model": HOSTILE, "shots": 4, "n": 6, "loss_before": 3.0, "loss_after": 2.0,
                          "loss_after_sd": 0.1, "gain": 1.0, "gain_sd": 0.1}],
            "gates": {"status": "fail", "passed": 1, "failed": 1, "pending": 0, "checks": [
                {"metric": "eval_loss.a", "stage": "main", "min": None, "max": 3, "value": 2.5, "status": "pass"},
                {"metric": "stop_rate", "stage": "main", "min": 0.5, "max": None, "value": None, "status": "fail"}]},
            "samples": {"stages": ["before", "main"], "rows": [{"prompt": HOSTILE, "outputs": [
                {"output": HOSTILE, "stopped": False}, {"output": "ok", "stopped": True}]}]},
            "trained": {"rows": [{"stage": "main", "id": HOSTILE, "spans": [["user: " + HOSTILE, False],
                                                                            [HOSTILE + "<|im_end|>", True]], "cut": None}]}}


def test_untrusted_strings_cannot_leave_the_data_element():
    text = page(_hostile_data())
    data = text[text.index('id="report-data">') + len('id="report-data">'):]
    data = data[:data.index("</script>")]
    assert "<" not in data and ">" not in data and "&" not in data
    assert json.loads(data) == json.loads(script_json(_hostile_data())) == _hostile_data()
    assert "<title>Run report: r&lt;b&gt;</title>" in text
    page_only = text.replace(data, "")
    assert not re.search(r"(?:src|href)\s*=|https?://(?!www\.w3\.org/2000/svg')|@import|url\(", page_only)   # nothing to fetch


def test_every_chart_draws_and_untrusted_strings_stay_text(tmp_path):
    dom, console = open_page(write(tmp_path / "report.html", page(_hostile_data())), tmp_path)
    assert console == [] and body_errors(dom) is None
    assert drawn(dom) == dict.fromkeys(CHARTS, "yes") and 'data-ready="yes"' in dom
    assert not re.search("<body[^>]*data-pwned", dom) and "<img" not in dom      # no markup from the data ran
    assert dom.count("&lt;/script&gt;&lt;script&gt;document.body") >= 8          # shown, as text, in every chart
    assert '<mark>' + "&lt;/script&gt;" in dom and 'class="prompt">user: ' in dom
    assert '<td class="fail">fail</td>' in dom and "no value" in dom


RECIPE = f"""\
recipe: html_report
seed: 7
model:
  base: builtin:tiny-random
  adapter: {{type: lora, r: 4, alpha: 8, dropout: 0.0, target_modules: [q_proj, v_proj]}}
sources:
  a: {{path: {DATA}/identity.json, format: alpaca}}
split: {{eval: 0.2}}
filters:
  - {{kind: length, max_chars: 120}}
template: {{chat: chatml, system: "Be terse.", max_length: 64}}
train: {{max_steps: 2, micro_batch_size: 2, batch_size: 4, save_steps: 100, logging_steps: 1, learning_rate: 0.001,
         precision: fp32}}
evaluate:
  max_rows: 8
  generate: {{prompts: ["<b>question</b> 3"], max_new_tokens: 4, temperature: 0, eval_prompts: 0}}
  gates: [{{metric: eval_loss, max: 100}}]
"""


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """A real run (builtin:tiny-random, 2 steps): the starting model evaluated, one stage trained and evaluated."""
    tmp = tmp_path_factory.mktemp("html")
    path = write(tmp / "r.yaml", RECIPE)
    from runner.cli import main
    assert main(["run", str(path), "--cache-dir", str(tmp / "cache"), "--output", str(tmp / "run")]) == 0
    return tmp / "run"


def test_a_run_publishes_report_html(real_run):
    text = (real_run / "report.html").read_text(encoding="utf-8")
    written = json.loads((real_run / ".recipe-written.json").read_text())["units"]
    assert written["report.html"] == ["report.html"]
    report = json.loads((real_run / "report.json").read_text())
    data = json.loads(text[text.index('id="report-data">') + 17:].split("</script>")[0])
    assert [s["name"] for s in data["funnel"]][:2] == ["load.a", "filter.a"]
    assert data["curves"] == [{"name": "train.main", "points": [[1, data["curves"][0]["points"][0][1]],
                                                                 [2, data["curves"][0]["points"][1][1]]]}]
    assert data["forgetting"]["rows"] == [[st, [report["forgetting"][st]["a"]]] for st in ("before", "main")]
    assert data["samples"]["stages"] == ["before", "main"] and data["samples"]["rows"][0]["prompt"] == "<b>question</b> 3"
    assert data["gates"] == report["gates"] and report["gates"]["status"] == "pass"
    spans = data["trained"]["rows"][0]["spans"]
    assert not spans[0][1] and spans[0][0].startswith("<|im_start|>system\nBe terse.") and spans[1][1]
    assert spans[1][0].endswith("<|im_end|>")      # the answer and its end-of-turn token are what is trained


def test_a_real_run_report_draws_in_chromium(real_run, tmp_path):
    dom, console = open_page(real_run / "report.html", tmp_path)
    assert console == [] and body_errors(dom) is None
    assert drawn(dom) == {**dict.fromkeys(CHARTS, "yes"), "fewshot": "empty"}
    assert dom.count('class="curve"') == 1 and dom.count('class="heat"') == 2
    assert "&lt;b&gt;question&lt;/b&gt; 3" in dom and "<b>question" not in dom
