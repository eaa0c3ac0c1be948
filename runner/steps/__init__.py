"""The only registry of step kinds: kind -> module (runner/steps/base.py says what a step kind module holds).
Step modules import heavy libraries inside run(), so importing this registry (compile, plan, diff) stays
light. The order is the tie-break of the run order among steps that are ready at the same time (and the
order of the report's sections): a new kind is one module and one line here."""
from . import (base, dedup, evaluate, export, few_shot, filter, load, meta_tasks, meta_train, mix, render, render_tasks,
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
base.known(STEPS)


def versions() -> dict[str, int]:
    return {kind: mod.VERSION for kind, mod in STEPS.items()}
