"""Pass 1: the JSON Schema (shape, types, closed objects), its errors said in the recipe's words, and
the numbers no schema bound catches (NaN, infinity, integers past 64 bits)."""
from __future__ import annotations

import functools
import json
import math
import re
from typing import Any, Iterable

from .. import schema as sch
from ..document import Document, kind_of
from .problems import MAX_SHOWN, Problems, did_you_mean, dotted


def schema_errors(doc: Document, out: Problems) -> None:
    from jsonschema import Draft202012Validator, validators  # ~60 ms; only when validating
    # JSON Schema counts 2.0 as an integer; a batch size of 2.0 would reach the trainer as a float
    strict = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool))
    validator = validators.extend(Draft202012Validator, {"pattern": _pattern}, type_checker=strict)(sch.schema())
    for err in validator.iter_errors(doc.data):
        _explain(err, out)


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict) -> Iterable[Any]:
    """JSON Schema patterns are ECMA-262, where `$` is the end of the text; Python's `$` also matches
    before a final newline, so a name like "x\\n" would pass. Anchor with \\Z instead."""
    from jsonschema.exceptions import ValidationError as SchemaError
    if isinstance(instance, str) and not _compiled(pattern).search(instance):
        yield SchemaError(f"{instance!r} does not match {pattern!r}")


@functools.lru_cache(maxsize=None)
def _compiled(pattern: str) -> "re.Pattern[str]":
    return re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith("\\$") else pattern)


def nonfinite(doc: Document, out: Problems) -> None:
    """NaN and infinity pass every JSON Schema bound (each comparison is false), then break training
    late; integers past 64 bits do not fit anything downstream. Refuse both where they are written."""
    def walk(v: Any, path: tuple) -> None:
        if isinstance(v, float) and not math.isfinite(v):
            out.add(path, f"{dotted(path)}: {v} is not a usable number (NaN and infinity are not allowed)", key=False)
        elif isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 2 ** 63:
            out.add(path, f"{dotted(path)}: {v} is too large (at most 2^63 - 1)", key=False)
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(x, path + (k,))
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, path + (i,))
    walk(doc.data, ())


def _explain(err: Any, out: Problems) -> None:
    path = tuple(err.absolute_path)
    where = dotted(path)
    v, inst = err.validator, err.instance
    if v == "oneOf":
        # pick the branch that matches the value's shape and report its errors instead
        want = "object" if isinstance(inst, dict) else "array" if isinstance(inst, list) else None
        subs = [e for e in err.context if sch._deref(err.validator_value[e.schema_path[0]]).get("type") == want]
        if subs:
            for e in subs:
                _explain(e, out)
        else:
            out.add(path, f"{where}: expected {err.schema.get('description', 'another shape').rstrip('.').lower()}")
        return
    if v == "additionalProperties":
        allowed = sch.keys_at(err.schema, inst)
        for extra in [k for k in inst if k not in allowed]:
            section = dotted(path) if path else "the recipe's top level"
            hint = did_you_mean(extra, allowed) if len(out) < MAX_SHOWN else ""   # difflib is slow x 50,000
            out.add(path + (extra,), f"unknown key '{extra}' in {section}{hint}", key=True)
        return
    if v == "required":
        missing = re.findall(r"'([^']+)' is a required property", err.message)
        name = missing[0] if missing else err.message
        out.add(path, f"{where}: missing required key '{name}'")
        return
    if v == "enum":
        opts = [str(o) for o in err.validator_value]
        if out.secret(path):
            out.add(path, f"{where}: the value (from the environment) is not allowed; expected one of: {', '.join(opts)}")
            return
        hint = did_you_mean(str(inst), opts) if isinstance(inst, str) else f"; expected one of: {', '.join(opts)}"
        out.add(path, f"{where}: {inst!r} is not allowed{hint}")
        return
    if v == "type":
        want = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        got = kind_of(inst)
        word = re.fullmatch(r"\^(\w+)\$", err.schema.get("pattern", ""))   # a string that must be one word
        want = [{"object": "a mapping", "array": "a list", "null": "null",
                 "string": f"'{word.group(1)}'" if word else "string"}.get(w, w) for w in want]
        shown = "" if inst is None or out.secret(path) else " " + json.dumps(inst, ensure_ascii=False)[:60]
        out.add(path, f"{where}: expected {' or '.join(want)}, got {got}{shown}")
        return
    if "propertyNames" in err.schema_path:
        out.add(path + (inst,), f"{where}: the name {inst!r} does not match {err.schema.get('pattern')} "
                                "(names are letters, digits, _ and -, starting with a letter)")
        return
    if v == "const":
        return  # the filter branch picked by `kind` always matches its own const
    if v == "pattern" and path == ("recipe",):
        out.add(path, f"recipe: {'the value' if out.secret(path) else repr(inst)} cannot be a recipe name: it names "
                      "the run folder runs/<recipe> and cache entries, so it is letters, digits, _, . and -, "
                      "starting with a letter, digit or _")
        return
    if v == "pattern" and re.fullmatch(r"\^(\w+)\$", err.validator_value) and not out.secret(path):
        # a string that must be one word, e.g. micro_batch_size: auto
        types = err.schema.get("type")
        others = [t for t in (types if isinstance(types, list) else [types]) if t != "string"]
        word = err.validator_value[1:-1]
        hint = did_you_mean(inst, [word])
        out.add(path, f"{where}: {inst!r} is not allowed; expected {' or '.join(others + [repr(word)])}"
                      f"{hint if 'did you mean' in hint else ''}")
        return
    if out.secret(path):
        out.add(path, f"{where}: the value (from the environment) is not allowed here ({err.validator} "
                      f"{json.dumps(err.validator_value)[:60]})")
        return
    out.add(path, f"{where}: {err.message}")
