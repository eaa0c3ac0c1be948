"""Source kinds: where a source's rows come from, and what identifies them.

A kind is one module here, listed in KINDS (asked in that order), with:

  claims(source) -> bool            whether a recipe source (model.Source) is this kind's
  files(source) -> (entry, ...)     what the load step declares as its files: a path or URI per content
  params(source: dict) -> dict      the source's keys (as plain data) its rows depend on: fingerprinted
  owns(entry) -> bool               whether a step's `files` entry is this kind's (any step's: a template too)
  digest(entry, base_dir, digests) -> str    the entry's identity: bytes, a commit, an ETag...
  rows(name, source, base_dir, seed) -> Iterator[readers.Raw]   its raw rows, `limit` applied
and optionally
  shards(name, source, base_dir, seed) -> [(path, size, shard), ...] | None
                                    its rows as pieces a task can read anywhere (one file each, `size`
                                    bytes, checked where it runs), in reading order; None: rows() instead
  shard_rows(shard) -> Iterator[readers.Raw]   one such piece's rows, numbered as rows() numbers them
  key(entry) -> str                 the name the digest is kept under (default: the entry)
  restore(entry) -> dict            source keys the entry holds instead of the params
  seeded(source) -> bool            whether its rows depend on the recipe's seed (a sample drawn)
  origin(source) -> dict            what was read (the commit), for the manifest and the report
  changed(entry, old, new) -> str   why the step is stale, in words (default: "file <entry> changed")
  note(entry, digest) -> str|None   what `plan` should say about a digest (one that cannot follow the bytes)
  notes(name, source) -> [str]      warnings about the source itself (validate, plan, run)
  refresh(sources, log)             before a run is fingerprinted: bring the identity up to date
  unchanged(entry, base_dir) -> str|None   after the load step read it: why the rows may not be what the
                                    fingerprint named (a local file written since it was hashed)

The engine (runner.dag) asks this registry and never a kind. Kinds read files and caches only when
asked; importing them stays light (datasets and fsspec are imported inside the functions that read)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from . import hub, local, remote
from .local import Digests
from .readers import Raw

KINDS = {"hub": hub, "remote": remote, "local": local}   # local last: it owns any path the others do not

__all__ = ["KINDS", "Digests", "kind_of", "declare", "restore", "seeded", "origin", "rows", "shards", "shard_rows",
           "key", "digest", "changed", "note", "notes", "refresh", "unchanged", "model_revision"]


def kind_of(source) -> Any:
    return next(k for k in KINDS.values() if k.claims(source))


def _owner(entry: str) -> Any:
    return next(k for k in KINDS.values() if k.owns(entry))


# --- the load step -----------------------------------------------------------------------------------

def declare(source, plain_source: dict) -> tuple[dict, tuple[str, ...]]:
    """(the source's fingerprinted keys, its files entries) for the load step."""
    kind = kind_of(source)
    return kind.params(plain_source), kind.files(source)


def restore(files: tuple[str, ...]) -> dict:
    """The source keys that `declare` put into the files entries rather than the params."""
    out: dict = {}
    for entry in files:
        out.update(getattr(_owner(entry), "restore", lambda e: {})(entry))
    return out


def seeded(source) -> bool:
    return getattr(kind_of(source), "seeded", lambda s: False)(source)


def origin(source) -> dict | None:
    return getattr(kind_of(source), "origin", lambda s: None)(source)


def rows(name: str, source, base_dir: Path, seed: int) -> Iterator[Raw]:
    return kind_of(source).rows(name, source, base_dir, seed)


def shards(name: str, source, base_dir: Path, seed: int) -> list[tuple[Path, int, tuple]] | None:
    """(file, its size, (kind, shard)) for each piece of the source's rows a task can read where it runs, in
    reading order; None when its kind reads them only here (rows())."""
    key = next(k for k, kind in KINDS.items() if kind.claims(source))
    found = getattr(KINDS[key], "shards", lambda *a: None)(name, source, base_dir, seed)
    return None if found is None else [(path, size, (key, shard)) for path, size, shard in found]


def shard_rows(shard: tuple) -> Iterator[Raw]:
    """The rows of a piece shards() named."""
    key, piece = shard
    return KINDS[key].shard_rows(piece)


def unchanged(files: tuple[str, ...], base_dir: Path) -> str | None:
    """After the load step read its rows: why they may not be the content its fingerprint names (a local
    file written since it was hashed), or None. A kind whose identity cannot move under a run (a hub
    commit) has nothing to say."""
    for entry in files:
        problem = getattr(_owner(entry), "unchanged", lambda e, b: None)(entry, base_dir)
        if problem:
            return problem
    return None


# --- any step's files: the fingerprint and `plan` ----------------------------------------------------

def key(entry: str) -> str:
    return getattr(_owner(entry), "key", lambda e: e)(entry)


def digest(entry: str, base_dir: Path, digests: Digests) -> str:
    return _owner(entry).digest(entry, base_dir, digests)


def changed(entry: str, old: str | None, new: str | None) -> str:
    kind = _owner(entry)
    if old and new and hasattr(kind, "changed"):
        return kind.changed(entry, old, new)
    return f"file {entry} changed"


def note(entry: str, value: str) -> str | None:
    return getattr(_owner(entry), "note", lambda e, v: None)(entry, value)


def notes(sources: Mapping[str, Any]) -> list[str]:
    """Warnings about the recipe's sources (an unpinned hub revision), from local state only."""
    return [n for name, s in sources.items() for n in getattr(kind_of(s), "notes", lambda *a: [])(name, s)]


def refresh(sources: Mapping[str, Any], log: Callable[[str], None]) -> None:
    """Before a run is fingerprinted: each kind brings its sources' identity up to date (which commit a
    hub branch names now)."""
    for kind in KINDS.values():
        mine = {name: s for name, s in sources.items() if kind.claims(s)}
        if mine and hasattr(kind, "refresh"):
            kind.refresh(mine, log)


def model_revision(model_id: str) -> str:
    """The commit a hub model's main branch last resolved to in the local hub cache (what `recipe lock` pins),
    or "unresolved main" when it was never downloaded."""
    ref = hub.cache_root() / ("models--" + model_id.replace("/", "--")) / "refs" / "main"
    return ref.read_text(encoding="utf-8").strip() if ref.is_file() else "unresolved main"
