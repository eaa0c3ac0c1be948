"""A step kind is one module that says everything about itself: the engine, plan, diff, report and CLI
ask it and name no kind. Held here by reading the code (no kind named outside runner/steps/) and by
plugging a new kind in with one registry line: it runs, plans, and shows in the report and the dry run."""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from runner import api
from runner.steps import STEPS
from runner.steps.base import Declared, Kind, StepId, format_step, parse_step
from runner.steps.result import Result

ROOT = Path(__file__).resolve().parents[1]
ENGINE = [ROOT / "runner" / d for d in ("dag", "diff", "cli")] + [ROOT / "runner" / "api.py"]


def _engine_files() -> list[Path]:
    return [f for p in ENGINE for f in ([p] if p.is_file() else sorted(p.rglob("*.py")))]


def test_the_engine_names_no_step_kind():
    """No StepId built from a literal kind and no comparison of a kind with a literal, outside the step
    modules: what a kind is and does is asked of the kind."""
    kinds = set(STEPS) | {m.KIND.written for m in STEPS.values()}
    found = []
    for f in _engine_files():
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "StepId" and node.args \
                    and isinstance(node.args[0], ast.Constant):
                found.append(f"{f.relative_to(ROOT)}:{node.lineno} StepId({node.args[0].value!r})")
            if isinstance(node, ast.Compare) and any(
                    isinstance(x, ast.Attribute) and x.attr == "kind" for x in [node.left, *node.comparators]):
                lits = [c for c in ast.walk(node) if isinstance(c, ast.Constant) and c.value in kinds]
                if lits:
                    found.append(f"{f.relative_to(ROOT)}:{node.lineno} compares a kind with {lits[0].value!r}")
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) > 1 and all(
                    isinstance(e, ast.Constant) and e.value in set(STEPS) for e in node.elts):
                found.append(f"{f.relative_to(ROOT)}:{node.lineno} a list of kinds")
    assert not found, "\n".join(found)


def test_every_kind_describes_itself():
    for name, mod in STEPS.items():
        assert isinstance(mod.KIND, Kind), name
        assert issubclass(mod.KIND.result, Result) and mod.KIND.result.__dataclass_params__.frozen, name
        assert callable(mod.steps) and callable(mod.declare) and callable(mod.run) and isinstance(mod.VERSION, int)
        tail = {"source": "s", "stage": "s", "role": "r", None: None}[mod.KIND.per]
        sid = StepId(name, source=tail) if mod.KIND.per == "source" else StepId(name, stage=tail)
        assert parse_step(format_step(sid), [sid]) == sid


def test_a_result_keeps_counts_that_equal_a_secret(tmp_path, monkeypatch):
    """A count equal to a value from the environment is a count: stored, shown and reported as the number
    (masking numbers by value made a cached rerun fail formatting '***')."""
    from runner.recipe.secrets import redact
    from runner.steps.load import LoadResult
    res = LoadResult(rows_in=494, rows_out=494, quarantined=0)
    stored = redact(res.to_json(), ("494", "some-token"), numbers=False)[0]
    assert LoadResult.of(stored) == res
    assert redact({"threshold": 494}, ("494",))[0] == {"threshold": "***"}   # a parameter from the environment is


# --- a new kind: one module, one registry line ----------------------------------------------------------

@dataclass(frozen=True)
class WordsResult(Result):
    words: dict = field(default_factory=dict)

    @classmethod
    def defaults(cls) -> dict:
        return {"words": {}}

    def contribute(self, step, record, report, run_dir) -> None:
        report["words"].update(self.words)

    @classmethod
    def markdown_tail(cls, report, run_dir) -> list[str]:
        return ["", "## Words", ""] + [f"- {k}: {v}" for k, v in report["words"].items()]

    def summary_lines(self, step) -> list[str]:
        return [f"words: {sum(self.words.values())}"]


def _words_kind():
    def declare(recipe, step):
        return Declared({"sources": list(recipe.sources)}, inputs=(StepId("split"),))

    def run(ctx):
        words = {}
        for f in sorted((ctx.input(StepId("split")) / "train").glob("*.jsonl")):
            words[f.stem] = len(f.read_text(encoding="utf-8").splitlines())   # rows, in fact
        (ctx.out / "words.json").write_text(json.dumps(words))
        return WordsResult(words=words)

    return SimpleNamespace(KIND=Kind("words", data=True, result=WordsResult), VERSION=1,
                           steps=lambda recipe: [StepId("words")], declare=declare, run=run)


def test_a_new_kind_plugs_in_with_one_registry_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(STEPS, "words", _words_kind())   # the one line
    from runner.cli import main
    recipe = ROOT / "recipes" / "poetry_lora.yaml"
    args = ["--set", "model.base=builtin:tiny", "--set", "sources.tang.limit=300", "--set", "size=100"]
    plan = api.plan(recipe, [a for a in args if a != "--set"], cache_dir=str(tmp_path / "cache"))
    assert "words" in [s.name for s in plan.steps]
    assert main(["run", str(recipe), *args, "--dry-run", "--cache-dir", str(tmp_path / "cache"),
                 "--output", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    split = next(s for s in report["steps"] if s["name"] == "split")
    assert report["words"]["tang"] == split["rows_out"] - 15 > 200   # the train side: 5% of 294 rows are eval
    assert "words" in [s["name"] for s in report["steps"]]
    assert "## Words" in (tmp_path / "run" / "report.md").read_text()
    assert f"words: {report['words']['tang']}" in capsys.readouterr().out
    # the next run finds it cached, and its typed result back
    run = api.run(recipe, [a for a in args if a != "--set"], dry_run=True, cache_dir=str(tmp_path / "cache"),
                  output=str(tmp_path / "run"))
    rec = next(r for r in run.records if r.name == "words")
    assert rec.status == "cached" and isinstance(rec.result, WordsResult) and rec.result.words == report["words"]


@pytest.mark.parametrize("name", ["poetry_lora", "curriculum_3stage", "fomaml_poets", "seed003_fix"])
def test_run_order_is_inputs_first_and_stage_by_stage(name):
    from runner.dag.compile import compile_recipe
    from runner.steps.base import recipe_stage
    r = api.load(ROOT / "recipes" / f"{name}.yaml", ["model.base=builtin:tiny"])
    g = compile_recipe(r)
    seen: set = set()
    for s in g.steps:
        assert set(s.inputs) <= seen, f"{s.name} before its inputs"
        seen.add(s.id)
    stages = [recipe_stage(s.id) for s in g.steps if recipe_stage(s.id)]
    assert stages == sorted(stages, key=[st.name for st in r.active_stages].index)   # one stage after another
