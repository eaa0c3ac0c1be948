"""`{{name}}` placeholders in a source's text (identity data: "I am {{name}}, developed by {{author}}"),
filled from the source's `placeholders:` map when it is loaded, so the model never trains on the literal
braces. Whatever is left unresolved is counted by name, with the first row that has it, for the report."""
from __future__ import annotations

import re
from collections import Counter
from typing import Mapping

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def fill(records: list[dict], values: Mapping[str, str]) -> dict:
    """Substitute in every message's content, in place. -> {"filled": n, "unresolved": {name: n},
    "example": {name: first row id}} (empty dict when the text has no placeholders at all)."""
    filled, unresolved, example = 0, Counter(), {}

    def sub(m: re.Match, rid: str) -> str:
        nonlocal filled
        name = m.group(1)
        if name in values:
            filled += 1
            return values[name]
        unresolved[name] += 1
        example.setdefault(name, rid)
        return m.group(0)

    for rec in records:
        for msg in rec["messages"]:
            if "{{" in msg["content"]:
                msg["content"] = PLACEHOLDER.sub(lambda m: sub(m, rec["id"]), msg["content"])
    if not filled and not unresolved:
        return {}
    return {"filled": filled, "unresolved": dict(sorted(unresolved.items())), "example": example}


def describe(source: str, found: dict) -> str | None:
    """One line for the log and the report, or None when nothing is unresolved."""
    if not found.get("unresolved"):
        return None
    names = ", ".join(f"{{{{{k}}}}} x{v:,} (e.g. row {found['example'][k]})" for k, v in found["unresolved"].items())
    return (f"{source}: unresolved placeholders {names} are trained literally; give their values in "
            f"sources.{source}.placeholders")
