"""`recipe diff`: settings compared key by key (list items by name/kind), the steps a change invalidates,
rows before -> after, and --git. Outputs are golden files in tests/golden/diff/; REGEN_GOLDEN=1 rewrites them."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner import api
from runner.cli import main
from runner.diff import Change, compare

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden" / "diff"
HEAVY = ("torch", "transformers", "datasets", "trl", "peft", "deepspeed")

SMALL = """\
recipe: small
model: {base: builtin:tiny}
sources:
  alpaca: {path: data/alpaca_en_demo.json, format: alpaca}
  identity: {path: data/identity.json, format: alpaca}
filters:
  - {kind: length, field: assistant, min_chars: 10}
  - {kind: dedup, method: exact}
mix: {alpaca: 0.8, identity: 0.2}
size: 300
train: {epochs: 2, learning_rate: 1.0e-4, micro_batch_size: 2, batch_size: 8}
"""

STAGED = """\
recipe: staged
model: {base: builtin:tiny}
sources:
  alpaca: {path: data/alpaca_en_demo.json, format: alpaca}
  identity: {path: data/identity.json, format: alpaca}
stages:
  general: {mix: {alpaca: 1.0}, size: 200, train: {epochs: 2}}
  persona: {mix: {alpaca: 0.5, identity: 0.5}, size: 100, ewc: {lambda: 0.5}}
train: {learning_rate: 1.0e-4, micro_batch_size: 2, batch_size: 8}
"""


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("REGEN_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.is_file(), f"no golden file {path.name}: run the tests with REGEN_GOLDEN=1 and review it"
    assert text == path.read_text(encoding="utf-8"), f"{path.name} differs (REGEN_GOLDEN=1 rewrites it)"


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A folder with the repo's data under ./data; outputs name recipes relative to it."""
    (tmp_path / "data").symlink_to(ROOT / "data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RECIPE_CACHE_DIR", raising=False)
    return tmp_path


def write(path: Path | str, text: str, *replace: tuple[str, str]) -> str:
    for old, new in replace:
        assert old in text, old
        text = text.replace(old, new)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")
    return str(path)


def diff(capsys, *argv: str) -> tuple[int, str]:
    rc = main(["diff", *argv])
    return rc, capsys.readouterr().out


def as_json(capsys, *argv: str) -> dict:
    rc, out = diff(capsys, *argv, "--format", "json")
    assert rc == 0
    return json.loads(out)["recipes"][0]


# --- the issue's cases, golden --------------------------------------------------------------------

def test_ratio_change_uses_cached_rows(work, capsys):
    write("a.yaml", SMALL)
    write("b.yaml", SMALL, ("alpaca: 0.8, identity: 0.2", "alpaca: 0.9, identity: 0.1"))
    api.run("a.yaml", cache_dir="cache", output="runs/a", only="mix.main")  # data steps only: no model
    rc, out = diff(capsys, "a.yaml", "b.yaml", "--cache-dir", "cache", "--format", "markdown")
    golden("ratio_change.md", out)
    assert "300 (alpaca 240, identity 60) → 300 (alpaca 270, identity 30)" in out
    assert "| main | **retrain** |" in out

    # The after side's rows were computed from the cached split; running its mix must give the same.
    computed = as_json(capsys, "a.yaml", "b.yaml", "--cache-dir", "cache")["stages"][0]["after"]["rows"]
    api.run("b.yaml", cache_dir="cache", output="runs/b", only="mix.main")
    cached = as_json(capsys, "a.yaml", "b.yaml", "--cache-dir", "cache")["stages"][0]["after"]["rows"]
    assert (computed["basis"], cached["basis"]) == ("computed", "cached")
    assert (computed["total"], computed["by_source"]) == (cached["total"], cached["by_source"])


def test_ratio_the_sources_cannot_meet_is_called_out(work, capsys):
    write("a.yaml", SMALL)
    write("b.yaml", SMALL, ("alpaca: 0.8, identity: 0.2", "alpaca: 0.5, identity: 0.5"))
    api.run("a.yaml", cache_dir="cache", output="runs/a", only="split")
    rows = as_json(capsys, "a.yaml", "b.yaml", "--cache-dir", "cache")["stages"][0]["after"]["rows"]
    assert "the mix step will fail: identity needs 150 of its 86 train rows" in rows["problem"]


def test_inserted_filter_is_one_insertion(work, capsys):
    write("a.yaml", SMALL)
    write("b.yaml", SMALL, ("  - {kind: dedup", "  - {kind: regex, field: assistant, pattern: '(?i)as an ai'}\n  - {kind: dedup"))
    rc, out = diff(capsys, "a.yaml", "b.yaml", "--format", "markdown")
    golden("inserted_filter.md", out)
    changes = as_json(capsys, "a.yaml", "b.yaml")["changes"]
    assert [(c["path"], c["op"]) for c in changes] == [("filters[regex]", "added")]


def test_changed_extends_base(work, capsys):
    base = "train: {learning_rate: 1.0e-4, micro_batch_size: 2, batch_size: 8}\nmodel: {base: builtin:tiny, adapter: {r: 8}}\n"
    recipe = SMALL.replace("model: {base: builtin:tiny}\n", "extends: base.yaml\n").replace("data/", "../data/")
    recipe = recipe.replace("train: {epochs: 2, learning_rate: 1.0e-4, micro_batch_size: 2, batch_size: 8}", "train: {epochs: 2}")
    write("a/base.yaml", base)
    write("b/base.yaml", base, ("learning_rate: 1.0e-4, micro_batch_size: 2, batch_size: 8",
                                "learning_rate: 5.0e-5, micro_batch_size: 4, batch_size: 16"), ("r: 8", "r: 16"))
    write("a/r.yaml", recipe)
    write("b/r.yaml", recipe)
    rc, out = diff(capsys, "a/r.yaml", "b/r.yaml", "--format", "markdown")
    golden("extends_base.md", out)
    assert "| main | **retrain** | 8 (2×4×1) → 16 (4×4×1) | 2 | 0.0001 → 5e-05 |" in out


def test_renamed_source(work, capsys):
    write("a.yaml", SMALL)
    write("b.yaml", SMALL, ("  identity: {", "  persona: {"), ("identity: 0.2", "persona: 0.2"))
    rc, out = diff(capsys, "a.yaml", "b.yaml", "--format", "markdown")
    golden("renamed_source.md", out)
    changes = as_json(capsys, "a.yaml", "b.yaml")["changes"]
    assert {"section": "sources", "path": "sources.persona", "op": "renamed", "before": "identity", "after": "persona"} in changes


def test_stage_added(work, capsys):
    write("a.yaml", STAGED)
    write("b.yaml", STAGED, ("train: {learning_rate", "  polish: {mix: {identity: 1.0}, size: 50, train: {epochs: 3, learning_rate: 2.0e-5}}\n"
                                                     "train: {learning_rate"))
    rc, out = diff(capsys, "a.yaml", "b.yaml", "--format", "markdown")
    golden("stage_added.md", out)
    d = as_json(capsys, "a.yaml", "b.yaml")
    assert [(s["name"], s["status"]) for s in d["stages"]] == [("general", "unchanged"), ("persona", "unchanged"),
                                                                 ("polish", "new")]
    assert {s["name"] for s in d["steps"]} == {"mix.polish", "render.polish", "train.polish", "eval.polish", "export"}


def test_set_only_change(work, capsys):
    """`--set-b` changes the after side only: what an override on the command line would do."""
    write("a.yaml", SMALL)
    argv = ("a.yaml", "--set-b", "train.epochs=3", "--set-b", "train.micro_batch_size=4")
    rc, out = diff(capsys, *argv, "--format", "markdown")
    golden("set_only.md", out)
    # the same as two files that differ only by those values
    write("b.yaml", SMALL, ("epochs: 2", "epochs: 3"), ("micro_batch_size: 2", "micro_batch_size: 4"))
    assert as_json(capsys, *argv)["changes"] == as_json(capsys, "a.yaml", "b.yaml")["changes"]
    # --set applies to both sides: no difference
    rc, out = diff(capsys, "a.yaml", "a.yaml", "--set", "train.epochs=3", "--exit-code")
    assert rc == 0 and "no differences" in out


def test_identical_recipes_empty_diff_exit_0(work, capsys):
    write("a.yaml", SMALL)
    write("copy.yaml", "# the same recipe, written differently\n" + SMALL.replace("size: 300", "size: 300  # rows"))
    rc, out = diff(capsys, "a.yaml", "copy.yaml", "--exit-code", "--format", "json")
    golden("identical.json", out)
    assert rc == 0 and json.loads(out)["differences"] is False
    rc, out = diff(capsys, "a.yaml", "copy.yaml")
    assert rc == 0 and out == "a.yaml → copy.yaml\n  no differences\n\n"


def test_exit_code_only_when_asked(work, capsys):
    write("a.yaml", SMALL)
    write("b.yaml", SMALL, ("size: 300", "size: 200"))
    assert diff(capsys, "a.yaml", "b.yaml", "--exit-code")[0] == 1
    assert diff(capsys, "a.yaml", "b.yaml")[0] == 0


def test_shipped_curriculum_vs_stage2_correction(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("RECIPE_CACHE_DIR", raising=False)
    argv = ("recipes/curriculum_3stage.yaml", "recipes/stage2_correction.yaml", "--cache-dir", str(tmp_path))
    rc, out = diff(capsys, *argv, "--format", "markdown")
    golden("curriculum_vs_stage2.md", out)
    rc, out = diff(capsys, *argv, "--format", "json")
    golden("curriculum_vs_stage2.json", out)
    d = json.loads(out)["recipes"][0]
    assert [(s["name"], s["status"]) for s in d["stages"]] == [("base", "skipped"), ("task", "retrain"), ("domain", "retrain")]
    rc, out = diff(capsys, *argv)
    golden("curriculum_vs_stage2.txt", out)


def test_meta_recipe_inner_change_retrains_fomaml_only(tmp_path, monkeypatch, capsys):
    """The meta steps: an inner-loop setting retrains train.meta and reruns the few-shot evaluation, not
    the data steps and not the SFT control (which has no inner loop)."""
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("RECIPE_CACHE_DIR", raising=False)
    argv = ("recipes/fomaml_poets.yaml", "--set-b", "meta.inner.learning_rate=1e-3", "--cache-dir", str(tmp_path))
    rc, out = diff(capsys, *argv, "--format", "json")
    steps = {s["name"]: s for s in json.loads(out)["recipes"][0]["steps"]}
    assert set(steps) == {"train.meta", "eval.few_shot"}
    rc, out = diff(capsys, *argv)
    assert "retrain 1 stage (train.meta)" in out and "! train.meta" in out


def test_a_base_fragment_is_compared_as_written(capsys, tmp_path):
    base = ROOT / "recipes" / "base_lora.yaml"
    changed = write(tmp_path / "base_lora.yaml", base.read_text(), ("learning_rate: 2.0e-4", "learning_rate: 1.0e-4"))
    d = as_json(capsys, str(base), changed)
    assert [(c["path"], c["before"], c["after"]) for c in d["changes"]] == [("train.learning_rate", 0.0002, 0.0001)]
    assert d["steps"] == [] and "neither side is a runnable recipe" in d["notes"][0]


# --- list matching -----------------------------------------------------------------------------------

def test_items_match_by_kind_not_position():
    a = [{"kind": "length", "min_chars": 10}, {"kind": "regex", "pattern": "x"}, {"kind": "dedup", "method": "exact"},
         {"kind": "dedup", "method": "minhash"}]
    changed = [a[0], {**a[1], "pattern": "y"}, a[2], a[3]]
    assert compare({"f": a}, {"f": changed}) == [Change("f[regex].pattern", "changed", "x", "y")]
    assert compare({"f": a}, {"f": [a[1], a[0], a[2], a[3]]}) == [Change("f[regex]", "moved", 1, 0)]  # order matters
    assert compare({"f": a}, {"f": a[:3]}) == [Change("f[dedup:minhash]", "removed", a[3], None)]
    assert compare({"f": a}, {"f": [a[0], {"kind": "pii"}, *a[1:]]}) == [Change("f[pii]", "added", None, {"kind": "pii"})]
    tasks = [{"name": "x", "support": ["a"]}, {"name": "y", "support": ["b"]}]
    assert compare({"t": tasks}, {"t": [tasks[0], {**tasks[1], "support": ["c"]}]}) == [
        Change("t[y].support", "changed", ["b"], ["c"])]


def test_repeated_kinds_get_numbered_labels():
    a = [{"kind": "regex", "pattern": "x"}, {"kind": "regex", "pattern": "y"}]
    b = [{"kind": "regex", "pattern": "x"}, {"kind": "regex", "pattern": "z"}]
    assert compare({"filters": a}, {"filters": b}) == [Change("filters[regex#2].pattern", "changed", "y", "z")]


# --- --git ------------------------------------------------------------------------------------------

def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """recipes/ (a base fragment, recipes extending it), data/ tracked, data/local/ ignored."""
    r = tmp_path / "repo"
    for name in ("identity.json", "alpaca_en_demo.json"):
        write(r / "data" / name, (ROOT / "data" / name).read_text())
    write(r / "data" / "local" / "big.json", (ROOT / "data" / "identity.json").read_text())  # downloaded, not versioned
    write(r / ".gitignore", "data/local/\n.recipe/\n")
    write(r / "recipes" / "base.yaml", "seed: 1\nmodel: {base: builtin:tiny}\ntrain: {learning_rate: 1.0e-4, epochs: 1}\n")
    src = "sources:\n  {name}: {{path: ../data/{file}, format: alpaca}}\n"
    write(r / "recipes" / "one.yaml", "recipe: one\nextends: base.yaml\n" + src.format(name="id", file="identity.json"))
    write(r / "recipes" / "two.yaml", "recipe: two\nextends: base.yaml\n" + src.format(name="al", file="alpaca_en_demo.json")
          + "size: 100\n")
    write(r / "recipes" / "local.yaml", "recipe: local\nmodel: {base: builtin:tiny}\n" + src.format(name="big", file="local/big.json"))
    write(r / "recipes" / "ci.yml", "on: push\n")  # YAML that is not a recipe
    git(r, "init", "-q")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "recipes")
    monkeypatch.chdir(r)
    monkeypatch.delenv("RECIPE_CACHE_DIR", raising=False)
    return r


def test_git_mode(repo, capsys):
    rc, out = diff(capsys, "--git", "HEAD", "--exit-code")
    assert (rc, out) == (0, "no recipe changes in the repository since HEAD\n")

    write(repo / "recipes" / "base.yaml", (repo / "recipes" / "base.yaml").read_text(), ("1.0e-4", "3.0e-4"))
    (repo / "recipes" / "two.yaml").unlink()
    write(repo / "recipes" / "three.yaml", "recipe: three\nextends: base.yaml\nsources:\n  id: {path: ../data/identity.json, format: alpaca}\n"
          "stages:\n  a: {mix: {id: 1.0}}\n  b: {mix: {id: 1.0}, train: {epochs: 2}}\n")
    rows = json.loads((repo / "data" / "identity.json").read_text())
    (repo / "data" / "identity.json").write_text(json.dumps(rows[:40]))  # data changed: steps, not settings
    rc, out = diff(capsys, "--git", "HEAD", "--format", "markdown", "--exit-code")
    assert rc == 1
    golden("git.md", out)
    assert "recipes/local.yaml" not in out and "ci.yml" not in out  # unchanged, and not a recipe
    assert "recipe-diff-" not in out  # REV's temp dir never shows

    # a path limits the search; paths are relative to where the command runs
    os.chdir(repo / "recipes")
    rc, out = diff(capsys, "--git", "HEAD", "one.yaml", "--format", "json")
    assert [d["title"] for d in json.loads(out)["recipes"]] == ["recipes/one.yaml"]
    d = json.loads(out)["recipes"][0]
    assert [c["path"] for c in d["changes"]] == ["train.learning_rate"]
    assert "file ../data/identity.json changed" in d["steps"][0]["why"]


def test_git_mode_reports_a_recipe_that_stops_loading(repo, capsys):
    write(repo / "recipes" / "one.yaml", "recipe: [\n")
    write(repo / "recipes" / "two.yaml", (repo / "recipes" / "two.yaml").read_text(), ("size: 100", "size: 100\nbogus: 1"))
    rc, out = diff(capsys, "--git", "HEAD", "--format", "json", "--exit-code")
    assert rc == 1
    d = {x["title"]: x for x in json.loads(out)["recipes"]}
    assert d["recipes/one.yaml"]["problems"][0].startswith("after does not load: recipes/one.yaml:2:1: YAML syntax")
    assert d["recipes/two.yaml"]["problems"][0].startswith("after does not validate: recipes/two.yaml:6:1: unknown key 'bogus'")


def test_git_mode_unknown_revision(repo, capsys):
    assert main(["diff", "--git", "no-such-rev"]) == 2
    assert "unknown revision 'no-such-rev'" in capsys.readouterr().err


# --- light (its speed is measured in bench/validate_latency.py, not asserted in a timed test) -------

LIGHT = """
import sys
from runner.cli import main
assert main(["diff", "recipes/curriculum_3stage.yaml", "recipes/stage2_correction.yaml", "--format", "markdown",
             "--cache-dir", sys.argv[1]]) == 0
if sys.argv[2] == "git":  # the checkout is a git work tree
    assert main(["diff", "--git", "HEAD", "recipes", "--cache-dir", sys.argv[1]]) in (0, 1)
print("HEAVY:", sorted(m for m in HEAVY if m in sys.modules), file=sys.stderr)
"""


def test_diff_imports_nothing_heavy(tmp_path):
    is_git = shutil.which("git") and subprocess.run(["git", "rev-parse"], cwd=ROOT, capture_output=True).returncode == 0
    out = subprocess.run([sys.executable, "-c", f"HEAVY = {HEAVY!r}\n" + LIGHT, str(tmp_path), "git" if is_git else "-"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.rsplit("HEAVY: ", 1)[1].strip() == "[]"


def test_documented_workflow_uses_real_flags():
    import re
    import shlex

    import yaml

    from runner.cli import build_parser
    wf = yaml.safe_load((ROOT / "docs" / "github-actions-recipe-diff.yml").read_text())
    run = next(s["run"] for s in wf["jobs"]["recipe-diff"]["steps"] if s.get("id") == "diff")
    line = re.search(r"^recipe (diff .*?) >", run, re.M).group(1)
    args = build_parser().parse_args(shlex.split(line.replace('"$BASE"', "abc123")))
    assert (args.git, args.paths, args.format, args.exit_code) == ("abc123", ["recipes/"], "markdown", True)


def test_git_mode_path_typo_is_an_error(repo, capsys):
    assert main(["diff", "--git", "HEAD", "recipez"]) == 2
    assert "recipez exists neither in the working tree nor at HEAD" in capsys.readouterr().err


def test_git_mode_same_error_on_both_sides_is_no_difference(repo, capsys):
    write(repo / "recipes" / "cycle_a.yaml", "recipe: a\nextends: cycle_b.yaml\n")
    write(repo / "recipes" / "cycle_b.yaml", "recipe: b\nextends: cycle_a.yaml\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a broken pair")
    os.chdir(repo / "recipes")  # messages name files from the top of the repository on both sides
    assert diff(capsys, "--git", "HEAD", "--exit-code") == (0, "no recipe changes in the repository since HEAD\n")


# --- every markdown cell is escaped: a recipe value cannot break the PR comment (hardening D24) ---------

import re  # noqa: E402

from hypothesis import given, settings, strategies as st  # noqa: E402

_NASTY = st.lists(st.sampled_from(list("ab |<>!-&`\n\r") + ["\u202e", "\u2066", "\u200f", "<!--", "-->"]),
                  max_size=12).map("".join)


@settings(max_examples=200, deadline=None)
@given(before=_NASTY, after=_NASTY, why=_NASTY, name=_NASTY)
def test_markdown_cells_show_any_recipe_value_and_never_break_the_table(before, after, why, name):
    from runner.diff.impact import RecipeDiff, StepChange
    from runner.diff.output import render_markdown
    from runner.recipe.compare import Change
    d = RecipeDiff(f"{name}.yaml", "a", "b", [Change("template.system", "changed", before, after)],
                   [StepChange(f"render.{name}", "render", name, "changed", (f"param template.system {why}",), False)],
                   [], {name: (1, 2)}, [f"note {why}"], [])
    md = render_markdown([d])
    allowed = ("<details>", "</details>", "<summary>", "</summary>", "<sub>", "</sub>")
    for line in md.splitlines():
        cells = re.split(r"(?<!\\)\|", line)[1:-1] if line.startswith("|") else [line]
        if line.startswith("|"):   # a table row: exactly its columns, whatever the values held
            assert len(cells) in (3, 4), line
        # HTML is shown, never interpreted: no tag outside a code span (where GitHub shows it as text)
        text = " ".join(c for c in cells if not (c.strip().startswith("`") and c.strip().endswith("`")))
        for tag in allowed:
            text = text.replace(tag, "")
        assert "<" not in text, line
    assert not any(c in md for c in "\u202e\u2066\u200f")
    assert "\r" not in md
