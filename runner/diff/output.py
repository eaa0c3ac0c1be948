"""A RecipeDiff for people and machines: text (coloured on a terminal), markdown (a PR comment), JSON."""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from ..recipe.compare import MARK, Change, change_text, show_value
from ..steps.base import kind_of
from .impact import RecipeDiff, Rows, StageImpact, StageView, StepChange
from .metrics import Metrics, delta_text, show
from .metrics import to_json as metrics_json


def _arrow(a: Any, b: Any, fmt=show_value) -> str:
    if a is None:
        return fmt(b)
    if b is None:
        return fmt(a)
    return fmt(a) if a == b else f"{fmt(a)} → {fmt(b)}"


def _num(n: int | float | None) -> str:
    if n is None:
        return "?"
    return f"{n:,}" if isinstance(n, int) else f"{n:g}"


def _rows(r: Rows) -> str:
    if r.basis == "requested":
        size = ("all rows" if r.size is None else f"{r.size:,} rows" if isinstance(r.size, int)
                else f"{r.size:.0%} of all rows")
        mix = ", ".join(f"{k} {v:.0%}" for k, v in (r.mix or {}).items())
        return f"{size}" + (f" · {mix}" if mix else "") + (f" ⚠ {r.problem}" if r.problem else "")
    parts = ", ".join(f"{s} {n:,}" for s, n in r.by_source.items())
    text = f"{r.total:,}" + (f" ({parts})" if parts else "") if r.total is not None else "?"
    return text + (f" ⚠ {r.problem}" if r.problem else "")


def _stage_rows(st: StageImpact) -> str:
    a, b = (v.rows if v else None for v in (st.before, st.after))
    return _arrow(_rows(a) if a else None, _rows(b) if b else None, str)


def _batch(v: StageView) -> str:
    if v.grad_accum is None:   # micro_batch_size: auto is chosen when training starts
        return f"{v.batch_size} (auto×{v.world_size})"
    return f"{v.batch_size} ({v.micro_batch_size}×{v.grad_accum}×{v.world_size})"


def _epochs(v: StageView) -> str:
    return f"max_steps {v.max_steps}" if v.max_steps else f"{v.epochs:g}"


def _opt_steps(v: StageView) -> str:
    n = v.optimizer_steps
    return "?" if n is None else ("" if v.max_steps else "≈ ") + f"{n:,}"


def _stage_cells(st: StageImpact) -> list[str]:
    a, b = (v if v and not v.skip else None for v in (st.before, st.after))
    if a is None and b is None:
        return ["", "", "", ""]
    pick = lambda f: _arrow(f(a) if a else None, f(b) if b else None, str)  # noqa: E731
    steps = pick(_opt_steps)
    return [pick(_batch), pick(_epochs), pick(lambda v: f"{v.learning_rate:g}"), "" if steps == "?" else steps]


def _trains(s: StepChange) -> bool:
    """A step that trains and will run: the diff's "retrain"."""
    return kind_of(s.kind).trains and s.change != "removed"


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def summary(d: RecipeDiff) -> str:
    trained = [s.name for s in d.stages if s.status in ("retrain", "new")]
    # a step that trains outside the recipe's stages (a meta recipe's train.meta, train.control)
    trained += [s.name for s in d.steps if _trains(s) and s.stage is None and not s.cached]
    if d.before is None:
        return f"new recipe: trains {_n(len(trained), 'stage')} ({', '.join(trained)}) · {_n(len(d.steps), 'step')}"
    if d.after is None:
        return f"recipe deleted · {_n(len(d.steps), 'step')} no longer run"
    if not d.differs:
        return "no differences"
    parts = []
    if d.stages or d.steps:
        parts.append(f"retrain {_n(len(trained), 'stage')} ({', '.join(trained)})" if trained else "no retraining")
        rerun = sum(s.change != "removed" and not s.cached for s in d.steps)
        removed = sum(s.change == "removed" for s in d.steps)
        parts += [f"{_n(rerun, 'step')} to run"] + ([f"{removed} removed"] if removed else [])
    if d.changes:
        parts.append(f"{_n(len(d.changes), 'setting')} changed")
    if d.lock:
        parts.append(f"lock file: {_n(len(d.lock), 'difference')}")
    return " · ".join(parts) or "does not load"


def _step_text(s: StepChange) -> str:
    what = "retrain" if _trains(s) else s.change
    what += " (cached)" if s.cached else ""
    why = "; ".join(s.why[:4]) + (" ..." if len(s.why) > 4 else "")
    return f"{what}{': ' + why if why else ''}"


def _shown(d: RecipeDiff) -> list[StageImpact]:
    """Stages worth a line: all of them when anything changed, minus those skipped on both sides."""
    if not d.differs:
        return []
    return [s for s in d.stages if any(v is not None and not v.skip for v in (s.before, s.after))]


def _text_lines(diffs: list[RecipeDiff], header: str | None) -> list[tuple[str, str]]:
    """(mark, line) pairs: the mark picks the colour on a terminal (+ added, - removed, ~ changed, ! retrain)."""
    lines = [("title", header)] if header else []
    for d in diffs:
        lines += [("title", d.title), ("", f"  {summary(d)}")]
        if d.changes:
            lines.append(("", "  settings"))
            lines += [(MARK[c.op], f"    {c.section:<9} {MARK[c.op]} {change_text(c)}") for c in d.changes]
        shown = _shown(d)
        if shown:
            lines.append(("", "  training (batch = micro×accum×world · epochs · learning rate · optimizer steps)"))
            lines += [("!" if st.status in ("retrain", "new") else "",
                       f"    {st.name:<12} {st.status:<9} " + "  ".join(x for x in _stage_cells(st) if x)) for st in shown]
        rows = [(f"source {s}", _arrow(_num(a), _num(b), str))
                for s, (a, b) in d.sources.items() if (a, b) != (None, None)]
        rows += [(f"stage {st.name}", _stage_rows(st)) for st in shown]
        if rows:
            lines.append(("", "  rows"))
            lines += [("", f"    {k:<20} {v}") for k, v in rows]
        if d.steps and d.before and d.after:  # a whole recipe added or deleted: its steps go without saying
            lines.append(("", "  steps"))
            for s in d.steps:
                mark = "!" if _trains(s) else MARK.get(s.change, "+")
                lines.append((mark, f"    {mark} {s.name:<18} {_step_text(s)}"))
        lines += metrics_text(d.metrics)
        lines += [("~", f"  lock: {x}") for x in d.lock]
        lines += [("-", f"  problem: {n}") for n in d.problems] + [("", f"  note: {n}") for n in d.notes]
        lines.append(("", ""))
    return lines


def metrics_text(m: Metrics | None) -> list[tuple[str, str]]:
    """The metric deltas as text lines ("eval loss tang (main)  5.78 → 5.71 (-0.07, -1.2%)")."""
    if m is None:
        return []
    sides = " → ".join(r.text() if r else "not run" for r in (m.before, m.after))
    lines = [("", f"  metrics: {sides}")]
    width = max((len(d.label) for d in m.deltas), default=0)
    lines += [("~" if d.delta else "", f"    {d.label:<{width}}  {delta_text(d)}") for d in m.deltas]
    return lines + ([("", f"  note: {m.note}")] if m.note else [])


FOLD = 16   # metric rows shown unfolded in markdown


def metrics_markdown(m: Metrics | None) -> list[str]:
    if m is None:
        return []
    sides = " → ".join(_md(r.text()) if r else "not run" for r in (m.before, m.after))
    lines = [f"**metrics**: {sides}", ""]
    if m.deltas:
        folded = len(m.deltas) > FOLD   # a long table (stages x sources) stays one click away in a PR comment
        lines += [f"<details><summary>{len(m.deltas)} metrics</summary>", ""] if folded else []
        lines += ["| metric | before | after | change |", "|---|---:|---:|---|"]
        for d in m.deltas:
            change = "" if d.delta is None else f"{d.delta:+.4g}"
            if d.inside_noise is not None:
                change += f" ({'inside' if d.inside_noise else 'outside'} the noise ±{d.noise:.2g})"
            lines.append(f"| {_md(d.label)} | {show(d.before)} | {show(d.after)} | {change} |")
        lines += ["", "</details>", ""] if folded else [""]
    return lines + ([f"> {_md(m.note)}", ""] if m.note else [])


def render_text(diffs: list[RecipeDiff], header: str | None = None) -> str:
    return "".join(line + "\n" for _, line in _text_lines(diffs, header))


# Characters that reorder what a reviewer sees (bidirectional overrides and isolates, the marks): a PR
# comment shows them as their escapes, never applies them.
_BIDI = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C])


def _cell(v: str) -> str:
    """What every markdown cell gets: no line break, no bare pipe, no bidi control."""
    v = "".join(f"\\u{ord(c):04x}" if ord(c) in _BIDI else c for c in str(v))
    return v.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _md(v: str) -> str:
    """Text from a recipe in a PR comment: HTML is shown, never interpreted (a value holding `<!--`
    would hide the rest of the comment)."""
    v = str(v).replace("\\", "\\\\").replace("`", "\\`")   # a backslash or backtick of its own opens nothing
    return _cell(v.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def _code(v: Any) -> str:
    s = show_value(v)   # inside a code span HTML is already shown as text
    return _cell(f"`` {s} ``" if "`" in s else f"`{s}`")


def _md_side(c: Change, side: str) -> str:
    v = getattr(c, side)
    if c.op == "moved":
        return f"position {v + 1}"
    if c.op == "renamed":
        return _md(v)
    return "" if v is None and c.op in ("added", "removed") else _code(v)


def render_markdown(diffs: list[RecipeDiff], header: str | None = None) -> str:
    lines = [f"## {header}", ""] if header else []
    for d in diffs:
        lines += [f"### {_md(d.title)}", "", f"**{summary(d)}**", ""]
        if d.changes:
            lines += ["| section | setting | before | after |", "|---|---|---|---|"]
            lines += [f"| {c.section} | {_md(c.path)}{'' if c.op == 'changed' else f' ({c.op})'} "
                      f"| {_md_side(c, 'before')} | {_md_side(c, 'after')} |" for c in d.changes]
            lines.append("")
        shown = _shown(d)
        if shown:
            lines += ["| stage | | batch (micro×accum×world) | epochs | learning rate | optimizer steps | rows |",
                      "|---|---|---|---|---|---|---|"]
            for st in shown:
                status = f"**{st.status}**" if st.status in ("retrain", "new") else st.status
                cells = [_md(st.name), status, *map(_md, _stage_cells(st)), _md(_stage_rows(st))]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        src = [(s, ab) for s, ab in d.sources.items() if ab != (None, None)]
        if src:
            lines += ["| source | rows before | rows after |", "|---|---:|---:|"]
            lines += [f"| {_md(s)} | {_num(a)} | {_num(b)} |" for s, (a, b) in src]
            lines.append("")
        if d.steps and d.before and d.after:
            lines += [f"<details><summary>{len(d.steps)} step{'s' * (len(d.steps) != 1)} affected</summary>", "",
                      "| step | | why |", "|---|---|---|"]
            for s in d.steps:
                what, _, why = _step_text(s).partition(": ")
                lines.append(f"| {_md(s.name)} | {_md(what)} | {_md(why)} |")
            lines += ["", "</details>", ""]
        lines += metrics_markdown(d.metrics)
        if d.lock:
            lines += ["**lock file**", ""] + [f"- {_md(x)}" for x in d.lock] + [""]
        lines += [f"> **{_md(n)}**" for n in d.problems] + [f"> {_md(n)}" for n in d.notes]
        lines += [""] if d.problems or d.notes else []
    if diffs and any(d.stages for d in diffs):
        lines += ["<sub>rows: from the cache where a step with the same fingerprint has run (the mix, or the split's "
                  "train rows through the mix arithmetic), otherwise as requested</sub>", ""]
    return "\n".join(lines)


def to_json(diffs: list[RecipeDiff]) -> dict:
    def one(d: RecipeDiff) -> dict:
        out = asdict(d)
        out["status"] = ("added" if d.before is None else "deleted" if d.after is None
                         else "changed" if d.differs else "unchanged")
        out["changes"] = [{"section": c.section, **asdict(c)} for c in d.changes]
        out["sources"] = {s: {"before": a, "after": b} for s, (a, b) in d.sources.items()}
        out["metrics"] = metrics_json(d.metrics)
        for st, raw in zip(d.stages, out["stages"]):
            for side in ("before", "after"):
                view = getattr(st, side)
                if view is not None:
                    raw[side]["optimizer_steps"] = view.optimizer_steps
        return out
    return {"differences": any(d.differs for d in diffs), "recipes": [one(d) for d in diffs]}


def render(diffs: list[RecipeDiff], fmt: str, header: str | None = None) -> str:
    if fmt == "json":
        return json.dumps(to_json(diffs), ensure_ascii=False, indent=2) + "\n"
    if fmt == "markdown":
        return render_markdown(diffs, header)
    return render_text(diffs, header)


_STYLE = {"title": "bold", "+": "green", "-": "red", "~": "yellow", ">": "cyan", "=": "cyan", "!": "bold magenta"}


def print_rich(diffs: list[RecipeDiff], header: str | None) -> None:
    from rich.console import Console
    from rich.text import Text
    console = Console(highlight=False)
    for mark, line in _text_lines(diffs, header):
        console.print(Text(line, style=_STYLE.get(mark, "")), soft_wrap=True)  # long lines wrap, not re-flow
