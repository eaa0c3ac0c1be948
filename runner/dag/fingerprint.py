"""Step fingerprints: a hash of everything that can change a step's output (kind, code version,
canonical params, upstream fingerprints, the bytes of the files it reads). Content, not mtimes: a
touched file with the same bytes stays cached; a changed byte never does."""
from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .compile import Graph


@dataclass(frozen=True)
class Fingerprint:
    value: str
    components: dict  # what went in, kept so `plan` can say *why* a step is stale


def _file_digest(path: Path, memo: dict) -> str:
    key = str(path)
    if key not in memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        memo[key] = h.hexdigest()
    return memo[key]


def files_digest(base: Path, rel: str, memo: dict) -> str:
    """A file, a folder or a glob -> one digest over every file's relative name and bytes.
    A hub dataset (hf://datasets/<id>@<revision>) -> the commit sha its revision resolves to."""
    if rel.startswith("hf://datasets/"):
        from ..data.hub import uri_digest   # light: reads the local hub cache's refs
        return uri_digest(rel)
    p = base / rel
    if any(c in rel for c in "*?["):
        paths = sorted(Path(x) for x in glob.glob(str(p), recursive=True) if os.path.isfile(x))
    elif p.is_dir():
        paths = sorted(x for x in p.rglob("*") if x.is_file() and "checkpoint-" not in x.parent.name)
    elif p.is_file():
        paths = [p]
    else:
        return "missing"
    if len(paths) == 1 and paths[0] == p:
        return _file_digest(p, memo)
    h = hashlib.sha256()
    for x in paths:
        h.update(os.path.relpath(x, p if p.is_dir() else base).encode() + b"\0" + _file_digest(x, memo).encode())
    return h.hexdigest()


def file_key(entry: str) -> str:
    """A hub dataset is keyed by its id, not by the revision that names the commit: pinning a branch to
    the sha it resolves to keeps the cache."""
    return entry.rsplit("@", 1)[0] if entry.startswith("hf://datasets/") else entry


def fingerprint_graph(graph: Graph, base_dir: Path, versions: dict[str, int]) -> dict[str, Fingerprint]:
    memo: dict = {}
    out: dict[str, Fingerprint] = {}
    for step in graph.steps:
        comp = {
            "kind": step.kind,
            "version": versions[step.kind],
            "params": step.params,
            "inputs": {i: out[i].value for i in step.inputs},
            "files": {file_key(f): files_digest(base_dir, f, memo) for f in step.files},
        }
        blob = json.dumps(comp, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        out[step.name] = Fingerprint(hashlib.sha256(blob.encode()).hexdigest()[:24], comp)
    return out


def explain(old: dict | None, new: dict) -> list[str]:
    """Why a step's fingerprint changed, in words: params, files, upstream steps, code version."""
    if old is None:
        return ["never run"]
    why: list[str] = []
    if old.get("version") != new["version"]:
        why.append(f"step code changed (version {old.get('version')} -> {new['version']})")
    for path, (a, b) in _diff(old.get("params", {}), new["params"]).items():
        why.append(f"param {path}: {_short(a)} -> {_short(b)}")
    for f in sorted(set(old.get("files", {})) | set(new["files"])):
        a, b = old.get("files", {}).get(f), new["files"].get(f)
        if a != b and f.startswith("hf://datasets/") and a and b:
            why.append(f"dataset {f[len('hf://datasets/'):]} moved: {a[:12]} -> {b[:12]}")   # or was re-pinned
        elif a != b:
            why.append(f"file {f} changed")
    for i in new["inputs"]:
        if old.get("inputs", {}).get(i) != new["inputs"][i]:
            why.append(f"upstream {i} changed")
    return why or ["fingerprint changed"]


_MISSING = "<absent>"


def _diff(a, b, path: str = "") -> dict[str, tuple]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: dict[str, tuple] = {}
        for k in list(a) + [k for k in b if k not in a]:
            out.update(_diff(a.get(k, _MISSING), b.get(k, _MISSING), f"{path}.{k}" if path else k))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = {}
        for i, (x, y) in enumerate(zip(a, b)):
            out.update(_diff(x, y, f"{path}[{i}]"))
        return out
    return {} if a == b else {path: (a, b)}


def _short(v) -> str:
    s = json.dumps(v, ensure_ascii=False) if v is not _MISSING else v
    return s if len(s) <= 60 else s[:57] + "..."
