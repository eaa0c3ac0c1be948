"""`evaluate.gates`: each gate names a metric this recipe produces, has a bound, and names an evaluated
stage if it names one. The metric names live here (runner/dag/gates.py reads their values from the run
report), so `validate` and the run agree on them."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from ..model import IMPLICIT_STAGE
from .problems import Problems, did_you_mean, dotted

PER_SOURCE = ("eval_loss", "perplexity", "forgetting")    # <metric> (every source) or <metric>.<source>
RATES = ("stop_rate", "role_leak_rate")
FEW_SHOT = "few_shot_gain"                                 # few_shot_gain (fomaml's) or few_shot_gain.<model>
FEW_SHOT_MODELS = ("fomaml", "sft_control", "start")
METRICS = PER_SOURCE + RATES + (FEW_SHOT,)


def split_metric(metric: str) -> tuple[str, str | None]:
    """"eval_loss.tang" -> ("eval_loss", "tang"); "stop_rate" -> ("stop_rate", None)."""
    name, dot, target = metric.partition(".")
    return name, (target if dot else None)


def trained_sources(mix: Mapping[str, float] | None, groups: Mapping[str, Iterable[str]],
                    sources: Iterable[str]) -> set[str]:
    """The sources a stage's mix trains on (a key may be a group; no mix: every source)."""
    if mix is None:
        return set(sources)
    return {s for key, share in mix.items() if share > 0 for s in groups.get(key, (key,))}


def _active(d: dict) -> list[tuple[str, Mapping[str, float] | None]]:
    """(name, mix) of every stage that runs, in order."""
    if d["stages"]:
        return [(n, st["mix"]) for n, st in d["stages"].items() if not st["skip"]]
    return [(IMPLICIT_STAGE, d["mix"])]


def check_gates(d: dict, out: Problems) -> None:
    for i, gate in enumerate(d["evaluate"]["gates"]):
        p = ("evaluate", "gates", i)
        if gate["min"] is None and gate["max"] is None:
            out.add(p, f"{dotted(p)}: a gate needs a bound: `min`, `max` or both")
        elif gate["min"] is not None and gate["max"] is not None and gate["min"] > gate["max"]:
            out.add(p + ("min",), f"{dotted(p)}: min {gate['min']} is above max {gate['max']}: no value can pass")
        why = _not_produced(d, gate["metric"])
        if why:
            out.add(p + ("metric",), f"{dotted(p + ('metric',))}: {why}")
        elif gate["stage"] is not None:
            _check_stage(d, gate, p + ("stage",), out)


def _not_produced(d: dict, metric: str) -> str | None:
    """Why this recipe produces no value for `metric` (None: it does)."""
    name, target = split_metric(metric)
    if name not in METRICS:
        return f"no metric '{name}'{did_you_mean(name, METRICS)}; a gate checks one of: {', '.join(METRICS)}"
    if d["meta"] is not None:
        if name != FEW_SHOT:
            return (f"a meta recipe is evaluated by few-shot adaptation (eval.few_shot), so '{name}' is not "
                    f"produced; gate `{FEW_SHOT}` instead")
        if target is not None and target not in FEW_SHOT_MODELS:
            return f"no model '{target}' in the few-shot table{did_you_mean(target, FEW_SHOT_MODELS)}"
        if target == "sft_control" and not d["meta"]["few_shot_eval"]["sft_control"]:
            return "meta.few_shot_eval.sft_control is false, so there is no sft_control row to gate; turn it on"
        return None
    if name == FEW_SHOT:
        return f"'{FEW_SHOT}' is produced by a meta recipe's eval.few_shot only (this recipe has no `meta:`)"
    no_eval = d["split"]["eval"] == 0
    if name in RATES:
        g = d["evaluate"]["generate"]
        if not g["prompts"] and (g["eval_prompts"] == 0 or no_eval):
            return (f"'{name}' is measured on evaluate.generate.prompts and eval rows' prompts, and this recipe "
                    "generates none; add evaluate.generate.prompts")
        return None
    if no_eval:
        return f"'{name}' is measured on eval rows and split.eval is 0; hold out some rows (split.eval)"
    if target is not None and target not in d["sources"]:
        return f"no source '{target}'{did_you_mean(target, d['sources'])}"
    if name == "forgetting":
        return _no_forgetting(d, target)
    return None


def _no_forgetting(d: dict, target: str | None) -> str | None:
    if not d["evaluate"]["every_stage"]:
        return "forgetting compares evaluations of successive stages, and evaluate.every_stage is false"
    earlier = set().union(*(trained_sources(mix, d["groups"], d["sources"]) for _, mix in _active(d)[:-1]))
    if target is None and not earlier:
        return "no stage before the last trains any source, so no later stage can forget one"
    if target is not None and target not in earlier:
        return f"no stage before the last trains source '{target}', so no later stage can forget it"
    return None


def _check_stage(d: dict, gate: dict, p: tuple, out: Problems) -> None:
    if d["meta"] is not None:
        out.add(p, f"{dotted(p)}: a meta recipe's few-shot evaluation belongs to no stage; remove `stage`")
        return
    names = [n for n, _ in _active(d)]
    stage = gate["stage"]
    if stage not in names:
        out.add(p, f"{dotted(p)}: no stage '{stage}' runs{did_you_mean(stage, names)}")
    elif not d["evaluate"]["every_stage"] and stage != names[-1]:
        out.add(p, f"{dotted(p)}: stage '{stage}' is not evaluated (evaluate.every_stage is false: only the last "
                   f"stage, '{names[-1]}', is)")

