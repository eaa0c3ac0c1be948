"""regex: `action: drop` removes rows whose text matches `pattern`; `keep` keeps only those."""
from __future__ import annotations

import re

from ...recipe.model import RegexFilter
from ..text import text
from .context import FilterContext, RowFilter


def make(f: RegexFilter, ctx: FilterContext) -> RowFilter:
    pattern = re.compile(f.pattern, re.IGNORECASE if f.ignore_case else 0)
    drop_on_match = f.action == "drop"

    def check(record):
        matched = pattern.search(text(record, f.field)) is not None
        return ("regex" if matched == drop_on_match else None), record
    return check
