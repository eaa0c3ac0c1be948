"""length: drop rows whose text is too short or too long in characters, words (CJK characters count
one each) or tokens of the whole rendered example (so rows that training would truncate can be
dropped instead)."""
from __future__ import annotations

from ...recipe.model import LengthFilter
from ..text import text, words
from .context import FilterContext, RowFilter


def make(f: LengthFilter, ctx: FilterContext) -> RowFilter:
    max_tokens = ctx.max_length if f.max_tokens == "max_length" else f.max_tokens
    if max_tokens is not None and ctx.token_count is None:
        raise ValueError("length filter with max_tokens needs FilterContext.token_count")
    count_words = f.min_words is not None or f.max_words is not None

    def check(record):
        s = text(record, f.field)
        n = len(s)
        if f.min_chars is not None and n < f.min_chars:
            return "length:min_chars", record
        if f.max_chars is not None and n > f.max_chars:
            return "length:max_chars", record
        if count_words:
            w = len(words(s))
            if f.min_words is not None and w < f.min_words:
                return "length:min_words", record
            if f.max_words is not None and w > f.max_words:
                return "length:max_words", record
        if max_tokens is not None and ctx.token_count(record) > max_tokens:
            return "length:max_tokens", record
        return None, record
    return check
