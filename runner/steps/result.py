"""What a step returns: a frozen value of its kind's result type (KIND.result), kept in the cache as JSON
(the manifest's "stats", the index) and read back with `of`. A result knows how it is shown, so the
report, the run summary, the dry-run table and the diff render any kind's result without knowing the kind:

  contribute(step, record, report, run_dir)  its part of report.json (called for every step of the graph, with
                                     the empty result for a step that did not run, so the keys are stable)
  defaults()                         the report.json keys this kind owns, before any step contributes
  finish(report, run_dir)            its files in the run directory, once the report is whole
  stage_markdown(entry, run_dir)     its lines in report.md's section of a stage
  markdown_head / markdown_tail      its report.md sections before / after the stages
  summary_head / summary_lines       what `run --dry-run` prints of it
  source_rows(source)                rows out of one source (the dry run's per-source table)

Values from the environment are masked where they came from: in a step's parameters (the fingerprint)
and in text a result copied from them (a generated sample echoing a prompt). A count is a count: it is
never masked because it happens to equal a secret.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


def count(v: Any) -> str:
    """A count as the screen and the reports show it (1,234)."""
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else "" if v is None else str(v)


def share(v: Any) -> str:
    """A share as the screen and the reports show it (12.5%); None: blank."""
    return "" if v is None else f"{v:.1%}" if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def number(v: Any) -> str:
    """A metric or a count in a table: 4 significant digits for a float, 1,234 for an int."""
    return f"{v:.4g}" if isinstance(v, float) else count(v)


@dataclass(frozen=True)
class Result:
    """Rows in and out, dropped (by reason) and added (oversampled repeats), overall and per source.
    A step that moves no rows leaves them None."""
    rows_in: int | None = None
    rows_out: int | None = None
    dropped: Mapping[str, int] = field(default_factory=dict)
    added: Mapping[str, int] = field(default_factory=dict)
    by_source: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, data: "Result | Mapping[str, Any] | None") -> "Result":
        """From what run() returned or the cache kept; keys this version does not know are left out."""
        if isinstance(data, cls):
            return data
        if isinstance(data, Result):
            data = data.to_json()
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in names})

    def to_json(self) -> dict[str, Any]:
        """JSON data, fields in declaration order; empty `added` left out (as the row accounting writes it)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if not out["added"]:
            del out["added"]
        return out

    def unbalanced(self) -> str | None:
        """Nothing is lost silently: rows in (+ added) == rows out + dropped, or why not."""
        if self.rows_in is None:
            return None
        added, dropped = sum(self.added.values()), sum(self.dropped.values())
        if self.rows_in + added == self.rows_out + dropped:
            return None
        return f"rows_in {self.rows_in} + added {added} != rows_out {self.rows_out} + dropped {dropped}"

    def train_rows(self) -> Mapping[str, int] | None:
        """Train rows per source, from the step that splits sources into train and eval rows."""
        return None

    def source_rows(self, step, source: str) -> int | None:
        if step.source is not None:
            return self.rows_out if step.source == source else None
        return (self.by_source.get(source) or {}).get("rows_out")

    # --- how it is shown (nothing by default) -------------------------------------------------------

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {}

    def contribute(self, step, record, report: dict, run_dir: Path) -> None:
        pass

    @classmethod
    def finish(cls, report: dict, run_dir: Path) -> None:
        """Once the report is whole: bring the run directory's files of this kind in line with it."""

    @classmethod
    def stage_markdown(cls, entry: dict, run_dir: Path) -> list[str]:
        return []

    @classmethod
    def markdown_head(cls, report: dict, run_dir: Path) -> list[str]:
        return []

    @classmethod
    def markdown_tail(cls, report: dict, run_dir: Path) -> list[str]:
        return []

    def summary_head(self, step) -> str | None:
        return None

    def summary_lines(self, step) -> list[str]:
        return []


def stage_entry(report: dict, stage: str | None) -> dict | None:
    """report["stages"]'s entry for a recipe stage (None for a step of no stage)."""
    return next((s for s in report["stages"] if s["name"] == stage), None) if stage else None


def samples_markdown(samples: list[dict]) -> list[str]:
    """Generated samples as report.md quotes (evaluation steps show them)."""
    lines: list[str] = []
    for smp in samples[:3]:
        tail = "" if smp.get("stopped", True) else " *(no end-of-turn: cut at max_new_tokens)*"
        lines += ["", f"> **{smp.get('prompt', '')}**", ">",
                  "> " + str(smp.get("output", "")).replace("\n", "\n> ") + tail]
    return lines


def metrics_line(label: str, metrics: Mapping[str, Any]) -> str:
    return f"{label}" + ", ".join(f"{k} {number(v)}" for k, v in metrics.items() if not isinstance(v, (dict, list)))
