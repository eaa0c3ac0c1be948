"""tasks: a meta recipe's tasks in the explicit layout, and which of them are held out.

out/tasks/<task>/{support,query,test}.parquet   every task (prompt/response/metadata; runner.recipe.layout)
out/few_shot/<task>_<k>shot_seed<s>.parquet     each held-out task's k-shot sets: per seed one seeded
                                                 order of its support + query rows, the k-shot set its first
                                                 k rows (so the 5-shot set is inside the 10-shot set), never
                                                 a test row
out/plan.json                                   {"train": [task], "held_out": [{task, order: {seed: [i]}}]}
Both folders are published into the run directory, where a user can read them or point an explicit
recipe at them."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .base import Declared, Kind, StepId
from .result import Result

VERSION = 1


@dataclass(frozen=True)
class TasksResult(Result):
    train_tasks: list[str] = field(default_factory=list)
    held_out: list[str] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)   # every task: name, rows per part

    def summary_lines(self, step) -> list[str]:
        held = set(self.held_out)
        lines = ["", f"meta: {len(self.tasks)} tasks, {len(self.tasks) - len(held)} to train on, held out for few-shot "
                     f"evaluation: {', '.join(sorted(held))}", f"  {'task':<20}{'support':>9}{'query':>8}{'test':>7}"]
        for t in self.tasks:
            rows = t["rows"]
            lines.append(f"  {t['name'][:19]:<20}{rows['support']:>9,}{rows['query']:>8,}{rows['test']:>7,}"
                         + ("  held out" if t["name"] in held else ""))
        return lines + ["  the tasks in the prompt/response/metadata layout and the k-shot sets are in the run "
                        "directory: tasks/, few_shot/"]


KIND = Kind("tasks", data=True, result=TasksResult)


def steps(recipe) -> list[StepId]:
    return [StepId("tasks")] if recipe.meta else []


def declare(recipe, step: StepId) -> Declared:
    fs = recipe.meta.few_shot_eval
    return Declared({"held_out_tasks": fs.held_out_tasks, "shots": fs.shots, "seeds": fs.seeds, "seed": recipe.seed},
                    inputs=(StepId("split"),))


def run(ctx) -> dict:
    from ..data.common import rng
    from ..data.io import read_jsonl
    from ..errors import RecipeError
    from ..recipe import layout

    p = ctx.params
    seed = p["seed"]
    split = ctx.input(StepId("split"))
    index = read_jsonl(split / "tasks.jsonl")
    need = max(p["shots"])
    # held out: tasks that have test rows and enough rows for the largest k-shot set, in a seeded
    # order of their names (adding a task does not reshuffle the others)
    fit = [t for t in index if t["rows"].get("test", 0) > 0 and t["rows"]["support"] + t["rows"]["query"] >= need]
    fit.sort(key=lambda t: rng(seed, "held_out", t["name"]).random())
    held = fit[:p["held_out_tasks"]]
    if len(held) < p["held_out_tasks"]:
        raise RecipeError(f"meta.few_shot_eval.held_out_tasks: {p['held_out_tasks']} tasks to hold out, but only "
                          f"{len(fit)} tasks have test rows and at least {need} support + query rows")
    train = [t for t in index if t not in held]
    if not train:
        raise RecipeError("meta.few_shot_eval.held_out_tasks: holding out every task leaves none to train on")
    for t in index:
        for part in ("support", "query", "test"):
            layout.write(ctx.out / "tasks" / t["dir"] / f"{part}.parquet", read_jsonl(split / "tasks" / t["dir"] / f"{part}.jsonl"))
    plan = {"train": [{"name": t["name"], "dir": t["dir"]} for t in train], "held_out": []}
    for t in held:
        pool = read_jsonl(split / "tasks" / t["dir"] / "support.jsonl") + read_jsonl(split / "tasks" / t["dir"] / "query.jsonl")
        orders = {}
        for s in range(p["seeds"]):
            order = rng(seed, "few_shot", t["name"], str(s)).sample(range(len(pool)), len(pool))
            orders[str(s)] = order
            for k in p["shots"]:
                layout.write(ctx.out / "few_shot" / f"{t['dir']}_{k}shot_seed{s}.parquet", [pool[i] for i in order[:k]])
        plan["held_out"].append({"name": t["name"], "dir": t["dir"], "order": orders})
    (ctx.out / "plan.json").write_text(json.dumps(plan, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    ctx.log(f"{len(train)} training tasks; held out for few-shot evaluation: " + ", ".join(t["name"] for t in held))
    return {"train_tasks": [t["name"] for t in train], "held_out": [t["name"] for t in held],
            "tasks": [{"name": t["name"], "rows": t["rows"]} for t in index]}


def publish(step, artifact, run_dir, result) -> None:
    from ..paths import publish_tree
    for folder in ("tasks", "few_shot"):   # only what we wrote there is replaced: a user's notes stay
        publish_tree(run_dir, folder, artifact / folder)
