"""The only registry of step kinds: kind -> module with VERSION, declare(recipe, step_id) and run(ctx)
(runner/steps/base.py says what each is). Step modules import heavy libraries inside run(), so importing
this registry (compile, plan, diff) stays light."""
from . import (dedup, evaluate, export, few_shot, filter, load, meta_tasks, meta_train, mix, render, render_tasks,
               split, train)

STEPS = {
    "load": load,
    "filter": filter,
    "dedup": dedup,
    "split": split,
    "mix": mix,
    "render": render,
    "train": train,
    "evaluate": evaluate,
    "export": export,
    "tasks": meta_tasks,
    "render_tasks": render_tasks,
    "meta_train": meta_train,
    "few_shot": few_shot,
}


def versions() -> dict[str, int]:
    return {kind: mod.VERSION for kind, mod in STEPS.items()}
