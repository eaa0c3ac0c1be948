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
from ..steps import STEPS
from ..steps.base import Step, StepId, parse_step, recipe_stage


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


def _secret_texts(r: model.Recipe) -> tuple[str, ...]:
    from ..recipe import secrets
    return tuple(secrets.texts(r.document, r.secrets))


def _run_order(r: model.Recipe, steps: list[Step]) -> list[Step]:
    """Inputs first; among the steps ready at once, the earliest stage's (a step of no stage counts as its
    earliest input's), then the earliest source's, then the registry's order of kinds, then the kind's own.
    So each stage's steps run together, and the order is a function of the graph alone."""
    stage_at = {st.name: i + 1 for i, st in enumerate(r.active_stages)}
    source_at = {s: i for i, s in enumerate(r.sources)}
    rank = {kind: i for i, kind in enumerate(STEPS)}
    by_id = {s.id: s for s in steps}
    anchor: dict[StepId, int] = {}

    def anchor_of(sid: StepId) -> int:
        if sid not in anchor:
            own = stage_at.get(recipe_stage(sid))
            anchor[sid] = own if own is not None else min(
                (anchor_of(i) for i in by_id[sid].inputs if i in by_id), default=0)
        return anchor[sid]
    key = {s.id: (anchor_of(s.id), source_at.get(s.id.source, -1), rank[s.id.kind], n) for n, s in enumerate(steps)}
    waiting = {s.id: {i for i in s.inputs if i in by_id} for s in steps}
    order: list[Step] = []
    while waiting:
        ready = [sid for sid, need in waiting.items() if not need]
        if not ready:
            raise AssertionError(f"the step graph has a cycle: {sorted(map(str, waiting))}")
        nxt = min(ready, key=key.__getitem__)
        order.append(by_id[nxt])
        del waiting[nxt]
        for need in waiting.values():
            need.discard(nxt)
    return order


def compile_recipe(r: model.Recipe) -> Graph:
    """Which steps a recipe has (each kind lists its own), in run order; each kind's declare() says what a
    step depends on: the compiler adds nothing to it."""
    steps: list[Step] = []
    notes: dict[StepId, tuple[str, ...]] = {}
    for kind in STEPS.values():
        for sid in kind.steps(r):
            d = kind.declare(r, sid)
            notes[sid] = tuple(d.notes)
            steps.append(Step(sid, d.params, tuple(d.inputs), tuple(d.files), d.runtime))
    ordered = _run_order(r, steps)
    hidden = _secret_texts(r)
    from ..recipe.secrets import folder, scrub   # a note may quote a setting: never one from the environment
    return Graph(folder(r), tuple(ordered), tuple(scrub(n, hidden) for s in ordered for n in notes[s.id]), hidden)
