"""evaluate.gates, checked by the engine after every step against the run report as it stands: a gate
whose stage has been evaluated passes or fails, one whose stage has not is pending. A breach stops the
run (GateError, exit 3) after the step that measured it was committed, so its artifacts stay cached and
a rerun with a relaxed gate reruns nothing (no step declares a gate). The metric names are
runner/recipe/validate/gates.py's; the values are the report's (the evaluation steps' results)."""
from __future__ import annotations

import math
from typing import Any

from ..errors import RecipeError
from ..recipe.model import Gate, Recipe
from ..recipe.validate.gates import FEW_SHOT, RATES, split_metric, trained_sources
from ..steps.result import number, stage_entry

PASS, FAIL, PENDING = "pass", "fail", "pending"


class GateError(RecipeError):
    """A gate was breached: the run stops, with a table of every gate. Not a mistake in the recipe, so
    it exits 3, not 2 (a CI job can tell "the model got worse" from "the recipe is wrong")."""
    exit_code = 3


def check(recipe: Recipe, report: dict) -> dict | None:
    """report.json's "gates": {status (pass | fail | pending), passed, failed, pending, checks: [{metric,
    stage, min, max, value, status}]}; None for a recipe without gates."""
    if not recipe.evaluate.gates:
        return None
    checks = [c for gate in recipe.evaluate.gates for c in _checks(recipe, gate, report)]
    n = {s: sum(1 for c in checks if c["status"] == s) for s in (PASS, FAIL, PENDING)}
    status = FAIL if n[FAIL] else PENDING if n[PENDING] else PASS
    return {"status": status, "passed": n[PASS], "failed": n[FAIL], "pending": n[PENDING], "checks": checks}


def _evaluated(recipe: Recipe) -> list[str]:
    active = [s.name for s in recipe.active_stages]
    return active if recipe.evaluate.every_stage else active[-1:]


def _trains(recipe: Recipe) -> dict[str, set[str]]:
    return {s.name: trained_sources(s.mix, recipe.groups, recipe.sources) for s in recipe.active_stages}


def _eval(report: dict, stage: str) -> dict | None:
    """A stage's evaluation metrics, None while it has not been evaluated."""
    entry = stage_entry(report, stage)
    return ((entry or {}).get("metrics") or {}).get("eval") or None


def _checks(recipe: Recipe, gate: Gate, report: dict) -> list[dict]:
    name, target = split_metric(gate.metric)
    if name == FEW_SHOT:
        return [_few_shot(gate, target or "fomaml", report)]
    stages = [gate.stage] if gate.stage else _evaluated(recipe)
    if name in RATES:
        return [_row(gate, gate.metric, st, (_eval(report, st) or {}).get(name), _eval(report, st) is None)
                for st in stages]
    out = []
    for src in [target] if target else list(recipe.sources):
        for st in stages:
            value, applies = _source_value(recipe, name, src, st, report, explicit=bool(gate.stage))
            if not applies:
                continue
            measured = _eval(report, st)
            if value is None and measured is not None and target is None:
                continue    # a source without eval rows, under a gate on every source
            out.append(_row(gate, f"{name}.{src}", st, value, measured is None))
    return out


def _source_value(recipe: Recipe, name: str, src: str, stage: str, report: dict,
                  explicit: bool) -> tuple[float | None, bool]:
    """(the metric for `src` after `stage`, whether the gate applies there). A source's loss counts from
    the first stage that trains it; forgetting is its rise since the last earlier stage that trained it,
    at a stage that does not train it itself."""
    trains, order = _trains(recipe), [s.name for s in recipe.active_stages]
    before = order[:order.index(stage)] if stage in order else []
    m = _eval(report, stage) or {}
    if name == "forgetting":
        ref = next((s for s in reversed(before) if src in trains[s]), None)
        if ref is None or (src in trains.get(stage, ()) and not explicit):
            return None, explicit
        now, then = (m.get("loss") or {}).get(src), ((_eval(report, ref) or {}).get("loss") or {}).get(src)
        return (now - then if now is not None and then is not None else None), True
    if not explicit and not any(src in trains[s] for s in before + [stage]):
        return None, False          # not trained yet: its loss says nothing about the recipe
    return (m.get("loss" if name == "eval_loss" else name) or {}).get(src), True


def _few_shot(gate: Gate, model: str, report: dict) -> dict:
    summary = report.get("few_shot_summary")
    gains = [t["gain"] for t in (summary or {}).get("table", []) if t["model"] == model]
    return _row(gate, f"{FEW_SHOT}.{model}", None, min(gains) if gains else None, summary is None)


def _row(gate: Gate, metric: str, stage: str | None, value: Any, pending: bool) -> dict:
    if pending:
        status = PENDING
    elif not isinstance(value, (int, float)) or math.isnan(value):
        status = FAIL       # evaluated, and nothing to compare: a gate never passes unmeasured
    else:
        low = gate.min_ is not None and value < gate.min_
        high = gate.max_ is not None and value > gate.max_
        status = FAIL if low or high else PASS
    return {"metric": metric, "stage": stage, "min": gate.min_, "max": gate.max_,
            "value": None if pending else value, "status": status}


def bound(c: dict) -> str:
    parts = ([f">= {number(float(c['min']))}"] if c["min"] is not None else []) + \
            ([f"<= {number(float(c['max']))}"] if c["max"] is not None else [])
    return ", ".join(parts)


def table(gates: dict) -> list[str]:
    """Every gate as text columns (the failure message) and as report.md's table."""
    rows = [("metric", "stage", "value", "bound", "status")]
    rows += [(c["metric"], c["stage"] or "", "no value" if c["value"] is None and c["status"] == FAIL
              else number(c["value"]), bound(c), c["status"].upper() if c["status"] == FAIL else c["status"])
             for c in gates["checks"]]
    widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
    return ["  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]


def markdown(report: dict) -> list[str]:
    g = report.get("gates")
    if not g:
        return []
    lines = ["", f"## Gates: {g['status']}", "",
             f"{g['passed']} passed, {g['failed']} failed, {g['pending']} pending (not evaluated in this run).", "",
             "| metric | stage | value | bound | status |", "|---|---|---:|---|---|"]
    for c in g["checks"]:
        value = "no value" if c["value"] is None and c["status"] == FAIL else number(c["value"])
        status = "**FAIL**" if c["status"] == FAIL else c["status"]
        lines.append(f"| {c['metric']} | {c['stage'] or ''} | {value} | {bound(c)} | {status} |")
    return lines


def failure(gates: dict, step: str, run_dir) -> GateError:
    failed = [c for c in gates["checks"] if c["status"] == FAIL]
    head = (f"{len(failed)} of {len(gates['checks'])} gate checks failed after {step} (evaluate.gates); the run "
            f"stopped there, its steps stay cached and the report is in {run_dir}. Every gate:")
    return GateError("\n".join([head, *("  " + line for line in table(gates))]))
