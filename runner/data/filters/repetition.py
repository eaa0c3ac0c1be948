"""repetition: drop degenerate answers, the kind a model learns to loop on.

- a line repeated more than `max_line_repeats` times. Only lines with a letter or digit count:
  code closes many blocks with "}" and markdown repeats "---", and neither is degenerate;
- for texts of at least `min_chars`, a share of repeated word n-grams above `max_ngram_ratio`:
  (n-grams - distinct n-grams) / n-grams, with CJK characters counted as words. Short answers
  ("The capital of France is Paris.", a quatrain) skip this check: a few words can repeat by nature.

A scored filter, like length: `measure` records the numbers, `rules` decides on one row or a column."""
from __future__ import annotations

import re
from collections import Counter
from typing import Any, Callable, Mapping

from ...recipe.model import RepetitionFilter
from ..text import text, words
from .context import FilterContext, RowFilter

_WORDY = re.compile(r"\w")


def measures(f: RepetitionFilter) -> tuple[str, ...]:
    names = ("chars", "line_repeats")
    if f.max_ngram_ratio is not None:
        names += (f"ngram_ratio_{f.ngram_size}",)   # the ratio depends on n: another n is not scored
    return names


def measure(f: RepetitionFilter, ctx: FilterContext) -> Callable[[dict], dict[str, Any]]:
    n = f.ngram_size
    ratio = f"ngram_ratio_{n}" if f.max_ngram_ratio is not None else None

    def m(record: dict) -> dict[str, Any]:
        s = text(record, f.field)
        lines = [x for x in (ln.strip() for ln in s.split("\n")) if x]
        repeats = 0    # the most times a wordy line occurs, when any line occurs twice (else 0)
        if len(set(lines)) < len(lines):
            counts = Counter(x for x in lines if _WORDY.search(x))
            repeats = max(counts.values(), default=0)
        out = {"chars": len(s), "line_repeats": repeats}
        if ratio:
            w = words(s)
            grams = len(w) - n + 1
            out[ratio] = (grams - len(set(zip(*[w[i:] for i in range(n)])))) / grams if grams > 0 else 0.0
        return out
    return m


def rules(f: RepetitionFilter, ctx: FilterContext, m: Mapping[str, Any]) -> list[tuple[str, Any]]:
    out = []
    if f.max_line_repeats is not None:
        out.append(("repetition:line", m["line_repeats"] > f.max_line_repeats))
    if f.max_ngram_ratio is not None:
        out.append(("repetition:ngram", (m["chars"] >= f.min_chars) & (m[f"ngram_ratio_{f.ngram_size}"] > f.max_ngram_ratio)))
    return out


def make(f: RepetitionFilter, ctx: FilterContext) -> RowFilter:
    m = measure(f, ctx)

    def check(record):
        return next((reason for reason, hit in rules(f, ctx, m(record)) if hit), None), record
    return check
