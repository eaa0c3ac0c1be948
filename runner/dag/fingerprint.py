"""Step fingerprints: a hash of everything that can change a step's output (kind, code version,
canonical params, upstream fingerprints, the bytes of the files it reads). Content, not mtimes: a
touched file with the same bytes stays cached; a changed byte never does.

Hashing a local model.base (GBs of weights) on every `plan` is slow, so a file of at least MEMO_BYTES
has its digest kept in <cache>/digests.json under its path, size, mtime, ctime and inode: any write to
the file changes its ctime (which no tool can set back), so a kept digest is only reused for the same
bytes."""
from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..data import hub
from ..recipe.compare import change_text, compare
from ..recipe.secrets import redact
from .compile import Graph


@dataclass(frozen=True)
class Fingerprint:
    value: str
    components: dict  # what went in, kept so `plan` can say *why* a step is stale


MEMO_BYTES = 1 << 20


def hash_file(path: Path) -> str:
    """The sha256 of a file's bytes, in hex (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _file_digest(path: Path, memo: dict) -> str:
    key = str(path)
    if key not in memo:
        kept = memo.get(_KEPT)
        st = os.stat(path) if kept is not None else None
        if st is not None and st.st_size >= MEMO_BYTES:
            full, stamp = str(Path(path).resolve()), [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
            old = kept.get(full)
            if old and old[:4] == stamp:
                memo[key] = old[4]
            else:
                memo[key] = hash_file(path)
                kept[full] = [*stamp, memo[key]]
                memo[_DIRTY] = True
        else:
            memo[key] = hash_file(path)
    return memo[key]


_KEPT, _DIRTY = "\0kept", "\0dirty"   # memo keys no path can have


def _load_kept(path: Path | None) -> dict | None:
    if path is None:
        return None
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        return kept if isinstance(kept, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_kept(path: Path, kept: dict) -> None:
    if not path.parent.is_dir():     # plan never creates a cache; a later run will
        return
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(kept, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)   # a read-only cache: digests are recomputed next time


def files_digest(base: Path, rel: str, memo: dict) -> str:
    """A file, a folder or a glob -> one digest over every file's relative name and bytes.
    A hub dataset (hf://datasets/<id>@<revision>) -> the commit sha its revision resolves to."""
    if rel.startswith(hub.HUB_URI):
        return hub.uri_digest(rel)   # light: reads the local hub cache's refs
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
    return entry.rsplit("@", 1)[0] if entry.startswith(hub.HUB_URI) else entry


def fingerprint_graph(graph: Graph, base_dir: Path, versions: dict[str, int],
                      digests: Path | None = None) -> dict[str, Fingerprint]:
    """Fingerprints of every step; `digests` (<cache>/digests.json) keeps big files' digests between runs."""
    memo: dict = {_KEPT: _load_kept(digests)}
    out: dict[str, Fingerprint] = {}
    for step in graph.steps:
        # a value from the environment (a token in template.system) is stored and shown as ***; the
        # digest of what was masked keeps a change to it a change of the fingerprint
        params, env = redact(json.loads(step.params_json), graph.secrets)
        comp = {
            "kind": step.kind,
            "version": versions[step.kind],
            "params": params,
            "inputs": {str(i): out[str(i)].value for i in step.inputs},
            "files": {file_key(f): files_digest(base_dir, f, memo) for f in step.files},
        }
        if env:
            comp["env"] = env
        blob = json.dumps(comp, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        out[step.name] = Fingerprint(hashlib.sha256(blob.encode()).hexdigest()[:24], comp)
    if digests is not None and memo.get(_DIRTY):
        _save_kept(digests, memo[_KEPT])
    return out


def explain(old: dict | None, new: dict) -> list[str]:
    """Why a step's fingerprint changed, in words: params, files, upstream steps, code version."""
    if old is None:
        return ["never run"]
    why: list[str] = []
    if old.get("version") != new["version"]:
        why.append(f"step code changed (version {old.get('version')} -> {new['version']})")
    # parameters are compared as `recipe diff` compares settings (list items by kind, so one inserted
    # filter is one reason)
    why += [f"param {change_text(c)}" for c in compare(old.get("params", {}), new["params"])]
    for f in sorted(set(old.get("files", {})) | set(new["files"])):
        a, b = old.get("files", {}).get(f), new["files"].get(f)
        if a != b and f.startswith(hub.HUB_URI) and a and b:
            why.append(f"dataset {f[len(hub.HUB_URI):]} moved: {a[:12]} -> {b[:12]}")   # or was re-pinned
        elif a != b:
            why.append(f"file {f} changed")
    if old.get("env") != new.get("env"):
        why.append("a value from the environment changed (not shown)")
    for i in new["inputs"]:
        if old.get("inputs", {}).get(i) != new["inputs"][i]:
            why.append(f"upstream {i} changed")
    return why or ["fingerprint changed"]
