"""length: drop rows whose text is too short or too long in characters, words (CJK characters count
one each) or tokens of the whole rendered example (so rows that training would truncate can be
dropped instead).

A scored filter: `measure` records numbers per row and `rules` decides on them, for one row (scalars)
or for a cached column of them (numpy arrays), so `recipe plan` can say what a new threshold keeps
without rerunning (runner/data/filters/__init__.py)."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from ...recipe.model import LengthFilter
from ..text import text, words
from .context import FilterContext, RowFilter


def measures(f: LengthFilter) -> tuple[str, ...]:
    """The numbers this filter's settings need per row (words and tokens cost more: only when used)."""
    names = ("chars",)
    if f.min_words is not None or f.max_words is not None:
        names += ("words",)
    if f.max_tokens is not None:
        names += ("tokens",)
    return names


def measure(f: LengthFilter, ctx: FilterContext) -> Callable[[dict], dict[str, int]]:
    names = measures(f)
    if "tokens" in names and ctx.token_count is None:
        raise ValueError("length filter with max_tokens needs FilterContext.token_count")

    def m(record: dict) -> dict[str, int]:
        s = text(record, f.field)
        out = {"chars": len(s)}
        if "words" in names:
            out["words"] = len(words(s))
        if "tokens" in names:
            out["tokens"] = ctx.token_count(record)
        return out
    return m


def rules(f: LengthFilter, ctx: FilterContext, m: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(reason, hit) in the order they are checked; hit is a bool, or a bool array for columns."""
    max_tokens = ctx.max_length if f.max_tokens == "max_length" else f.max_tokens
    out = []
    if f.min_chars is not None:
        out.append(("length:min_chars", m["chars"] < f.min_chars))
    if f.max_chars is not None:
        out.append(("length:max_chars", m["chars"] > f.max_chars))
    if f.min_words is not None:
        out.append(("length:min_words", m["words"] < f.min_words))
    if f.max_words is not None:
        out.append(("length:max_words", m["words"] > f.max_words))
    if max_tokens is not None:
        out.append(("length:max_tokens", m["tokens"] > max_tokens))
    return out


def make(f: LengthFilter, ctx: FilterContext) -> RowFilter:
    m = measure(f, ctx)

    def check(record):
        return next((reason for reason, hit in rules(f, ctx, m(record)) if hit), None), record
    return check
