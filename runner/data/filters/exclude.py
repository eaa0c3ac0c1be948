"""exclude: drop rows whose text is listed in a file, e.g. the rows another recipe evaluates on.

The file is JSON lines, each an object with `text` or `sha1` (hex SHA-1 of the normalised text), so a
list of held-out rows can be shipped without their text. Matching is on `normalize`, the same notion of
"the same text" that dedup and splits use."""
from __future__ import annotations

import hashlib
import json

from ...errors import RecipeError
from ...recipe.model import ExcludeFilter
from ..text import normalize, text
from .context import FilterContext, RowFilter


def digest(s: str) -> str:
    """The `sha1` key of a text in an exclude file."""
    return hashlib.sha1(normalize(s).encode("utf-8")).hexdigest()


def load(path) -> frozenset[str]:
    out = set()
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise RecipeError(f"{path}:{n}: not JSON ({e.msg})") from None
            if isinstance(row, dict) and isinstance(row.get("sha1"), str):
                out.add(row["sha1"].lower())
            elif isinstance(row, dict) and isinstance(row.get("text"), str):
                out.add(digest(row["text"]))
            else:
                raise RecipeError(f"{path}:{n}: expected an object with a `text` or `sha1` string")
    return frozenset(out)


def make(f: ExcludeFilter, ctx: FilterContext) -> RowFilter:
    listed = load(ctx.base_dir / f.file)

    def check(record):
        return ("excluded" if digest(text(record, f.field)) in listed else None), record
    return check
