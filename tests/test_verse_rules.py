"""The verse_rules task family (runner/tools/make_verse_rules.py -> data/verse_rules/, recipes/verse_rules.yaml):
the shipped files are what the script makes, byte for byte; the recipe trains on exactly those tasks; and
each task's rule is hidden from the prompt but the same on every row, so its shots reveal it."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from runner import api
from runner.tools import make_verse_rules as M

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "verse_rules"


def test_the_generator_regenerates_the_shipped_bytes(tmp_path):
    names = M.build(tmp_path)
    shipped = sorted(p.relative_to(DATA) for p in DATA.rglob("*.parquet"))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet")) == shipped
    assert len(shipped) == 3 * len(names) == 3 * 56
    for rel in shipped:
        assert (tmp_path / rel).read_bytes() == (DATA / rel).read_bytes(), rel


def test_the_recipe_holds_out_8_of_56_tasks_it_lists_from_the_shipped_files():
    recipe = api.load(ROOT / "recipes" / "verse_rules.yaml")
    tasks = recipe.meta.tasks
    assert sorted(t.name for t in tasks) == sorted(n for n, _, _ in M.tasks())
    assert recipe.meta.few_shot_eval.held_out_tasks == 8 and len(tasks) - 8 >= 40


def test_each_task_is_one_hidden_rule_the_prompt_does_not_reveal():
    lines_seen: set[str] = set()
    prompts_by_rule: dict[tuple[str, str], set[str]] = {}
    for name, tag, op in M.tasks():
        for part, size in M.SIZES.items():
            rows = pq.read_table(DATA / name / f"{part}.parquet").to_pylist()
            assert len(rows) == size
            for r in rows:
                head, line = r["prompt"].split("\n")
                assert head + "\n" == M.PROMPT and len(line) == 5     # the same instruction for every task
                assert r["response"] == f"{tag}：" + "".join(line[i] for i in M.OPS[op])
                assert json.loads(r["metadata"]) == {"tag": tag, "rule": op}
                assert line not in lines_seen                         # no line in two tasks or two parts
                lines_seen.add(line)
                prompts_by_rule.setdefault((tag, op), set()).add(line)
    # the rules differ between tasks: any two tasks answer a line differently
    answers = {(tag, op): f"{tag}：" + "".join("abcde"[i] for i in M.OPS[op]) for _, tag, op in M.tasks()}
    assert len(set(answers.values())) == 56
