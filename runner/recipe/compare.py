"""Two resolved recipe documents (or two steps' parameters) compared key by key: what `recipe diff` shows
as settings and `recipe plan` as the reasons a step is stale. List items are matched by name or kind,
not by position, so inserting a filter reads as one insertion, a reordered filter as a move and a source
renamed with the same settings as a rename."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

import yaml


# The order a reviewer reads a recipe in; a top-level key not named here is a section of its own.
SECTIONS = ("recipe", "sources", "filters", "mix", "split", "template", "model", "train", "stages", "meta",
            "evaluate", "output")
_SECTION_OF = {"seed": "recipe", "groups": "mix", "sampling": "mix", "size": "mix"}
_IDENTITY = ("name", "kind", "method")  # what names a list item: a task by name, a filter by kind (+ method)


@dataclass(frozen=True)
class Change:
    path: str        # in the resolved document: "stages.task.mix.general", "filters[regex].pattern"
    op: str          # added | removed | changed | moved (before/after: positions) | renamed (before/after: names)
    before: Any = None
    after: Any = None

    @property
    def section(self) -> str:
        head = re.split(r"[.\[]", self.path, maxsplit=1)[0]
        return _SECTION_OF.get(head, head)


def compare(a: Any, b: Any, path: str = "") -> list[Change]:
    if isinstance(a, dict) and isinstance(b, dict):
        return _compare_maps(a, b, path)
    if isinstance(a, list) and isinstance(b, list) and (a or b) and all(isinstance(x, dict) for x in a + b):
        return _compare_items(a, b, path)
    return [] if a == b else [Change(path, "changed", a, b)]   # scalars, and lists of scalars as one value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _compare_maps(a: dict, b: dict, path: str) -> list[Change]:
    added = [k for k in b if k not in a]
    # A source or stage moved to a new name with the same settings is one rename, not a removal + an addition.
    renamed: dict[str, str] = {}
    for k in (k for k in a if k not in b and isinstance(a[k], dict)):
        twin = next((n for n in added if n not in renamed.values() and b[n] == a[k]), None)
        if twin:
            renamed[k] = twin
    out: list[Change] = []
    for k in a:
        if k in renamed:
            out.append(Change(_join(path, renamed[k]), "renamed", k, renamed[k]))
        elif k not in b:
            out.append(Change(_join(path, k), "removed", a[k], None))
        else:
            out += compare(a[k], b[k], _join(path, k))
    out += [Change(_join(path, k), "added", None, b[k]) for k in added if k not in renamed.values()]
    return out


def _labels(items: list[dict]) -> tuple[list[tuple], list[str]]:
    """Each item's identity, and a label that is unique on its side ("dedup:minhash", "length#2")."""
    ids = [tuple(str(x[k]) for k in _IDENTITY if x.get(k) is not None) for x in items]
    labels = []
    for i, ident in enumerate(ids):
        label = ":".join(ident) or "item"
        nth = ids[:i].count(ident)
        labels.append(f"{label}#{nth + 1}" if nth or ids.count(ident) > 1 else label)
    return ids, labels


def _compare_items(a: list[dict], b: list[dict], path: str) -> list[Change]:
    """Items that are equal and in order match first (a diff of the sequences); the rest pair up by
    identity, in order; what is left was removed or added."""
    canon = lambda x: json.dumps(x, sort_keys=True, ensure_ascii=False)  # noqa: E731
    ids_a, lab_a = _labels(a)
    ids_b, lab_b = _labels(b)
    left_a, left_b = [], []
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, [canon(x) for x in a], [canon(x) for x in b],
                                               autojunk=False).get_opcodes():
        if tag != "equal":
            left_a += range(i1, i2)
            left_b += range(j1, j2)
    out: list[Change] = []
    for i in left_a:
        j = next((j for j in left_b if ids_b[j] == ids_a[i]), None)
        if j is None:
            out.append(Change(f"{path}[{lab_a[i]}]", "removed", a[i], None))
            continue
        left_b.remove(j)
        here = f"{path}[{lab_b[j]}]"
        # equal but not matched in order: the item moved (filters run in order, so that matters)
        out += [Change(here, "moved", i, j)] if a[i] == b[j] else compare(a[i], b[j], here)
    out += [Change(f"{path}[{lab_b[j]}]", "added", None, b[j]) for j in left_b]
    return out


def by_section(changes: list[Change]) -> list[Change]:
    order = {s: i for i, s in enumerate(SECTIONS)}
    return sorted(changes, key=lambda c: order.get(c.section, len(order)))


# --- how a change reads -----------------------------------------------------------------------------

def show_value(v: Any, width: int = 80) -> str:
    """A value as a recipe would write it: YAML flow style for sections and lists, JSON for scalars."""
    if isinstance(v, str) and "\n" not in v and v.strip() == v and v:
        s = v
    elif isinstance(v, (dict, list)):
        s = yaml.safe_dump(v, default_flow_style=True, width=10**9, allow_unicode=True, sort_keys=False).strip()
    else:
        s = json.dumps(v, ensure_ascii=False)
    return s if len(s) <= width else s[:width - 1] + "…"


MARK = {"added": "+", "removed": "-", "changed": "~", "moved": ">", "renamed": "="}


def change_text(c: Change) -> str:
    if c.op == "changed":
        return f"{c.path}: {show_value(c.before)} → {show_value(c.after)}"
    if c.op == "moved":
        return f"{c.path} moved from position {c.before + 1} to {c.after + 1}"
    if c.op == "renamed":
        return f"{c.path} renamed from {c.before}"
    return f"{c.path} added: {show_value(c.after)}" if c.op == "added" else f"{c.path} removed (was {show_value(c.before)})"
