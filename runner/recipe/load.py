"""recipe.yaml -> one merged document: the file (document.py reads it), the bases it `extends`, the
`--set` overrides and `${...}` interpolation, in that order; every value keeps its position."""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

from ..errors import RecipeError, ValidationError, Where
from . import secrets
from .document import MAX_EXTENDS, MAX_EXTENDS_FILES, Document, Path_, display, parse_value, read_yaml


# --- extends ---------------------------------------------------------------------------------------

def _merge(base: Document, over: Document) -> Document:
    """Key-by-key merge (OmegaConf semantics: mappings merge, everything else - lists too - replaces)."""
    out = Document(data={}, files=over.files + [f for f in base.files if f not in over.files])

    def walk(b: Any, o: Any, path: Path_) -> Any:
        if isinstance(b, dict) and isinstance(o, dict):
            merged = {}
            for k in list(b) + [k for k in o if k not in b]:
                p = path + (k,)
                if k in o:
                    merged[k] = walk(b.get(k), o[k], p) if k in b else _copy(over, o[k], p)
                    out.keys[p] = over.keys.get(p) or base.keys.get(p)
                else:
                    merged[k] = _copy(base, b[k], p)
                    out.keys[p] = base.keys.get(p)
            out.values[path] = over.values.get(path) or base.values.get(path)
            return merged
        return _copy(over, o, path)

    def _copy(src: Document, v: Any, path: Path_) -> Any:
        for table, dst in ((src.values, out.values), (src.keys, out.keys)):
            for p, w in table.items():
                if p[:len(path)] == path:
                    dst[p] = w
        return v

    out.data = walk(base.data, over.data, ())
    return out


def load_document(file: Path, overrides: tuple[str, ...] = ()) -> Document:
    """Read a recipe with its `extends` graph and `--set` overrides; interpolation is resolved last.

    `--set extends=...` is applied, not ignored: it replaces the recipe file's own `extends:` (a list
    replaces a list, as every other --set does), with paths relative to the recipe file as if written in
    it, and the bases are read after it. That is what Hydra users do with a defaults override
    (`python app.py db=mysql` swaps the composed file) and what an OmegaConf dotlist merge means: the
    command line wins over the file. Refusing it would leave the one key the command line cannot reach."""
    file = Path(file).resolve()
    doc = read_yaml(file)
    mine = [t for t in overrides if _override_root(t) == "extends"]
    for text in mine:
        _apply_override(doc, text)
    doc = _Graph().with_bases(doc, file, ())
    for text in overrides:
        if text not in mine:
            _apply_override(doc, text)
    _interpolate(doc)
    return doc


def _override_root(text: str) -> str:
    key = text.partition("=")[0].strip()
    return re.split(r"[.\[]", key, maxsplit=1)[0]


class _Graph:
    """One load's `extends` graph. Each file is read and merged with its bases once, however many paths
    lead to it: a diamond of 49 files (each extending the two files of the level below) has 2^24 paths
    and took hours when every path re-read its files. The number of distinct files is bounded too."""

    def __init__(self) -> None:
        self.done: dict[Path, Document] = {}   # resolved path -> that file merged with its bases
        self.seen: set[Path] = set()           # every base reached so far, finished or being read

    def base(self, bfile: Path, stack: tuple, where, top: Path) -> Document:
        if bfile not in self.done:
            self.seen.add(bfile)
            if len(self.seen - {top}) + 1 > MAX_EXTENDS_FILES:   # + 1: the recipe itself
                raise ValidationError([RecipeError(f"`extends` reaches more than {MAX_EXTENDS_FILES} files "
                                                   f"from {display(top)}; the limit is {MAX_EXTENDS_FILES}: "
                                                   "merge some bases into one", where)], display(top))
            self.done[bfile] = self.with_bases(read_yaml(bfile), bfile, stack)
        return _copy_document(self.done[bfile])   # the caller rebases paths in place: never share the data

    def with_bases(self, doc: Document, file: Path, stack: tuple) -> Document:
        ext = doc.data.pop("extends", None)
        if ext is None:
            return doc
        bases = [ext] if isinstance(ext, str) else ext
        if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
            raise ValidationError([RecipeError("`extends` must be a file name or a list of file names",
                                               doc.where(("extends",)))], display(file))
        merged: Document | None = None
        for i, b in enumerate(bases):     # `extends: []` extends nothing
            bfile = (file.parent / b).resolve()
            where = doc.where(("extends",) if isinstance(ext, str) else ("extends", i))
            _check_base(b, bfile, file, stack, where)
            base = self.base(bfile, (*stack, file), where, (*stack, file)[0])
            if bfile.parent != file.parent:
                _rebase(base.data, bfile.parent, file.parent)
            merged = base if merged is None else _merge(merged, base)
        return doc if merged is None else _merge(merged, doc)


def _copy_document(doc: Document) -> Document:
    return Document(data=copy.deepcopy(doc.data), values=dict(doc.values), keys=dict(doc.keys),
                    files=list(doc.files), secrets=set(doc.secrets))


def _check_base(b: str, bfile: Path, file: Path, stack: tuple, where) -> None:
    """A base that is the recipe itself, one below it, too deep, or not a recipe file: one line at `extends`."""
    if bfile in stack or bfile == file:
        chain = " -> ".join(display(f) for f in (*stack, file, bfile))
        raise ValidationError([RecipeError(f"`extends` cycle: {chain}", where)], display(file))
    if len(stack) + 1 >= MAX_EXTENDS:
        raise ValidationError([RecipeError(f"`extends` chain is more than {MAX_EXTENDS} files deep "
                                           f"({display(stack[0] if stack else file)} -> ... -> {display(bfile)}); "
                                           "flatten it", where)], display(file))
    if bfile.is_dir():
        raise ValidationError([RecipeError(f"`extends` names a folder, not a recipe file: {b}", where)],
                              display(file))
    if bfile.exists() and not bfile.is_file():
        raise ValidationError([RecipeError(f"`extends` names {display(bfile)}, which is not a regular file; "
                                           "name a .yaml recipe", where)], display(file))
    if not bfile.is_file():
        raise ValidationError([RecipeError(f"`extends` base not found: {b} (looked for {display(bfile)})",
                                           where)], display(file))


# Keys that hold paths. A base recipe in another folder wrote them relative to itself; after the
# merge they must be relative to the recipe that extends it. ("*" is any name or list index.)
_PATH_KEYS = (("sources", "*", "path"), ("filters", "*", "model_path"), ("filters", "*", "file"), ("model", "init_from"), ("model", "base"),
              ("train", "deepspeed"), ("stages", "*", "train", "deepspeed"), ("template", "chat"),
              ("meta", "tasks", "*", "support", "*"), ("meta", "tasks", "*", "query", "*"),
              ("meta", "tasks", "*", "test", "*"))


def _is_relative_path(key: tuple, value: str) -> bool:
    if os.path.isabs(value) or "${" in value or "://" in value:   # a remote URL is not a path
        return False
    if key[-1] == "base":        # a hub id (org/name) looks like a relative path: only ./ and ../ are paths
        return value.startswith(("./", "../"))
    if key[-1] == "deepspeed":
        return value.endswith(".json")
    if key[-1] == "chat":
        return value.endswith(".jinja")
    return True


def _rebase(data: dict, src: Path, dst: Path) -> None:
    def walk(node, pattern: tuple, key: tuple):
        if not pattern:
            return
        head, rest = pattern[0], pattern[1:]
        items = (node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ())
        for k, v in list(items):
            if head != "*" and k != head:
                continue
            if not rest:
                if isinstance(v, str) and _is_relative_path(key, v):
                    node[k] = os.path.relpath(src / v, dst)
            else:
                walk(v, rest, key)
    for pattern in _PATH_KEYS:
        walk(data, pattern, pattern)


# --- --set ------------------------------------------------------------------------------------------

def _apply_override(doc: Document, text: str) -> None:
    where = Where(f"--set {text}")
    key, eq, raw = text.partition("=")
    if not eq or not key.strip():
        raise ValidationError([RecipeError("an override is KEY.PATH=VALUE, e.g. --set train.epochs=1", where)],
                              "--set")
    value = parse_value(raw, where)
    from .schema import coerce  # the schema decides what "3" means at this path
    # `filters[0].max_chars` and `filters.0.max_chars` both work: messages print the first form.
    # A digit is a list index only where the document has a list (`mix.1` is a source named "1").
    parts: list[Any] = [p for p in re.sub(r"\[(\d+)\]", r".\1", key.strip()).split(".") if p != ""]
    if not parts:
        raise ValidationError([RecipeError(f"--set needs a key before '=': {key.strip()!r} names none "
                                           "(e.g. --set train.epochs=1)", where)], "--set")
    node: Any = doc.data
    for i, p in enumerate(parts):
        if isinstance(node, list) and p.isdigit():
            parts[i] = int(p)
        node = (node[parts[i]] if isinstance(node, list) and isinstance(parts[i], int) and parts[i] < len(node)
                else node.get(p) if isinstance(node, dict) else None)
    value = coerce(tuple(parts), value, raw)
    node = doc.data
    for i, p in enumerate(parts[:-1]):
        nxt = node.get(p) if isinstance(node, dict) else (node[p] if isinstance(node, list) and isinstance(p, int) and p < len(node) else None)
        if nxt is None:
            if isinstance(node, list):
                raise ValidationError([RecipeError(_list_step(parts[:i], p, node), where)], "--set")
            nxt = node[p] = {}
            doc.values[tuple(parts[:i + 1])] = doc.keys[tuple(parts[:i + 1])] = where   # a section --set created
        elif not isinstance(nxt, (dict, list)):
            raise ValidationError([RecipeError(f"{'.'.join(map(str, parts[:i + 1]))} is a value, not a section", where)], "--set")
        node = nxt
    last = parts[-1]
    if isinstance(node, list):
        if not isinstance(last, int) or last >= len(node):
            raise ValidationError([RecipeError(_list_step(parts[:-1], last, node), where)], "--set")
    node[last] = value
    path = tuple(parts)
    for table in (doc.values, doc.keys):
        for p in [p for p in table if p[:len(path)] == path]:
            del table[p]
    doc.values[path] = doc.keys[path] = where


def _list_step(path: list, step: Any, items: list) -> str:
    """Why `step` cannot follow `path`, which is a list."""
    at = ".".join(map(str, path))
    if isinstance(step, int):
        return f"{at} has {len(items)} item{'s' * (len(items) != 1)}; index {step} is out of range (they count from 0)"
    return f"{at} is a list: name an item by its index ({at}[0], {at}[1], ...), not {str(step)!r}"


# --- ${...} interpolation ------------------------------------------------------------------------------

def _has_interp(v: Any) -> bool:
    if isinstance(v, str):
        return "${" in v
    if isinstance(v, dict):
        return any(_has_interp(x) for x in v.values())
    if isinstance(v, list):
        return any(_has_interp(x) for x in v)
    return False


def _interpolate(doc: Document) -> None:
    if not _has_interp(doc.data):
        return  # keeps omegaconf off the common path
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    doc.secrets = secrets.paths(doc.data)
    try:
        doc.data = OmegaConf.to_container(OmegaConf.create(doc.data), resolve=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or ""
        path = tuple(int(p) if p.isdigit() else p for p in key.replace("[", ".").replace("]", "").split(".") if p)
        msg = str(e).splitlines()[0]
        raise ValidationError([RecipeError(f"interpolation in '{key}' failed: {msg}", doc.where(path))],
                              display(doc.files[0])) from None
