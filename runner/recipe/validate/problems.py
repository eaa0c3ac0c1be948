"""What every check shares: the list problems go into (each with its file:line, never showing a value
from the environment), and the words that point at a place or suggest a fix."""
from __future__ import annotations

import difflib
import re
from typing import Any, Iterable

from ...errors import RecipeError
from .. import secrets
from ..document import Document

MAX_SHOWN = 200   # errors printed; a generated recipe can have 50,000


def did_you_mean(word: str, options: Iterable[str]) -> str:
    options = list(options)
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f"; expected one of: {', '.join(options)}" if 0 < len(options) <= 12 else ""


def dotted(path: Iterable[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "the recipe"


class Problems(list):
    def __init__(self, doc: Document):
        super().__init__()
        self.doc = doc
        self.scrub = doc.secret_values()

    def add(self, path: tuple, message: str, *, key: bool = True) -> None:
        # the key's line reads best ("sources:" rather than the first item of its block)
        where = self.doc.key_where(path) if key else self.doc.where(path)
        message = secrets.scrub(message, self.scrub)   # a check that quotes a value never shows one from the environment
        self.append(RecipeError(message, where))

    def secret(self, path: tuple) -> bool:
        """Is the value at `path` (or part of it) from the environment? Then no message may show it."""
        n = len(path)
        return any(s[:n] == path or path[:len(s)] == s for s in self.doc.secrets)


def check_regex(pattern: str, path: tuple, out: Problems) -> None:
    try:
        re.compile(pattern)
    except re.error as e:
        out.add(path, f"{dotted(path)}: invalid regular expression {pattern!r}: {e}")
