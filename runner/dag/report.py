"""The run report: report.json (the machine interface; keys documented in README and kept stable) and
report.md. Built from the steps' typed results, each of which says what it adds (its result type's
contribute/defaults and markdown methods, runner/steps/result.py): this module knows no step kind."""
from __future__ import annotations

import json
from pathlib import Path

from ..paths import publish_files
from ..recipe.model import Recipe
from ..steps import STEPS
from ..steps.base import kind_of, recipe_stage
from ..steps.result import count, number
from .compile import Graph

REPORT_VERSION = 1


def _step_entry(r) -> dict:
    res = r.result
    return {"name": r.name, "kind": r.kind, "stage": r.stage, "status": r.status, "fingerprint": r.fingerprint,
            "seconds": round(r.seconds, 3), "rows_in": res.rows_in, "rows_out": res.rows_out,
            "dropped": dict(res.dropped), "by_source": dict(res.by_source)}


def build_report(recipe: Recipe, graph: Graph, records: list, run_dir: Path) -> dict:
    by = {r.id: r for r in records}
    stages = {recipe_stage(s.id) for s in graph.steps} - {None}
    report: dict = {"report_version": REPORT_VERSION, "recipe": recipe.name, "recipe_file": str(recipe.file),
                    "steps": [_step_entry(r) for r in records],
                    "stages": [{"name": st.name} for st in recipe.active_stages if st.name in stages]}
    for mod in STEPS.values():
        report.update(mod.KIND.result.defaults())
    # every step of the graph adds its part; one that did not run (a dry run's training) its empty result's,
    # so a report always has the same keys
    for step in graph.steps:
        rec = by.get(step.id)
        result = rec.result if rec is not None else kind_of(step.id).result()
        result.contribute(step, rec if rec is not None and rec.status != "failed" else None, report, run_dir)
    from .gates import check
    report["gates"] = check(recipe, report)     # evaluate.gates: pass/fail/pending per check, None without gates
    report["notes"] = list(graph.notes)
    return report


def finish(report: dict, run_dir: Path) -> None:
    """What a result type does in the run directory once the whole report is known (its files there)."""
    for res in _unique([mod.KIND.result for mod in STEPS.values()]):
        res.finish(report, run_dir)


def write_markdown(report: dict, run_dir: Path) -> None:
    results = [mod.KIND.result for mod in STEPS.values()]
    lines = [f"# Run report: {report['recipe']}", "", "## Data funnel", "",
             "| step | status | rows in | rows out | dropped | seconds |", "|---|---|---:|---:|---|---:|"]
    for s in report["steps"]:
        dropped = ", ".join(f"{k}: {count(v)}" for k, v in sorted(s["dropped"].items())) if s["dropped"] else ""
        lines.append(f"| {s['name']} | {s['status']} | {number(s['rows_in'])} | {number(s['rows_out'])} | {dropped} "
                     f"| {s['seconds']:.2f} |")
    for res in _unique(results):
        lines += res.markdown_head(report, run_dir)
    for entry in report["stages"]:
        lines += ["", f"## Stage {entry['name']}"]
        for res in _unique(results):
            lines += res.stage_markdown(entry, run_dir)
    for res in _unique(results):
        lines += res.markdown_tail(report, run_dir)
    from .gates import markdown
    lines += markdown(report)
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    publish_files(run_dir, "report.md", {"report.md": ("\n".join(lines) + "\n").encode("utf-8")})


def _unique(types: list) -> list:
    """Result types in registry order, each once (two kinds may share one)."""
    return list(dict.fromkeys(types))


def write_json(report: dict, run_dir: Path) -> None:
    text = json.dumps(report, ensure_ascii=False, indent=2) + "\n"
    publish_files(run_dir, "report.json", {"report.json": text.encode("utf-8")})
