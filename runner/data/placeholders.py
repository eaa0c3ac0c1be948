"""`{{name}}` placeholders in a source's text (identity data: "I am {{name}}, developed by {{author}}"),
filled from the source's `placeholders:` map when it is loaded, so the model never trains on the literal
braces. Whatever is left unresolved is counted by name, with the first row that has it, for the report."""
from __future__ import annotations

import re
from collections import Counter
from typing import Mapping

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class Filler:
    """Fills one record at a time (in place); `found()` says what it did, as fill() returns it."""
    def __init__(self, values: Mapping[str, str]):
        self.values = values
        self.filled, self.unresolved, self.example = 0, Counter(), {}

    def __call__(self, rec: dict) -> dict:
        for msg in rec["messages"]:
            if "{{" in msg["content"]:
                msg["content"] = PLACEHOLDER.sub(lambda m: self._sub(m, rec["id"]), msg["content"])
        return rec

    def _sub(self, m: re.Match, rid: str) -> str:
        name = m.group(1)
        if name in self.values:
            self.filled += 1
            return self.values[name]
        self.unresolved[name] += 1
        self.example.setdefault(name, rid)
        return m.group(0)

    def found(self) -> dict:
        if not self.filled and not self.unresolved:
            return {}
        return {"filled": self.filled, "unresolved": dict(sorted(self.unresolved.items())), "example": self.example}


def fill(records: list[dict], values: Mapping[str, str]) -> dict:
    """Substitute in every message's content, in place. -> {"filled": n, "unresolved": {name: n},
    "example": {name: first row id}} (empty dict when the text has no placeholders at all)."""
    filler = Filler(values)
    for rec in records:
        filler(rec)
    return filler.found()


def describe(source: str, found: dict) -> str | None:
    """One line for the log and the report, or None when nothing is unresolved."""
    if not found.get("unresolved"):
        return None
    names = ", ".join(f"{{{{{k}}}}} x{v:,} (e.g. row {found['example'][k]})" for k, v in found["unresolved"].items())
    return (f"{source}: unresolved placeholders {names} are trained literally; give their values in "
            f"sources.{source}.placeholders")
