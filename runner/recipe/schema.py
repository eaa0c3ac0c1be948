"""The JSON Schema is the single source of truth for keys, types, defaults and docs. This module reads
it and answers questions about it: the defaults for a document, the sub-schema at a path."""
from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

# A source checkout reads schemas/ at the repository root (so `python -m runner` works without an install,
# and an editable install never serves a stale copy); an installed wheel ships the same file as runner.schemas.
_CHECKOUT = Path(__file__).resolve().parents[2] / "schemas" / "recipe.schema.json"


@functools.lru_cache(maxsize=None)
def schema() -> dict:
    return json.loads(schema_text())


def schema_text() -> str:
    if _CHECKOUT.is_file():
        return _CHECKOUT.read_text(encoding="utf-8")
    return resources.files("runner.schemas").joinpath("recipe.schema.json").read_text(encoding="utf-8")


def _deref(node: dict) -> dict:
    """Follow a local $ref, keeping sibling keywords (description, default, x-inherit) of the referrer."""
    while "$ref" in node:
        target = schema()
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _branches(node: dict, value: Any) -> Iterator[dict]:
    """The sub-schemas that apply to `value` under `node`: itself, plus an if/then whose `if` matches
    (that is how filters pick their schema by `kind`), plus the oneOf branch of the value's type."""
    node = _deref(node)
    yield node
    for sub in node.get("allOf", []):
        cond = sub.get("if", {}).get("properties", {})
        if isinstance(value, dict) and all(value.get(k) == c.get("const") for k, c in cond.items()):
            yield from _branches(sub["then"], value)
    for sub in node.get("oneOf", []):
        sub = _deref(sub)
        want = sub.get("type")
        if (want == "object" and isinstance(value, dict)) or (want == "array" and isinstance(value, list)):
            yield from _branches(sub, value)


def apply_defaults(doc: dict) -> dict:
    """Return a copy of the (valid) document with every missing key filled from the schema.
    A property marked `x-inherit` (a stage's `train`) is left partial: it overrides the recipe's."""
    return _fill(schema(), copy.deepcopy(doc))


def _fill(node: dict, value: Any) -> Any:
    if isinstance(value, dict):
        for branch in _branches(node, value):
            if branch.get("x-inherit"):
                return value
            for key, sub in branch.get("properties", {}).items():
                sub = _deref(sub)
                if key not in value and "default" in sub:
                    value[key] = copy.deepcopy(sub["default"])
                if key in value and value[key] is not None:
                    value[key] = _fill(sub, value[key])
            extra = branch.get("additionalProperties")
            if isinstance(extra, dict):
                props = branch.get("properties", {})
                for key in value:
                    if key not in props and value[key] is not None:
                        value[key] = _fill(extra, value[key])
    elif isinstance(value, list):
        for branch in _branches(node, value):
            items = branch.get("items")
            if isinstance(items, dict):
                value = [_fill(items, v) for v in value]
    return value


def at(path: tuple) -> dict | None:
    """The schema for the value at `path` (None where the schema has no such key)."""
    node = schema()
    for part in path:
        node = _deref(node)
        if isinstance(part, int):
            node = node.get("items") if isinstance(node.get("items"), dict) else None
        else:
            props = node.get("properties", {})
            if part in props:
                node = props[part]
            elif isinstance(node.get("additionalProperties"), dict):
                node = node["additionalProperties"]
            else:
                # a filter's keys live in its if/then branches: take the union
                found = None
                for sub in node.get("allOf", []):
                    cand = _deref(sub.get("then", {})).get("properties", {})
                    if part in cand:
                        found = cand[part]
                        break
                node = found
        if node is None:
            return None
    return _deref(node)


def coerce(path: tuple, value: Any, raw: str | None = None) -> Any:
    """What `--set path=raw` means here: the text as written where the schema wants a string
    (`recipe=1.10` stays "1.10"), a whole number where it wants an integer (`2.0` -> 2)."""
    node = at(path)
    if node is None or value is None:
        return value
    types = node.get("type")
    types = [types] if isinstance(types, str) else (types or [])
    if "string" in types and not isinstance(value, (str, dict, list)) \
            and not any(t in types for t in ("integer", "number", "boolean")):
        return raw.strip() if raw is not None else str(value)
    if "integer" in types and "number" not in types and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def keys_at(node: dict, value: Any = None) -> list[str]:
    """Allowed keys of an object schema (for did-you-mean)."""
    out: list[str] = []
    for b in _branches(node, value if value is not None else {}):
        out += [k for k in b.get("properties", {}) if k not in out]
    return out
