"""Step fingerprints: a hash of everything that can change a step's output (kind, code version,
canonical params, upstream fingerprints, and the identity of the files it reads). What identifies a
declared file is its source kind's business (runner.sources): a local path's bytes, the commit a
dataset's revision names, a remote file's ETag or version. Big local files' digests are kept between runs in
<cache>/digests.json (see runner.sources.local)."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .. import sources
from ..recipe.compare import change_text, compare
from ..recipe.secrets import redact
from .compile import Graph


@dataclass(frozen=True)
class Fingerprint:
    value: str
    components: dict  # what went in, kept so `plan` can say *why* a step is stale


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


def fingerprint_graph(graph: Graph, base_dir: Path, versions: dict[str, int],
                      digests: Path | None = None) -> dict[str, Fingerprint]:
    """Fingerprints of every step; `digests` (<cache>/digests.json) keeps big files' digests between runs."""
    memo = sources.Digests(_load_kept(digests))
    out: dict[str, Fingerprint] = {}
    for step in graph.steps:
        files = {sources.key(f): sources.digest(f, base_dir, memo) for f in step.files}
        # a value from the environment (a token in template.system, in a remote URL) is stored and shown
        # as ***; the digest of what was masked keeps a change to it a change of the fingerprint
        (params, files), env = redact([json.loads(step.params_json), files], graph.secrets)
        comp = {
            "kind": step.kind,
            "version": versions[step.kind],
            "params": params,
            "inputs": {str(i): out[str(i)].value for i in step.inputs},
            "files": files,
        }
        if env:
            comp["env"] = env
        blob = json.dumps(comp, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        out[step.name] = Fingerprint(hashlib.sha256(blob.encode()).hexdigest()[:24], comp)
    if digests is not None and memo.dirty:
        _save_kept(digests, memo.kept)
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
        if a != b:
            why.append(sources.changed(f, a, b))
    if old.get("env") != new.get("env"):
        why.append("a value from the environment changed (not shown)")
    for i in new["inputs"]:
        if old.get("inputs", {}).get(i) != new["inputs"][i]:
            why.append(f"upstream {i} changed")
    return why or ["fingerprint changed"]
