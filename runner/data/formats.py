"""Formats: raw rows -> canonical records {"id", "messages": [{"role", "content"}], "meta", "source"}.

    alpaca           instruction, input, output; optional system and history ([[user, assistant], ...]).
                     The user turn is instruction and input joined by a newline.
    sharegpt         conversations: [{from, value}], `from` mapped to a role by the source's `roles:`
                     (by default function_call -> assistant, observation -> tool); optional system;
                     a `tools` field is kept as meta["tools"].
    messages         OpenAI style messages: [{role, content}] with roles system/user/assistant/tool;
                     `tools` kept as meta["tools"].
    prompt_response  prompt, response, optional metadata (an object or a JSON string) -> meta.
    text             text -> one assistant turn and no user turn: plain text is trained on whole
                     (continued pre-training); an empty user turn would teach the model to answer
                     nothing. The template adds its system prompt as for any record.
    fields           sandboxed Jinja over the raw row (runner/data/fields.py).

The id is the row's own when it has one (fields.id, else an `id` key holding a string or integer),
else the sha1 of the messages, so it is stable across runs and equal for equal conversations.
Every record must end with a non-empty assistant answer and have no empty user turn; a row that
breaks a rule is quarantined with its file, line and reason (`on_error: fail` stops there instead)."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from ..errors import RecipeError
from ..recipe import model
from ..recipe.model import ROLES
from ..sources.readers import Raw, loads, value_problem
from .fields import Fields
from .mapped import MapError, Mapper, Messages, msg as _msg
from .io import dumps
from .job import serial
from .loading import RowRules, load_job

RAW_CHARS = 2000   # how much of a bad row the quarantine keeps
# A lone surrogate: JSON can spell one ("\ud800"), but it is not text and cannot be written as UTF-8
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


# --- per-format mappers ------------------------------------------------------------------------

def _get(row: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = row.get(key)
    if value is None:
        if required:
            raise MapError("null_field", f"'{key}' is null") if key in row else \
                MapError("missing_field", f"no '{key}' field")
        return None
    if not isinstance(value, str):
        raise MapError("wrong_type", f"'{key}' must be a string, got {type(value).__name__}")
    return value


def _jsonable(value: Any, key: str) -> Any:
    """Meta taken from the raw row as is must survive JSON (parquet and datasets can hold bytes, dates)."""
    try:
        dumps(value)
    except (TypeError, ValueError):
        raise MapError("wrong_type", f"'{key}' holds a value JSON cannot store") from None
    return value


def _tools(row: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    if row.get("tools") not in (None, "", []):
        meta["tools"] = _jsonable(row["tools"], "tools")
    return meta


def _alpaca(row: dict[str, Any]) -> tuple[Messages, dict[str, Any], None]:
    instruction, inp = _get(row, "instruction"), _get(row, "input", required=False)
    output, system = _get(row, "output"), _get(row, "system", required=False)
    msgs = [_msg("system", system)] if system else []
    history = row.get("history") or []
    if not isinstance(history, list):
        raise MapError("wrong_type", f"'history' must be a list of [user, assistant] pairs, got {type(history).__name__}")
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise MapError("wrong_type", f"history[{i}] must be a [user, assistant] pair of strings")
        msgs += [_msg("user", pair[0]), _msg("assistant", pair[1])]
    msgs += [_msg("user", "\n".join(p for p in (instruction, inp) if p)), _msg("assistant", output)]
    return msgs, {}, None


def _list_field(row: dict[str, Any], name: str) -> list:
    value = row.get(name)
    if value is None:
        raise MapError("null_field", f"'{name}' is null") if name in row else \
            MapError("missing_field", f"no '{name}' field")
    if not isinstance(value, list):
        raise MapError("wrong_type", f"'{name}' must be a list, got {type(value).__name__}")
    return value


def _sharegpt(roles: dict[str, str]) -> Mapper:
    def mapper(row: dict[str, Any]) -> tuple[Messages, dict[str, Any], None]:
        conv = _list_field(row, "conversations")
        system = _get(row, "system", required=False)
        msgs = [_msg("system", system)] if system else []
        for i, turn in enumerate(conv, 1):
            if not isinstance(turn, dict):
                raise MapError("wrong_type", f"turn {i} must be an object with 'from' and 'value'")
            who = turn.get("from")
            if who not in roles:
                raise MapError("unknown_role", f"turn {i}: 'from' is {who!r}; map it to a role in the source's "
                               f"`roles:` (known: {', '.join(sorted(roles))})")
            value = turn.get("value")
            if value is None:
                raise MapError("null_field", f"turn {i}: 'value' is null")
            if not isinstance(value, str):
                raise MapError("wrong_type", f"turn {i}: 'value' must be a string, got {type(value).__name__}")
            msgs.append(_msg(roles[who], value))
        _sharegpt_order(msgs[1 if system else 0:])
        return msgs, _tools(row, {}), None
    return mapper


def _sharegpt_order(turns: Messages) -> None:
    """ShareGPT turns alternate between the asking side (user, or a tool's result) and the answering side
    (assistant, or its function call), asking first, after optional system turns at the very start
    (LLaMA-Factory reads them the same way). Anything else is a broken conversation, not a variant."""
    start = 0
    while start < len(turns) and turns[start]["role"] == "system":
        start += 1
    for i in range(start, len(turns)):
        role, asking = turns[i]["role"], (i - start) % 2 == 0
        if role == "system":
            raise MapError("bad_turn_order", f"turn {i + 1}: a system turn in the middle of the conversation "
                                             "(only at the start)")
        if asking and role == "assistant":
            what = "the conversation starts" if i == start else f"turn {i}"
            raise MapError("bad_turn_order", f"turn {i + 1}: an assistant turn where a user turn belongs ({what} "
                                             "with an assistant turn already); turns must alternate")
        if not asking and role in ("user", "tool"):
            raise MapError("bad_turn_order", f"turn {i + 1}: a {role} turn right after another user or tool turn; "
                                             "turns must alternate user/assistant")
        if asking and role == "tool" and i == start:
            raise MapError("bad_turn_order", f"turn {i + 1}: a tool result with no assistant call before it")


def _messages(row: dict[str, Any]) -> tuple[Messages, dict[str, Any], None]:
    raw = _list_field(row, "messages")
    msgs = []
    for i, m in enumerate(raw, 1):
        if not isinstance(m, dict):
            raise MapError("wrong_type", f"message {i} must be an object with 'role' and 'content'")
        if m.get("role") not in ROLES:
            raise MapError("unknown_role", f"message {i}: role {m.get('role')!r} is not one of {', '.join(ROLES)}")
        if m.get("content") is None and "content" in m:
            raise MapError("null_field", f"message {i}: 'content' is null")
        if m["role"] == "system" and any(x["role"] != "system" for x in msgs):
            raise MapError("bad_turn_order", f"message {i}: a system message in the middle of the conversation "
                                             "(only at the start)")
        if m["role"] == "tool" and not (msgs and msgs[-1]["role"] in ("assistant", "tool")):
            raise MapError("bad_turn_order", f"message {i}: a tool result with no assistant call before it")
        if not isinstance(m.get("content"), str):
            raise MapError("wrong_type", f"message {i}: 'content' must be a string, got {type(m.get('content')).__name__}")
        msgs.append(_msg(m["role"], m["content"]))
    return msgs, _tools(row, {}), None


def _prompt_response(row: dict[str, Any]) -> tuple[Messages, dict[str, Any], None]:
    prompt, response = _get(row, "prompt"), _get(row, "response")
    meta = row.get("metadata")
    if isinstance(meta, str):
        try:
            meta = loads(meta) if meta.strip() else {}
        except ValueError as e:
            raise MapError("bad_metadata", f"'metadata' is not valid JSON: {value_problem(e, line=False)}") from None
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise MapError("bad_metadata", f"'metadata' must be a JSON object, got {type(meta).__name__}")
    return [_msg("user", prompt), _msg("assistant", response)], _jsonable(meta, "metadata"), None


def _text(row: dict[str, Any]) -> tuple[Messages, dict[str, Any], None]:
    return [_msg("assistant", _get(row, "text"))], {}, None


def make_mapper(name: str, source: model.Source) -> Mapper:
    return mapper_for(name, source.format, source.fields, source.roles)


def mapper_for(name: str, fmt: str, fields: model.Fields | None, roles: Mapping[str, str]) -> Mapper:
    if fmt == "fields":
        if fields is None:
            raise RecipeError(f"sources.{name}: format 'fields' needs a `fields:` mapping")
        return Fields(name, fields)
    if fmt == "sharegpt":
        return _sharegpt(dict(roles))
    return {"alpaca": _alpaca, "messages": _messages, "prompt_response": _prompt_response, "text": _text}[fmt]


# --- records -----------------------------------------------------------------------------------

def _check(msgs: Messages) -> None:
    if not any(m["role"] == "assistant" for m in msgs):
        raise MapError("no_answer", "the conversation has no assistant turn")
    for i, m in enumerate(msgs, 1):
        if m["role"] in ("user", "assistant") and not m["content"].strip():
            raise MapError("empty_turn", f"turn {i} ({m['role']}) is empty")
    if msgs[-1]["role"] != "assistant":
        raise MapError("no_answer", f"the conversation ends with a {msgs[-1]['role']} turn, not an assistant answer")


def content_id(msgs: Messages) -> str:
    return hashlib.sha1(dumps(msgs).encode("utf-8")).hexdigest()


def to_record(name: str, row: dict[str, Any], mapper: Mapper) -> dict[str, Any]:
    msgs, meta, rid = mapper(row)
    _check(msgs)
    if rid is None:
        own = row.get("id")
        if isinstance(own, str) and own.strip() or (isinstance(own, int) and not isinstance(own, bool)):
            rid = str(own)
    if any(_LONE_SURROGATE.search(m["content"]) for m in msgs) or (meta and _LONE_SURROGATE.search(dumps(meta))) \
            or (rid is not None and _LONE_SURROGATE.search(rid)):
        raise MapError("invalid_unicode", "the row holds a lone surrogate (e.g. a \\ud800 escape), which is not text")
    return {"id": rid if rid is not None else content_id(msgs), "messages": msgs, "meta": meta, "source": name}


def quarantine_entry(name: str, raw: Raw, code: str, detail: str) -> dict[str, Any]:
    if raw.data is not None:
        text = json.dumps(raw.data, ensure_ascii=False, default=str)
    else:
        text = raw.text or ""
    if len(text) > RAW_CHARS:
        text = text[:RAW_CHARS] + f"... ({len(text) - RAW_CHARS} more characters)"
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")   # lone surrogates as \udXXX
    return {"source": name, "file": raw.file, "line": raw.line, "row": raw.row, "code": code,
            "reason": f"{code}: {detail}", "raw": text}


def place(q: dict[str, Any]) -> str:
    if q["line"] is not None:
        return f"{q['file']}:{q['line']}"
    return f"{q['file']} row {q['row']}" if q["row"] is not None else q["file"]


_RULES = RowRules(mapper_for, to_record, quarantine_entry, place)


def _listed(name: str, source: model.Source, specs: list[str], base_dir: Path, seed: int
            ) -> tuple[list[dict], list[dict], dict[str, Any]]:
    records: list[dict] = []
    quarantine: list[dict] = []
    job = load_job(name, source, specs, Path(base_dir), seed, _RULES, fill=False, put_aside=quarantine.append,
                   write=lambda text: records.extend(json.loads(x) for x in text.split("\n")[:-1]))
    return records, quarantine, serial(job)


def stream_source(name: str, source: model.Source, base_dir: Path, seed: int, *, write: Callable[[str], Any],
                  put_aside: Callable[[dict], Any], executor: Any = None) -> dict[str, Any]:
    """Load one source on an executor (runner/data/loading.py): record lines, `{{name}}` placeholders
    filled, to write() in input order, quarantine entries to put_aside(); -> stats. The source's kind
    (runner.sources) reads its raw rows, `limit` applied."""
    job = load_job(name, source, [source.path or source.dataset], Path(base_dir), seed, _RULES, fill=True,
                   write=write, put_aside=put_aside)
    return executor.run(job) if executor is not None else serial(job)


def load_source(name: str, source: model.Source, base_dir: Path, seed: int = 0
                ) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """Read and map one source -> (records, quarantine entries, stats), placeholders as written. Paths
    resolve against base_dir (the recipe's folder); quarantine entries are {source, file, line, row,
    code, reason, raw}. A hub `dataset` is read by runner.sources.hub (`seed` draws its `shuffle` sample)."""
    return _listed(name, source, [source.path or source.dataset], base_dir, seed)


def load_paths(name: str, paths: Iterable[str], fmt: str, base_dir: Path) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """Files named outside `sources:` (explicit meta-learning tasks): quarantine bad rows and go on."""
    roles = MappingProxyType(_DEFAULT_ROLES)
    src = model.Source(path="", dataset=None, config=None, split="train", revision=None, data_files=None,
                       streaming=False, shuffle=None, format=fmt, fields=None, roles=roles, on_error="skip",
                       priority=0, limit=None, placeholders=MappingProxyType({}))
    return _listed(name, src, list(paths), base_dir, 0)


_DEFAULT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "function_call": "assistant", "observation": "tool", "tool": "tool"}
