"""Errors. A RecipeError is the user's to fix: the CLI prints it as one line and exits 2.
Anything else escaping to the CLI is our bug and keeps its traceback."""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Where:
    """A place in the user's input: a file position, or a command-line override."""
    file: str
    line: int | None = None   # 1-based
    col: int | None = None    # 1-based

    def __str__(self) -> str:
        if self.line is None:
            return one_line(self.file)   # a --set argument can hold a newline
        return f"{one_line(self.file)}:{self.line}:{self.col or 1}"


_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """Control characters and line separators a message quotes from the user's input, escaped."""
    return _CONTROL.sub(lambda m: {"\n": "\\n", "\r": "\\r"}.get(m[0], f"\\x{ord(m[0]):02x}" if ord(m[0]) < 256
                                                              else f"\\u{ord(m[0]):04x}"), text)


class RecipeError(Exception):
    """A mistake in the user's recipe, data or command line."""

    exit_code = 2

    def __init__(self, message: str, where: Where | None = None):
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class ValidationError(RecipeError):
    """Every problem found in a recipe, reported together."""

    def __init__(self, problems: list[RecipeError], file: str, hidden: int = 0):
        for p in problems:   # one line per problem, even when it quotes a value that holds a newline
            p.message = one_line(p.message)
        self.problems = problems
        self.hidden = hidden    # more problems than are worth printing (a generated recipe can have 50,000)
        n = len(problems) + hidden
        super().__init__(f"{file}: {n:,} error{'s' if n != 1 else ''}; nothing was run")

    def __str__(self) -> str:
        more = [f"... and {self.hidden:,} more like these"] if self.hidden else []
        return "\n".join([str(p) for p in self.problems] + more + [self.message])


class StepError(RecipeError):
    """A step failed for a reason the user can act on; names the step and how to resume."""

    def __init__(self, step: str, message: str, resume: str | None = None):
        self.step = step
        self.resume = resume
        text = f"step {step} failed: {message}"
        if resume:
            text += f" (fix it, then resume with: {resume})"
        super().__init__(text)
