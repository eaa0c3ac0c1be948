"""Document -> Recipe, or every problem at once. Two passes: the JSON Schema (shape, types, closed
objects), then the checks a schema cannot express (names that refer to each other, ratios, files)."""
from __future__ import annotations

import difflib
import functools
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable

from ..errors import RecipeError, ValidationError
from ..paths import READABLE, data_files
from . import model, schema as sch, secrets
from .load import Document, display, gc_paused, kind_of

from .model import CHAT_TEMPLATES, DEEPSPEED_PRESETS
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


class _Problems(list):
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


# --- pass 1: the schema ----------------------------------------------------------------------------

def _schema_errors(doc: Document, out: _Problems) -> None:
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


def _nonfinite(doc: Document, out: _Problems) -> None:
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


def _explain(err: Any, out: _Problems) -> None:
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


# --- pass 2: meaning -------------------------------------------------------------------------------

def _semantic(d: dict, doc: Document, out: _Problems) -> None:
    sources, groups = d["sources"], d["groups"]
    if not sources and not (d["meta"] and isinstance(d["meta"]["tasks"], list)):
        out.add(("recipe",), "sources: a recipe needs at least one source (only a `meta:` recipe whose tasks are "
                             "all explicit files can do without)", key=True)
    names = list(sources) + list(groups)
    for g, members in groups.items():
        if g in sources:
            out.add(("groups", g), f"group '{g}' has the same name as a source; rename one", key=True)
        for i, m in enumerate(members):
            if m not in sources:
                out.add(("groups", g, i), f"groups.{g}: unknown source '{m}'{did_you_mean(m, sources)}")

    def check_mix(mix: dict | None, path: tuple) -> None:
        if mix is None:
            return
        seen: dict[str, str] = {}
        for k, ratio in mix.items():
            if k not in names:
                out.add(path + (k,), f"{dotted(path)}: unknown source or group '{k}'{did_you_mean(k, names)}", key=True)
                continue
            if ratio <= 0:
                out.add(path + (k,), f"{dotted(path)}.{k}: a share must be positive, got {ratio} "
                                     "(leave the source out of the mix instead)")
            for s in groups.get(k, [k]):
                if s in seen:
                    out.add(path + (k,), f"{dotted(path)}: source '{s}' is in the mix twice (via '{seen[s]}' and '{k}')", key=True)
                seen[s] = k
        total = sum(r for r in mix.values() if isinstance(r, (int, float)))
        if abs(total - 1.0) > 1e-6 and all(r > 0 for r in mix.values()):
            out.add(path, f"{dotted(path)}: shares must sum to 1 (they are shares of the final mix), "
                          f"they sum to {total:g}")

    def check_size(size: Any, path: tuple) -> None:
        if size is None:
            return
        if isinstance(size, int) and size < 1:
            out.add(path, f"{dotted(path)}: a row count must be at least 1, got {size}")
        elif isinstance(size, float) and not 0 < size <= 1:
            out.add(path, f"{dotted(path)}: a fraction must be in (0, 1], got {size} "
                          "(write an integer for a row count)")

    def check_train(t: dict, path: tuple) -> None:
        if not all(isinstance(t[k], int) and t[k] >= 1 for k in ("batch_size", "world_size")) or \
                not (t["micro_batch_size"] == "auto" or isinstance(t["micro_batch_size"], int) and t["micro_batch_size"] >= 1):
            return   # the schema pass has reported it
        if t["micro_batch_size"] == "auto":   # auto picks a divisor of batch_size / world_size
            if t["batch_size"] % t["world_size"]:
                out.add(path + ("batch_size",), f"{dotted(path)}: batch_size {t['batch_size']} is not a multiple of "
                              f"world_size {t['world_size']}; every process must get the same number of sequences")
            problem = None
        else:
            problem = model.batch_problem(t["batch_size"], t["micro_batch_size"], t["world_size"])
        if problem:
            out.add(path + ("batch_size",), f"{dotted(path)}: {problem}")
        ds = t["deepspeed"]
        if ds is not None and ds not in DEEPSPEED_PRESETS:
            p = (doc_dir / ds)
            if not ds.endswith(".json"):
                out.add(path + ("deepspeed",), f"{dotted(path)}.deepspeed: unknown preset '{ds}'"
                                               f"{did_you_mean(ds, DEEPSPEED_PRESETS)} (or give a path to a .json file)")
            elif not p.is_file():
                out.add(path + ("deepspeed",), f"{dotted(path)}.deepspeed: file not found: {ds}")
            else:
                try:
                    if not isinstance(json.loads(p.read_text()), dict):
                        raise ValueError("not a JSON object")
                except ValueError as e:
                    out.add(path + ("deepspeed",), f"{dotted(path)}.deepspeed: {ds} is not a valid DeepSpeed JSON ({e})")

    doc_dir = doc.files[0].parent
    # sources
    for name, s in sources.items():
        p = ("sources", name)
        if s["format"] == "fields" and not s["fields"]:
            out.add(p + ("format",), f"sources.{name}: format 'fields' needs a `fields:` mapping (user, assistant, ...)")
        if s["format"] != "fields" and s["fields"]:
            out.add(p + ("fields",), f"sources.{name}: `fields:` only applies to format 'fields' (this source is '{s['format']}')", key=True)
        if s["format"] == "fields" and s["fields"]:
            _check_templates(s["fields"], p + ("fields",), out)
        _check_source_origin(name, s, doc_dir, out)
    # filters
    for i, f in enumerate(d["filters"]):
        for j, s in enumerate(f.get("sources") or []):
            if s not in sources:
                out.add(("filters", i, "sources", j), f"filters[{i}].sources: unknown source '{s}'{did_you_mean(s, sources)}")
        for key in ("pattern",):
            if f.get(key):
                _check_regex(f[key], ("filters", i, key), out)
        for j, pat in enumerate((f.get("patterns") or []) + f.get("extra_patterns", [])):
            _check_regex(pat, ("filters", i), out)
        if f["kind"] == "toxicity" and not (doc_dir / f["model_path"]).exists():
            out.add(("filters", i, "model_path"), f"filters[{i}].model_path: no detoxify checkpoint at {f['model_path']}; "
                    "weights cannot be downloaded here: fetch one (e.g. toxic_original-c1212f89.ckpt) elsewhere and point model_path at it")
        if f["kind"] == "exclude" and not (doc_dir / f["file"]).is_file():
            out.add(("filters", i, "file"), f"filters[{i}].file: no file at {f['file']} (relative to the recipe); "
                    "it lists the texts to keep out of training, one JSON object per line")
    # mix / stages
    if d["stages"]:
        if d["mix"] is not None:
            out.add(("mix",), "a recipe with `stages:` sets `mix` in each stage, not at the top level", key=True)
        order = list(d["stages"])
        for i, (name, st) in enumerate(d["stages"].items()):
            p = ("stages", name)
            if name == "before" and d["evaluate"]["before"]:
                out.add(p, "stages.before: `before` is the report's row for the starting model (evaluate.before); "
                           "rename the stage", key=True)
            check_mix(st["mix"], p + ("mix",))
            check_size(st["size"], p + ("size",))
            check_train({**d["train"], **st["train"]}, p + ("train",))
            if st["from"] is not None:
                if st["from"] not in order:
                    out.add(p + ("from",), f"stages.{name}.from: unknown stage '{st['from']}'{did_you_mean(st['from'], order)}")
                elif order.index(st["from"]) >= i:
                    out.add(p + ("from",), f"stages.{name}.from: '{st['from']}' does not come before '{name}'; a stage starts from an earlier one")
            start = st["from"] if st["from"] is not None else (order[i - 1] if i else None)
            if start in d["stages"] and d["stages"][start]["skip"] and not st["skip"] and not d["model"]["init_from"]:
                out.add(p, f"stages.{name}: it starts from stage '{start}', which is skipped; set model.init_from "
                           f"to that stage's saved weights (e.g. runs/<recipe>/{start}/final)")
            if st["ewc"] is not None and i == 0:
                out.add(p + ("ewc",), f"stages.{name}.ewc: the first stage has no earlier stage to protect", key=True)
    else:
        check_mix(d["mix"], ("mix",))
    check_size(d["size"], ("size",))
    check_train(d["train"], ("train",))
    # split
    sp = d["split"]
    if sp["strategy"] in ("stratified", "temporal") and not sp["by"]:
        out.add(("split",), f"split: strategy '{sp['strategy']}' needs `by:` (the field to {'stratify' if sp['strategy'] == 'stratified' else 'order'} by)")
    # template
    chat = d["template"]["chat"]
    if chat not in CHAT_TEMPLATES:
        if not chat.endswith(".jinja"):
            out.add(("template", "chat"), f"template.chat: unknown template '{chat}'{did_you_mean(chat, CHAT_TEMPLATES)} (or a path to a .jinja file)")
        elif not (doc_dir / chat).is_file():
            out.add(("template", "chat"), f"template.chat: template file not found: {chat}")
    # model
    base = d["model"]["base"]
    if base.startswith((".", "/")) and not (doc_dir / base).exists():
        out.add(("model", "base"), f"model.base: no model at {base}")
    adapter = d["model"]["adapter"]
    if adapter["type"] == "none" and adapter["trainable_tokens"]:
        out.add(("model", "adapter", "trainable_tokens"), "model.adapter.trainable_tokens: with adapter type none "
                "every embedding row trains already; remove trainable_tokens or use type lora")
    # meta
    m = d["meta"]
    if m:
        if d["stages"]:
            out.add(("meta",), "`meta` and `stages` cannot be combined: FOMAML trains one meta-stage", key=True)
        ds = d["train"]["deepspeed"] or ""
        if "zero3" in ds or (ds.endswith(".json") and _zero_stage(doc_dir / ds) == 3):
            out.add(("train", "deepspeed"), "train.deepspeed: ZeRO-3 cannot be used with `meta`: the FOMAML inner loop "
                                            "needs unpartitioned parameters; use zero2 or zero1")
        t = m["tasks"]
        if isinstance(t, dict):
            if t["source"] not in sources:
                out.add(("meta", "tasks", "source"), f"meta.tasks.source: unknown source '{t['source']}'{did_you_mean(t['source'], sources)}")
        else:
            bad = False
            for i, task in enumerate(t):
                for part in ("support", "query", "test"):
                    for j, f in enumerate(task[part]):
                        problem = _source_path_problem(doc_dir, f)
                        if problem:
                            bad = True
                            out.add(("meta", "tasks", i, part, j), f"meta.tasks[{i}].{part}: {problem}")
            if not bad:
                _explicit_layout(doc_dir, m, out)
        world = d["train"]["world_size"]
        if m["outer"]["meta_batch_size"] % world:
            out.add(("meta", "outer", "meta_batch_size"),
                    f"meta.outer.meta_batch_size: {m['outer']['meta_batch_size']} tasks do not divide over "
                    f"train.world_size {world} processes (meta_batch_size = tasks per process x processes)")
        if m["few_shot_eval"]["answer_pattern"] is not None:
            _check_regex(m["few_shot_eval"]["answer_pattern"], ("meta", "few_shot_eval", "answer_pattern"), out)
        ms = m["split"]
        total = ms["support"] + ms["query"] + ms["test"]
        if abs(total - 1) > 1e-6:
            out.add(("meta", "split"), f"meta.split: support + query + test must sum to 1, they sum to {total:g}")
        if ms["strategy"] in ("stratified", "temporal") and not ms["by"]:
            out.add(("meta", "split"), f"meta.split: strategy '{ms['strategy']}' needs `by:`")


def _explicit_layout(doc_dir: Path, m: dict, out: _Problems) -> None:
    """Explicit tasks (prompt/response/metadata files): the columns, enough rows for the inner loop
    and the k-shot sets after support_max_samples, enough tasks with test rows to hold out, and no
    test row that is also a support or query row (k-shot sets are drawn from support + query)."""
    from .layout import read_prompt_response

    tasks, shots = m["tasks"], max(m["few_shot_eval"]["shots"])
    with_test = 0
    for i, task in enumerate(tasks):
        texts: dict[str, list[tuple[str, str]]] = {}
        for part in ("support", "query", "test"):
            texts[part] = []
            for j, f in enumerate(task[part]):
                rows, problem = read_prompt_response(doc_dir / f)
                if problem:
                    out.add(("meta", "tasks", i, part, j), f"meta.tasks[{i}].{part}: {f}: {problem}")
                    return
                texts[part] += rows
        cap = task["support_max_samples"]
        support = min(len(texts["support"]), cap) if cap else len(texts["support"])
        name = task["name"]
        if support < m["inner"]["batch_size"]:
            out.add(("meta", "tasks", i, "support"), f"meta.tasks[{i}] ({name}): {support} support rows"
                    f"{' after support_max_samples' if cap else ''}, fewer than meta.inner.batch_size "
                    f"{m['inner']['batch_size']}")
        if not texts["query"]:
            out.add(("meta", "tasks", i, "query"), f"meta.tasks[{i}] ({name}): the query files have no rows")
        if texts["test"]:
            with_test += 1
            leaked = set(texts["test"]) & (set(texts["support"]) | set(texts["query"]))
            if leaked:
                out.add(("meta", "tasks", i, "test"), f"meta.tasks[{i}] ({name}): {len(leaked)} test rows are also "
                        "support or query rows; k-shot sets are drawn from support + query, so they would be "
                        "evaluated on rows they adapted to. Remove them from one side")
            if support + len(texts["query"]) < shots:
                out.add(("meta", "tasks", i), f"meta.tasks[{i}] ({name}): {support + len(texts['query'])} support + "
                        f"query rows, fewer than the largest few-shot size {shots}")
    held = m["few_shot_eval"]["held_out_tasks"]
    if with_test < held:
        out.add(("meta", "few_shot_eval", "held_out_tasks"),
                f"meta.few_shot_eval.held_out_tasks: {held} tasks to hold out, but only {with_test} explicit "
                "tasks have `test:` files; give more tasks test files or hold out fewer")
    if len(tasks) - held < 1:
        out.add(("meta", "few_shot_eval", "held_out_tasks"),
                f"meta.few_shot_eval.held_out_tasks: {held} of {len(tasks)} tasks held out leaves none to train on")


def _check_templates(fields: dict, path: tuple, out: _Problems) -> None:
    """Compile every `fields:` template now: a syntax error is the recipe's, not the first row's."""
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    env = ImmutableSandboxedEnvironment()
    parts = [((k,), v) for k, v in fields.items() if k != "meta"]
    parts += [(("meta", k), v) for k, v in (fields.get("meta") or {}).items()]
    for sub, src in parts:
        if not isinstance(src, str):
            continue
        try:
            env.parse(src)
        except TemplateSyntaxError as e:
            out.add(path + sub, f"{dotted(path + sub)}: invalid template: {e.message} (line {e.lineno} of the "
                                "template)", key=False)


def _zero_stage(p: Path) -> int | None:
    try:
        return json.loads(p.read_text()).get("zero_optimization", {}).get("stage")
    except (OSError, ValueError, AttributeError):
        return None


def _check_regex(pattern: str, path: tuple, out: _Problems) -> None:
    try:
        re.compile(pattern)
    except re.error as e:
        out.add(path, f"{dotted(path)}: invalid regular expression {pattern!r}: {e}")


_HUB_ONLY = ("config", "revision", "data_files", "streaming", "shuffle")


def _check_source_origin(name: str, s: dict, doc_dir: Path, out: _Problems) -> None:
    """Where a source's rows come from: a local path, a remote URL, or a hub dataset (its shape
    checked against the local hub cache only: validate never downloads)."""
    from ..sources import hub, remote
    p = ("sources", name)
    if (s["path"] is None) == (s["dataset"] is None):
        out.add(p, f"sources.{name}: give either `path` (a file, folder, glob or URL) or `dataset` (a hub dataset "
                   "id such as HuggingFaceH4/ultrachat_200k)" + (", not both" if s["path"] else ""))
        return
    if s["dataset"] is None:
        defaults = sch.at(("sources", name))["properties"]
        for key in _HUB_ONLY + ("split",):
            if s[key] != defaults[key]["default"]:
                out.add(p + (key,), f"sources.{name}.{key}: only applies to a hub `dataset` (this source reads `path`)")
        if remote.is_remote(s["path"]):
            problem = _remote_problem(s["path"])
        else:
            problem = _source_path_problem(doc_dir, s["path"])
        if problem:
            out.add(p + ("path",), f"sources.{name}.path: {problem}")
        return
    if s["shuffle"] is not None and s["limit"] is None:
        out.add(p + ("shuffle",), f"sources.{name}.shuffle: draws a sample of `limit` rows; set `limit` too")
    src = model._build(model.Source, s)
    for key, message in hub.shape_problems(src):
        out.add(p + (key,), f"sources.{name}.{key}: {message}")


def _remote_problem(url: str) -> str | None:
    name = url.split("?", 1)[0].rstrip("/")
    if not name.endswith(READABLE) and not any(c in name.rsplit("/", 1)[-1] for c in "*?["):
        return f"cannot read {url}: a remote file must end in .jsonl, .json, .csv or .parquet"
    return None


def _source_path_problem(base: Path, path: str) -> str | None:
    p = base / path
    if any(c in path for c in "*?["):
        hits, _ = data_files(path, base)   # symlink loops are walked once, as the loader will
        return None if hits else f"the glob {path} matches no .jsonl/.json/.csv/.parquet file"
    if p.is_dir():
        return None  # a folder of data files, or a saved `datasets` dataset; the loader says which
    if not p.exists():
        return f"file not found: {path} (paths are relative to the recipe file)"
    if not path.endswith(READABLE):
        return f"cannot read {Path(path).suffix or 'files without an extension'}; use {', '.join(READABLE)}"
    return None


# --- entry point -----------------------------------------------------------------------------------

def validate(doc: Document) -> model.Recipe:
    with gc_paused():
        return _validate(doc)


def _validate(doc: Document) -> model.Recipe:
    out = _Problems(doc)
    _nonfinite(doc, out)
    _schema_errors(doc, out)
    full = sch.apply_defaults(doc.data)
    if not out:
        _semantic(full, doc, out)
    else:
        # Report what we can of the meaning too, so one run shows as much as possible; a shape error
        # may make these checks trip, and then the schema's messages are the ones that matter.
        try:
            _semantic(full, doc, out)
        except (KeyError, TypeError, AttributeError, ValueError, ArithmeticError, IndexError):
            pass
    if out:
        unique = {(str(e.where), e.message): e for e in out}   # one message per place, however many rules hit it
        problems = sorted(unique.values(), key=lambda e: (e.where.file if e.where else "", e.where.line or 0 if e.where
                                                          else 0, e.where.col or 0 if e.where else 0))
        raise ValidationError(problems[:MAX_SHOWN], display(doc.files[0]), hidden=max(0, len(problems) - MAX_SHOWN))
    return model.build(_canonical(full), doc.files[0], frozenset(doc.secrets))


def _canonical(full: dict) -> dict:
    """Stage settings resolved: a stage without `size` takes the recipe's. `extends` was consumed by
    the loader: the canonical document is the merged result, not how it was assembled."""
    full.pop("extends", None)
    if full["stages"]:
        for st in full["stages"].values():
            if st["size"] is None:
                st["size"] = full["size"]
    return full
