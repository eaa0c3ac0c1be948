"""incomplete: drop answers that look cut off: the last turn of `field` ends on one of
`bad_endings` (a comma, colon, open bracket...) or leaves a ``` code fence open."""
from __future__ import annotations

from ...recipe.model import IncompleteFilter
from ..text import turns
from .context import FilterContext, RowFilter


def make(f: IncompleteFilter, ctx: FilterContext) -> RowFilter:
    endings = tuple(f.bad_endings)

    def check(record):
        parts = turns(record, f.field)
        last = parts[-1].rstrip() if parts else ""
        if len(last) < max(f.min_chars, 1):
            return None, record
        if (endings and last.endswith(endings)) or last.count("```") % 2:
            return "incomplete", record
        return None, record
    return check
