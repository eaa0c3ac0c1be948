"""The run report: report.json (the machine interface; keys documented in README and kept stable)
and report.md with the data funnel, achieved vs requested mix, loss curves and eval tables."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..paths import under
from ..recipe.model import Recipe
from ..recipe.secrets import count, share
from ..steps.base import BEFORE, StepId
from .compile import Graph

REPORT_VERSION = 1


def _step_entry(r) -> dict:
    s = r.stats or {}
    return {"name": r.name, "kind": r.kind, "stage": r.stage, "status": r.status, "fingerprint": r.fingerprint,
            "seconds": round(r.seconds, 3), "rows_in": s.get("rows_in"), "rows_out": s.get("rows_out"),
            "dropped": s.get("dropped", {}), "by_source": s.get("by_source", {})}


def build_report(recipe: Recipe, graph: Graph, records: list, run_dir: Path) -> dict:
    by = {r.id: r for r in records}
    stages = []
    for st in recipe.stages:
        at = {kind: StepId(kind, stage=st.name) for kind in ("mix", "render", "train", "evaluate")}
        if st.skip or at["mix"] not in graph:
            continue
        mix = (by[at["mix"]].stats if at["mix"] in by else {}) or {}
        render = (by[at["render"]].stats if at["render"] in by else {}) or {}
        train = by.get(at["train"])
        ev = by.get(at["evaluate"])
        mreport = mix.get("mix", {})
        stages.append({
            "name": st.name,
            "mix": {"requested": mreport.get("requested", dict(st.mix or {})), "achieved": mreport.get("achieved", {})},
            "rows": {"train": render.get("rows", {}).get("train", mix.get("rows_out")),
                     "eval": render.get("rows", {}).get("eval")},
            "tokens": render.get("tokens"),
            "metrics": {"train": (train.stats if train else {}).get("metrics", {}),
                        "eval": (ev.stats if ev else {}).get("metrics", {})},
            "checkpoint": str(run_dir / st.name / "final") if train else None,
            "data_fingerprint": by[at["render"]].fingerprint if at["render"] in by else None,
        })
    quarantine = {}
    for r in records:
        if r.kind == "load" and r.artifact:
            src = r.id.source
            n = (r.stats or {}).get("quarantined", (r.stats or {}).get("dropped", {}).get("quarantine", 0))
            quarantine[src] = {"count": n, "file": str(Path(r.artifact) / "quarantine.jsonl")}
            dups = (r.stats or {}).get("duplicate_ids") or {}
            if dups.get("rows"):   # kept, but worth knowing: often the same row twice in the data
                quarantine[src]["duplicate_ids"] = dups
    at_start = StepId("evaluate", stage=BEFORE)
    before = (by[at_start].stats or {}).get("metrics") if at_start in by else None
    forgetting = {"before": before["loss"]} if before else {}
    forgetting.update({s["name"]: s["metrics"]["eval"].get("loss", {}) for s in stages if s["metrics"]["eval"]})
    health = {"before": _health(before)} if before else {}
    health.update({s["name"]: _health(s["metrics"]["eval"]) for s in stages if s["metrics"]["eval"]})
    # hub sources: the commit each one read (what makes the run reproducible)
    datasets = {r.id.source: r.stats["origin"] for r in records
                if r.kind == "load" and isinstance(r.stats, dict) and r.stats.get("origin")}
    # `{{name}}` placeholders in the data: filled from sources.<src>.placeholders, or left and reported
    placeholders = {r.id.source: r.stats["placeholders"] for r in records
                    if r.kind == "load" and isinstance(r.stats, dict) and r.stats.get("placeholders")}
    few = (by[StepId("few_shot")].stats or {}) if StepId("few_shot") in by else {}
    meta = {role: (by[step].stats or {}).get("metrics", {}) for role in ("meta", "control")
            if (step := StepId("meta_train", stage=role)) in by}
    return {"report_version": REPORT_VERSION, "recipe": recipe.name, "recipe_file": str(recipe.file),
            "steps": [_step_entry(r) for r in records], "stages": stages, "before": before, "quarantine": quarantine,
            "datasets": datasets, "placeholders": placeholders, "forgetting": forgetting,
            "generation_health": health, "meta_training": meta,
            "few_shot": few.get("few_shot", []), "few_shot_summary": few.get("few_shot_summary"),
            "notes": list(graph.notes)}


def _health(metrics: dict) -> dict:
    return {k: metrics.get(k) for k in ("stop_rate", "role_leak_rate", "generations")}


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else count(v)


def write_markdown(report: dict, run_dir: Path) -> None:
    lines = [f"# Run report: {report['recipe']}", "", "## Data funnel", "",
             "| step | status | rows in | rows out | dropped | seconds |", "|---|---|---:|---:|---|---:|"]
    for s in report["steps"]:
        dropped = ", ".join(f"{k}: {count(v)}" for k, v in sorted(s["dropped"].items())) if s["dropped"] else ""
        lines.append(f"| {s['name']} | {s['status']} | {_fmt(s['rows_in'])} | {_fmt(s['rows_out'])} | {dropped} | {s['seconds']:.2f} |")
    if report.get("datasets"):
        lines += ["", "## Hub datasets", "", "| source | dataset | config | splits | revision | commit |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {k} | {d['dataset']} | {d['config'] or 'default'} | {', '.join(d['splits'])} | "
                  f"{d['revision'] or 'main (not pinned)'} | {d['sha']} |" for k, d in report["datasets"].items()]
    unresolved = {k: v for k, v in (report.get("placeholders") or {}).items() if v.get("unresolved")}
    if unresolved:
        from ..data.placeholders import describe
        lines += ["", "## Unresolved placeholders", ""] + [f"- {describe(k, v)}" for k, v in unresolved.items()]
    if report["quarantine"]:
        lines += ["", "## Quarantine", "", "| source | rows | file |", "|---|---:|---|"]
        lines += [f"| {k} | {count(v['count'])} | {v['file']} |" for k, v in report["quarantine"].items()]
        dups = {k: v["duplicate_ids"] for k, v in report["quarantine"].items() if v.get("duplicate_ids")}
        if dups:
            lines += [""] + [f"- {k}: {count(d['rows'])} rows share an id with an earlier row ({count(d['ids'])} ids, e.g. "
                             f"{', '.join(map(str, d['examples'][:3]))}); kept, and kept on one side of the split"
                             for k, d in dups.items()]
    if report.get("before"):
        lines += ["", "## Before training (the starting model)"]
        lines += _samples(report["before"].get("samples") or [])
    for st in report["stages"]:
        lines += ["", f"## Stage {st['name']}", "", "| source | requested | achieved |", "|---|---:|---:|"]
        for src in sorted(set(st["mix"]["requested"]) | set(st["mix"]["achieved"])):
            req, ach = st["mix"]["requested"].get(src), st["mix"]["achieved"].get(src)
            lines.append(f"| {src} | {share(req)} | {share(ach)} |")
        lines += ["", f"rows: train {_fmt(st['rows']['train'])}, eval {json.dumps(st['rows']['eval'], ensure_ascii=False)}"]
        tm = st["metrics"]["train"]
        if tm:
            lines += ["", "train: " + ", ".join(f"{k} {_fmt(v)}" for k, v in tm.items() if not isinstance(v, (dict, list)))]
        png = run_dir / f"loss_{st['name']}.png"
        if png.exists():
            lines += ["", f"![loss]({png.name})"]
        lines += _samples(st["metrics"]["eval"].get("samples") or [])
    if report["forgetting"]:
        srcs = sorted({s for row in report["forgetting"].values() for s in row})
        lines += ["", "## Forgetting (eval loss by stage and source)", "", "| stage | " + " | ".join(srcs) + " |",
                  "|---|" + "---:|" * len(srcs)]
        for stage, row in report["forgetting"].items():
            lines.append(f"| {stage} | " + " | ".join(_fmt(row.get(s)) for s in srcs) + " |")
    if report.get("generation_health"):
        lines += ["", "## Generation health", "",
                  "stop_rate: share of generations that ended with the end-of-turn/EOS token; role_leak_rate: share "
                  "that wrote a role marker or special token. Over the recipe's prompts plus a few eval rows' prompts.",
                  "", "| stage | stop_rate | role_leak_rate | generations |", "|---|---:|---:|---:|"]
        for stage, h in report["generation_health"].items():
            lines.append(f"| {stage} | {share(h['stop_rate'])} | {share(h['role_leak_rate'])} | {_fmt(h['generations'])} |")
    for name, tm in (report.get("meta_training") or {}).items():
        lines += ["", f"## Meta-recipe training: {name}", "",
                  ", ".join(f"{k} {_fmt(v)}" for k, v in tm.items() if not isinstance(v, (dict, list)))]
        png = run_dir / f"loss_{name}.png"
        if png.exists():
            lines += ["", f"![loss]({png.name})"]
    summary = report.get("few_shot_summary")
    if summary:
        lines += ["", "## Few-shot adaptation on held-out tasks", "",
                  "Test loss on each held-out task's whole test file, before and after adapting with k shots "
                  "(FOMAML's inner loop; mean ± sd over tasks x seeds; gain = before - after).", "",
                  ]
        acc = any("accuracy" in t for t in summary["table"])
        head = "| model | shots | n | loss before | loss after | gain |" + (" accuracy before | accuracy after |" if acc else "")
        lines += [head, "|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if acc else "")]
        for t in sorted(summary["table"], key=lambda t: (t["shots"], t["loss_after"])):
            lines.append(f"| {t['model']} | {t['shots']} | {t['n']} | {t['loss_before']:.4f} | "
                         f"{t['loss_after']:.4f} ± {t['loss_after_sd']:.4f} | {t['gain']:.4f} ± {t['gain_sd']:.4f} |"
                         + ((f" {t['accuracy_before']:.1%} | {t['accuracy']:.1%} ± {t['accuracy_sd']:.1%} |"
                             if "accuracy" in t else " — | — |") if acc else ""))
        lines += [""] + [f"**{v}.**" for v in summary["verdict"]]
        if summary.get("by_task"):
            lines += ["", "Per held-out task (mean ± sd over seeds):", "",
                      "| task | shots | model | loss before | loss after |", "|---|---:|---|---:|---:|"]
            lines += [f"| {t['task']} | {t['shots']} | {t['model']} | {t['loss_before']:.4f} | "
                      f"{t['loss_after']:.4f} ± {t['loss_after_sd']:.4f} |" for t in summary["by_task"]]
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    under(run_dir, "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _samples(samples: list[dict]) -> list[str]:
    lines: list[str] = []
    for smp in samples[:3]:
        tail = "" if smp.get("stopped", True) else " *(no end-of-turn: cut at max_new_tokens)*"
        lines += ["", f"> **{smp.get('prompt', '')}**", ">",
                  "> " + str(smp.get("output", "")).replace("\n", "\n> ") + tail]
    return lines


def copy_quarantine(report: dict, run_dir: Path) -> None:
    """runs/<recipe>/quarantine/ holds this run's bad rows only: a file left by an earlier run for a source
    that is clean now (or gone) is removed, so the folder and report.json always agree."""
    qdir = under(run_dir, "quarantine")
    keep = set()
    for src, q in report["quarantine"].items():
        if q["count"] and Path(q["file"]).is_file():
            qdir.mkdir(exist_ok=True)
            target = under(qdir, f"{src}.jsonl")
            shutil.copyfile(q["file"], target)
            q["file"] = str(target)
            keep.add(target.name)
    if qdir.is_dir():
        for old in qdir.glob("*.jsonl"):
            if old.name not in keep:
                old.unlink()
