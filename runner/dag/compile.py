"""Recipe -> DAG of steps. Pure: no I/O, no heavy imports, the same recipe always gives the same
graph, so the plan and the diff are functions of the recipe alone (golden-tested).

    load.<src> -> filter.<src> -> dedup -> split -> mix.<stage> -> render.<stage> -> train.<stage>
                                                                                   -> eval.<stage>
                                                                   last train  ->  export
Sources are split into train/eval *before* mixing, so every stage is evaluated on the same held-out
rows of every source (the forgetting table) and no stage trains on another stage's eval rows."""
from __future__ import annotations

from dataclasses import dataclass

from ..recipe import model
from ..steps import STEPS, dedup, filter
from ..steps.base import Step, StepId, parse_step


@dataclass(frozen=True)
class Graph:
    recipe: str
    steps: tuple[Step, ...]        # topological order
    notes: tuple[str, ...] = ()    # things the user should know about the plan
    secrets: tuple[str, ...] = ()  # texts of values from the environment: masked wherever a step's params go

    def __getitem__(self, key: StepId | str) -> Step:
        step = key if isinstance(key, StepId) else parse_step(key, self.ids)
        for s in self.steps:
            if s.id == step:
                return s
        raise KeyError(str(key))

    def __contains__(self, key: StepId | str) -> bool:
        step = key if isinstance(key, StepId) else parse_step(key, self.ids)
        return any(s.id == step for s in self.steps)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.steps]

    @property
    def ids(self) -> list[StepId]:
        return [s.id for s in self.steps]

    def descendants(self, step: StepId) -> set[StepId]:
        out = {step}
        for s in self.steps:
            if out & set(s.inputs):
                out.add(s.id)
        return out

    def ancestors(self, step: StepId) -> set[StepId]:
        out, todo = set(), [step]
        while todo:
            for i in self[todo.pop()].inputs:
                if i not in out:
                    out.add(i)
                    todo.append(i)
        return out


def _step(r: model.Recipe, step: StepId, notes: list[str]) -> Step:
    """One step as its kind declares it: the compiler adds nothing to what a step depends on."""
    d = STEPS[step.kind].declare(r, step)
    notes += d.notes
    return Step(step, d.params, tuple(d.inputs), tuple(d.files), d.runtime)


def _secret_texts(r: model.Recipe) -> tuple[str, ...]:
    from ..recipe import secrets
    return tuple(secrets.texts(r.document, r.secrets))


def compile_recipe(r: model.Recipe) -> Graph:
    """Which steps a recipe has, in run order; each step kind's declare() says what the step depends on."""
    steps: list[Step] = []
    notes: list[str] = []

    for src in r.sources:
        steps.append(_step(r, StepId("load", source=src), notes))
        if filter.wanted(r, src):
            steps.append(_step(r, StepId("filter", source=src), notes))
    if dedup.wanted(r):
        steps.append(_step(r, StepId("dedup"), notes))
    steps.append(_step(r, StepId("split"), notes))

    if r.meta:
        # split -> tasks (layout + held-out choice) -> render.tasks (every task's rows rendered and checked)
        # -> train.meta (FOMAML), train.control (multi-task SFT) -> eval.few_shot (all three models adapted
        # to the held-out tasks)
        steps.append(_step(r, StepId("tasks"), notes))
        steps.append(_step(r, StepId("render_tasks"), notes))
        steps.append(_step(r, StepId("meta_train", stage="meta"), notes))
        if r.meta.few_shot_eval.sft_control:
            steps.append(_step(r, StepId("meta_train", stage="control"), notes))
        steps.append(_step(r, StepId("few_shot"), notes))
        return Graph(r.name, tuple(steps), tuple(notes), _secret_texts(r))

    active = [st for st in r.stages if not st.skip]
    for st in active:
        steps.append(_step(r, StepId("mix", stage=st.name), notes))
        steps.append(_step(r, StepId("render", stage=st.name), notes))
        if st is active[0] and r.evaluate.before:
            # the starting model on the same eval rows: the row "before" of the forgetting table
            steps.append(_step(r, StepId("evaluate", stage="before"), notes))
        steps.append(_step(r, StepId("train", stage=st.name), notes))
        if r.evaluate.every_stage or st is active[-1]:
            steps.append(_step(r, StepId("evaluate", stage=st.name), notes))
    if active:
        steps.append(_step(r, StepId("export"), notes))
    return Graph(r.name, tuple(steps), tuple(notes), _secret_texts(r))
