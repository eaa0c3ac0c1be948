"""Shared by tests/test_data_*.py: recipes written to tmp_path and loaded the way a user's are, the
real data files, and a runner for the data steps (load -> filter -> dedup -> split -> mix)."""
from __future__ import annotations

import json
from pathlib import Path

from runner import api
from runner.dag.compile import compile_recipe
from runner.steps import STEPS
from runner.steps.base import StepContext

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"
DATA_KINDS = ("load", "filter", "dedup", "split", "mix")
TANG_FIELDS = """
    fields:
      user: "以下是一首唐詩的第一句話，請用你的知識判斷並完成整首詩。\\n{{ paragraphs[0] }}"
      assistant: "{{ paragraphs[1:] | join('\\n') }}"
      meta: {author: "{{ author }}", title: "{{ title }}"}"""


def recipe(tmp_path: Path, body: str, *overrides: str, name: str = "recipe.yaml"):
    """A recipe from YAML text ({data} is the repo's data folder), loaded with api.load."""
    path = tmp_path / name
    text = "recipe: data_test\nmodel: {base: builtin:tiny}\n" + body.replace("{data}", str(DATA))
    path.write_text(text, encoding="utf-8")
    return api.load(path, list(overrides))


def raw_lines(name: str) -> list[dict]:
    return [json.loads(x) for x in (DATA / name).read_text(encoding="utf-8").splitlines() if x.strip()]


def run_data_steps(r, root: Path, kinds=DATA_KINDS) -> dict[str, tuple[Path, dict]]:
    """Run the recipe's data steps in graph order, each into root/<step>; -> {step: (dir, stats)}."""
    done: dict[str, tuple[Path, dict]] = {}
    for step in compile_recipe(r).steps:
        if step.kind not in kinds:
            continue
        out = root / step.name
        out.mkdir(parents=True)
        ctx = StepContext(step=step, fingerprint="test", out=out, inputs={i: done[str(i)][0] for i in step.inputs},
                          base_dir=r.file.parent, run_dir=root, partial=root / "partial", log=lambda msg: None)
        done[step.name] = (out, STEPS[step.kind].run(ctx))
    return done


def record(text: str, rid: str, source: str = "s", user: str = "q", **meta) -> dict:
    return {"id": rid, "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": text}],
            "meta": meta, "source": source}
