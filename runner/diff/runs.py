"""`recipe runs` and `recipe compare`: the run index (runner/dag/runindex.py) listed, and two runs compared:
the settings diff of their resolved recipes and the metric deltas (runner/diff/metrics.py). A side is a run
id (or a prefix of one) or a recipe file, whose latest run with exactly its fingerprints is taken."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..dag import runindex
from ..errors import RecipeError
from ..recipe.compare import Change, by_section, change_text, compare
from .impact import load_side
from .metrics import Metrics, compare_runs
from .metrics import to_json as metrics_json
from .output import _md, _md_side, metrics_markdown, metrics_text


def caches(cache_dir: str | None, where: Path | None = None) -> list[Path]:
    """Where run ids are looked up: --cache-dir, else RECIPE_CACHE_DIR, else the caches of the recipes in
    `where` (default: the current folder) and in the folders right under it (recipes/.recipe/cache)."""
    if cache_dir:
        return [Path(cache_dir).resolve()]
    if os.environ.get("RECIPE_CACHE_DIR"):
        return [Path(os.environ["RECIPE_CACHE_DIR"]).resolve()]
    where = where or Path.cwd()
    found = [where / ".recipe" / "cache"] + sorted(where.glob("*/.recipe/cache"))
    return [p for p in found if p.is_dir()]


def _is_recipe_ref(ref: str) -> bool:
    return ref.endswith((".yaml", ".yml")) or Path(ref).is_file()


@dataclass(frozen=True)
class Comparison:
    title: str
    changes: list[Change]
    metrics: Metrics
    notes: tuple[str, ...] = ()


def _side(ref: str, overrides: tuple[str, ...], cache_dir: str | None) -> tuple[str, dict | None, dict | None]:
    """(label, resolved document, run line or None) of a run id or a recipe file."""
    if _is_recipe_ref(ref):
        label = " ".join([ref] + [f"--set {o}" for o in overrides])
        side = load_side(Path(ref), label, overrides, cache_dir)
        if side.recipe is None:
            raise RecipeError(f"{ref} does not validate: {side.problem}")
        fps = {name: fp.value for name, fp in side.fps.items()}
        return label, side.doc, runindex.latest(runindex.read(side.cache.root), fps)
    if overrides:
        raise RecipeError(f"{ref}: --set/--set-a/--set-b change a recipe, not a run that has happened; "
                          "name the recipe file instead")
    where = caches(cache_dir)
    for root in where:
        line = runindex.find(runindex.read(root), ref)
        if line is not None:
            return f"run {line['id']}", line.get("document"), line
    looked = ", ".join(str(p) for p in where) or "no cache found here (give --cache-dir)"
    raise RecipeError(f"{ref}: neither a recipe file nor a run id in {looked}; `recipe runs` lists the runs")


def compare_refs(a: str, b: str, set_a: tuple[str, ...] = (), set_b: tuple[str, ...] = (),
                 cache_dir: str | None = None) -> Comparison:
    la, da, ra = _side(a, set_a, cache_dir)
    lb, db, rb = _side(b, set_b, cache_dir)
    changes = by_section(compare(da, db)) if da is not None and db is not None else []
    return Comparison(f"{la} → {lb}", changes, compare_runs(ra, rb))


def compare_git(rev: str, paths: list[str], common: tuple[str, ...], set_a: tuple[str, ...], set_b: tuple[str, ...],
                cache_dir: str | None) -> list[Comparison]:
    from .git import diff_git
    return [Comparison(d.title, d.changes, d.metrics or compare_runs(None, None), tuple(d.problems))
            for d in diff_git(rev, paths, common, cache_dir, set_a, set_b)]


def render_compare(items: list[Comparison], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([{"title": c.title, "changes": [{"section": ch.section, "path": ch.path, "op": ch.op,
                                                            "before": ch.before, "after": ch.after} for ch in c.changes],
                            "metrics": metrics_json(c.metrics), "notes": list(c.notes)} for c in items],
                          ensure_ascii=False, indent=2, default=str) + "\n"
    out: list[str] = []
    for c in items:
        if fmt == "markdown":
            out += [f"### {_md(c.title)}", ""]
            if c.changes:
                out += ["| section | setting | before | after |", "|---|---|---|---|"]
                out += [f"| {ch.section} | {_md(ch.path)} | {_md_side(ch, 'before')} | {_md_side(ch, 'after')} |"
                        for ch in c.changes] + [""]
            out += metrics_markdown(c.metrics) + [f"> {_md(n)}" for n in c.notes]
        else:
            out += [c.title, "  settings" + ("" if c.changes else ": the same")]
            out += [f"    {ch.section:<9} {change_text(ch)}" for ch in c.changes]
            out += [line for _, line in metrics_text(c.metrics)] + [f"  note: {n}" for n in c.notes]
        out.append("")
    return "\n".join(out)


# --- recipe runs -------------------------------------------------------------------------------------

def list_runs(target: str | None, overrides: tuple[str, ...], cache_dir: str | None) -> tuple[list[dict], set[str]]:
    """(run lines, oldest first; ids of the runs of the recipe exactly as it is now). target: a recipe file
    (its runs), a folder (the caches of its recipes) or None (the current folder's)."""
    if target and _is_recipe_ref(target):
        side = load_side(Path(target), target, overrides, cache_dir)
        if side.recipe is None:
            raise RecipeError(f"{target} does not validate: {side.problem}")
        fps = {name: fp.value for name, fp in side.fps.items()}
        lines = [x for x in runindex.read(side.cache.root) if x["recipe"] == side.recipe.name]
        return lines, {x["id"] for x in lines if runindex.matches(x, fps)}
    if target and not Path(target).is_dir():
        raise RecipeError(f"{target}: no such recipe file or folder")
    lines = [x for root in caches(cache_dir, Path(target) if target else None) for x in runindex.read(root)]
    return sorted(lines, key=lambda x: x.get("ended", "")), set()


def _kind(line: dict) -> str:
    sel = line.get("selection") or {}
    return "dry-run" if sel.get("dry_run") else f"only {sel['only']}" if sel.get("only") else \
        f"from {sel['from']}" if sel.get("from") else "full"


def _headline(line: dict) -> str:
    """The last evaluated stage's eval loss per source: the run's result at a glance."""
    losses = [(k.split(".")[1], k.split(".", 3)[3], v) for k, v in line.get("metrics", {}).items()
              if k.startswith("eval.") and k.split(".")[2] == "loss" and k.count(".") >= 3]
    stage = losses[-1][0] if losses else None
    return ", ".join(f"{src} {v:.4g}" for st, src, v in losses if st == stage) + (f" ({stage})" if stage else "")


def _gates(line: dict) -> str:
    """report.json's "gates" ({status, passed, failed, pending, checks}; None without gates): "pass 5/5"."""
    gates = line.get("gates")
    if not isinstance(gates, dict):
        return "-"
    total = sum(gates.get(k) or 0 for k in ("passed", "failed", "pending"))
    return f"{gates.get('status', '?')} {gates.get('passed') or 0}/{total}"


def _row(line: dict, current: set[str]) -> list[str]:
    git = line.get("git") or {}
    commit = (git.get("commit") or "")[:10] + ("+dirty" if git.get("dirty") else "") or "-"
    return [line["id"] + (" *" if line["id"] in current else ""), line["recipe"], line.get("ended", ""), commit,
            _kind(line), _gates(line), _headline(line) or "-"]


HEAD = ["id", "recipe", "ended", "commit", "run", "gates", "eval loss (last stage)"]


def render_runs(lines: list[dict], current: set[str], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([{**{k: v for k, v in x.items() if k != "document"}, "current": x["id"] in current}
                           for x in lines], ensure_ascii=False, indent=2) + "\n"
    rows = [_row(x, current) for x in lines]
    foot = ["", "* the recipe exactly as it is now (same fingerprints)"] if current else []
    if fmt == "markdown":
        out = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
        return "\n".join(out + ["| " + " | ".join(_md(c) for c in r) + " |" for r in rows] + foot) + "\n"
    if not rows:
        return "no runs in the index yet: `recipe run R` adds one when it finishes\n"
    widths = [max(len(r[i]) for r in rows + [HEAD]) for i in range(len(HEAD))]
    fmt_row = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt_row(HEAD)] + [fmt_row(r) for r in rows] + foot) + "\n"
