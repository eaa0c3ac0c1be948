"""One YAML text -> a Document: plain data + the position of every key and value.

YAML is read with PyYAML's *safe* resolver, but we build the Python objects ourselves from the node
tree: that is where positions come from, and it lets us reject duplicate keys and every non-standard
tag (e.g. `!!python/object`) with the line they are on instead of a constructor traceback."""
from __future__ import annotations

import contextlib
import gc
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import RecipeError, ValidationError, Where
from . import secrets

Path_ = tuple  # a location inside the document: ("sources", "tang", "path"), list indices as ints

class _Loader(yaml.SafeLoader):
    """Safe loader that also reads YAML 1.2 floats: PyYAML alone turns `1e-4` into the string '1e-4'."""


# libyaml's parser (when PyYAML has it) builds the same node tree ~25x faster: a big recipe validates
# in a second instead of ten. Nodes are all we take from it; we construct the values ourselves.
_Parser = type("_Parser", (yaml.CSafeLoader,), {}) if getattr(yaml, "__with_libyaml__", False) else _Loader

for _cls in {_Loader, _Parser}:
    _cls.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"))

# Input limits: a recipe is a small hand-written file. These bound what a hostile one (say, from a
# pull request that `recipe diff --git` reads) can cost: alias expansion, nesting, size, extends depth.
MAX_BYTES = 10_000_000
MAX_DEPTH = 64
MAX_ALIAS_EXPANSION = 10_000     # values beyond 10 per written node; a bomb hits it in microseconds
MAX_EXTENDS = 32              # files in one `extends` chain
MAX_EXTENDS_FILES = 256       # distinct files one recipe's `extends` graph may reach

_SCALARS = _Loader("")  # used only for its scalar constructors (int, float, bool, null, str)
_STR = "tag:yaml.org,2002:str"
_SAFE_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")}


@dataclass
class Document:
    data: dict
    values: dict = field(default_factory=dict)  # path -> Where of the value
    keys: dict = field(default_factory=dict)    # path -> Where of the key that holds it
    files: list = field(default_factory=list)   # every file read, leaf first (for fingerprints and diff)
    secrets: set = field(default_factory=set)   # paths whose value came from a secret-looking env var

    def where(self, path: Path_) -> Where | None:
        """The closest known position: the value itself, else its key, else an ancestor."""
        path = tuple(path)
        while True:
            w = self.values.get(path) or self.keys.get(path)
            if w or not path:
                return w
            path = path[:-1]

    def key_where(self, path: Path_) -> Where | None:
        return self.keys.get(tuple(path)) or self.where(path)

    def secret_values(self) -> list[str]:
        """The text of every value from the environment, longest first (to scrub it from messages)."""
        return secrets.texts(self.data, self.secrets)


def display(file: Path) -> str:
    """A path as the user would type it: relative to the working directory unless that is a long way up."""
    try:
        rel = os.path.relpath(file)
    except ValueError:
        return str(file)
    return str(file) if rel.startswith(os.pardir + os.sep + os.pardir) else rel


def read_yaml(file: Path) -> Document:
    """One YAML file -> Document (no extends, no interpolation). The file is looked at before it is read:
    a device (/dev/zero), a FIFO or a folder is refused, and so is a file over MAX_BYTES, without reading
    it (reading first held a 1 GB file twice over before refusing it, and /dev/zero never ends)."""
    name = display(file)
    try:
        st = os.stat(file)
        if not stat.S_ISREG(st.st_mode):
            what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise RecipeError(f"{name} is {what}; a recipe is a .yaml file")
        _refuse_size(st.st_size, name)
        # O_NONBLOCK: should a FIFO take the file's place after the stat, opening it does not wait for a writer
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise RecipeError(f"{name} is not a regular file; a recipe is a .yaml file")
            raw = f.read(MAX_BYTES + 1)     # the file may have grown since the stat: never read more
        _refuse_size(len(raw), name)
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise RecipeError(f"recipe file not found: {name}") from None
    except UnicodeDecodeError as e:
        raise RecipeError(f"{name}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise RecipeError(f"cannot read {name}: {e.strerror}") from None
    return parse_yaml(text, name, file)


def _refuse_size(size: int, name: str) -> None:
    if size > MAX_BYTES:
        raise ValidationError([RecipeError(f"the recipe is {size:,} bytes or more; the limit is {MAX_BYTES:,} "
                                           "(a recipe names its data, it does not hold it)", Where(name, 1, 1))], name)


@contextlib.contextmanager
def gc_paused():
    """Building a big document allocates ~10 objects per value and frees none; the cyclic collector's
    full passes rescan all of them again and again (2-4x the whole load time for 150k values)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def parse_yaml(text: str, name: str, file: Path | None = None) -> Document:
    """YAML text -> Document; `name` is how messages refer to it (a file, or `REV:path` for diff --git)."""
    if len(text) > MAX_BYTES:
        raise ValidationError([RecipeError(f"the recipe is {len(text):,} characters; the limit is {MAX_BYTES:,} "
                                           "(a recipe names its data, it does not hold it)", Where(name, 1, 1))], name)
    try:
        loader = _Parser(text)
        try:
            with gc_paused():
                node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = Where(name, mark.line + 1, mark.column + 1) if mark else Where(name)
        raise ValidationError([RecipeError(f"YAML syntax: {e.problem or e.context}", where)], name) from None
    except yaml.reader.ReaderError as e:   # a control character (e.g. NUL): no mark, but a position
        line = text.count("\n", 0, e.position) + 1
        col = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        what = f"character U+{e.character:04X}" if isinstance(e.character, int) else "byte"
        raise ValidationError([RecipeError(f"YAML: {what} is not allowed in a YAML file; remove it",
                                           Where(name, line, col))], name) from None
    except yaml.YAMLError as e:
        raise ValidationError([RecipeError(f"YAML: {e}", Where(name))], name) from None
    except RecursionError:
        raise ValidationError([RecipeError(f"YAML: the document is nested too deeply (more than {MAX_DEPTH} "
                                           "levels)", Where(name, 1, 1))], name) from None
    doc = Document(data={}, files=[file] if file is not None else [])
    if node is None:
        raise ValidationError([RecipeError("the recipe is empty; it must be a mapping with at least "
                                           "`recipe`, `model` and `sources`", Where(name, 1, 1))], name)
    problems: list[RecipeError] = []
    with gc_paused():
        data = _Builder(doc, name, problems).build(node)
    if not problems and not isinstance(data, dict):
        problems.append(RecipeError(f"the recipe must be a mapping of keys (recipe:, model:, sources: ...), "
                                    f"not {kind_of(data)}", _at(node, name)))
    if problems:
        raise ValidationError(problems, name)
    doc.data = data
    return doc


def kind_of(value: Any) -> str:
    """How a message names a value's type: 'a string', 'null', 'a list'..."""
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _at(node: yaml.Node, name: str) -> Where:
    return Where(name, node.start_mark.line + 1, node.start_mark.column + 1)


class _AliasBomb(Exception):
    pass


class _Builder:
    """Node tree -> plain Python data with positions. Aliases are expanded (the data is a tree), so a
    few hundred bytes of nested anchors could expand to gigabytes: expansion is bounded, and so is depth."""

    def __init__(self, doc: Document, name: str, problems: list):
        self.doc, self.name, self.problems = doc, name, problems
        self.built = 0            # values constructed, aliases expanded
        self.nodes: set = set()   # distinct nodes seen (an alias revisits one)
        self.open: set = set()    # collections being built: an alias to one of them is a cycle

    def build(self, node: yaml.Node) -> Any:
        try:
            return self._construct(node, ())
        except _AliasBomb as e:
            # the node being built when the count ran out lies inside some anchor; point at the
            # top-level value whose aliases expand, which is what the user wrote and can fix
            node, path = e.args[1], e.args[2]
            where = self.doc.values.get(path[:1]) if path else None
            self.problems.append(RecipeError(e.args[0], where or _at(node, self.name)))
            return None

    def _construct(self, node: yaml.Node, path: Path_) -> Any:
        doc, name, problems = self.doc, self.name, self.problems
        self.built += 1
        self.nodes.add(id(node))
        if self.built > MAX_ALIAS_EXPANSION + 10 * len(self.nodes):
            raise _AliasBomb(f"YAML aliases (*name) expand to more than {self.built:,} values from "
                             f"{len(self.nodes):,} written ones; a recipe may not expand like that "
                             "(an alias bomb?)", node, path)
        doc.values[path] = _at(node, name)
        if len(path) > MAX_DEPTH:
            problems.append(RecipeError(f"nested more than {MAX_DEPTH} levels deep", _at(node, name)))
            return None
        if node.tag not in _SAFE_TAGS and not node.tag.startswith("tag:yaml.org,2002:timestamp"):
            problems.append(RecipeError(f"the tag {node.tag.replace('tag:yaml.org,2002:', '!!')} is not allowed: "
                                        "recipes are plain data (no Python objects)", _at(node, name)))
            return None
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            if id(node) in self.open:
                problems.append(RecipeError("a YAML alias refers to the anchor it is inside (a recursive "
                                            "structure); a recipe is a tree", _at(node, name)))
                return None
            self.open.add(id(node))
            try:
                return self._collection(node, path)
            finally:
                self.open.discard(id(node))
        if node.tag == _STR:
            return node.value          # most scalars; the constructor would only copy the text
        value = _SCALARS.construct_object(node)
        _SCALARS.constructed_objects.clear()
        if node.tag.startswith("tag:yaml.org,2002:timestamp"):
            value = node.value  # a date stays the text the user wrote; JSON has no date type
        return value

    def _collection(self, node: yaml.Node, path: Path_) -> Any:
        doc, name, problems = self.doc, self.name, self.problems
        if isinstance(node, yaml.SequenceNode):
            return [self._construct(v, path + (i,)) for i, v in enumerate(node.value)]
        out: dict = {}
        for knode, vnode in node.value:
            if knode.tag == "tag:yaml.org,2002:merge":
                problems.append(RecipeError("YAML merge keys (<<) are not supported; use `extends:`", _at(knode, name)))
                continue
            key = self._construct(knode, path + ("<key>",))
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                problems.append(RecipeError(f"keys must be strings, not {key!r}", _at(knode, name)))
                continue
            key = str(key)
            if key in out:
                first = doc.keys[path + (key,)]
                problems.append(RecipeError(f"duplicate key '{key}' (first defined at line {first.line}); "
                                            "remove one of them", _at(knode, name)))
                continue
            doc.keys[path + (key,)] = _at(knode, name)
            out[key] = self._construct(vnode, path + (key,))
        doc.values.pop(path + ("<key>",), None)
        return out


def parse_value(raw: str, where: Where) -> Any:
    """The YAML value of `--set k=raw`, built like a recipe's (1e-4 is a number, no tags, bounded aliases
    and depth); text that is not YAML is the text itself."""
    if not raw.strip():
        return ""
    try:
        loader = _Parser(raw)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except (yaml.YAMLError, RecursionError):
        return raw
    if node is None:
        return None
    problems: list[RecipeError] = []
    value = _Builder(Document(data={}), str(where), problems).build(node)
    if problems:
        raise ValidationError([RecipeError(p.message, where) for p in problems], "--set")
    return value
