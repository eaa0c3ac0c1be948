"""What a filter may need besides its own settings."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# (drop reason or None, the record): a filter that changes a record returns a new dict and leaves the one it
# was given as it was (the filter step writes an unchanged kept row as the line it read)
Verdict = tuple[str | None, dict[str, Any]]
RowFilter = Callable[[dict[str, Any]], Verdict]


@dataclass(frozen=True)
class FilterContext:
    base_dir: Path = Path(".")               # the recipe's folder: relative paths resolve against it
    max_length: int | None = None            # template.max_length, for `max_tokens: max_length`
    # Tokens of a whole rendered example (tokenizer + chat template). The step passes a callable that
    # loads the tokenizer on first use, so recipes without a max_tokens filter never load it.
    token_count: Callable[[dict[str, Any]], int] | None = None
