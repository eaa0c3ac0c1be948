"""Source kind `local`: a file, a folder or a glob under the recipe's folder; also the owner of every
other local path a step declares (a chat template, a local model's files).

Its identity is its bytes: one digest over every file's relative name and content. Content, not mtimes:
a touched file with the same bytes stays cached; a changed byte never does. Hashing a local model.base
(GBs of weights) on every `plan` is slow, so a file of at least MEMO_BYTES has its digest kept between
runs (Digests.kept, <cache>/digests.json) under its path, size, mtime, ctime and inode: any write to the
file changes its ctime (which no tool can set back), so a kept digest is only reused for the same bytes."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator

from ..paths import data_files
from .readers import Raw, iter_rows

MEMO_BYTES = 1 << 20
# a hub dataset's keys: a path source leaves them at their defaults (validation refuses anything else)
_NOT_READ = ("dataset", "config", "split", "revision", "data_files", "streaming", "shuffle")


def claims(source) -> bool:
    return source.path is not None


def owns(entry: str) -> bool:
    return True   # the last kind asked: any entry no other kind owns is a path


def files(source) -> tuple[str, ...]:
    return (source.path,)


def params(source: dict) -> dict:
    """The keys of a source (as plain data) its rows depend on."""
    return {k: v for k, v in source.items() if k not in _NOT_READ}


def rows(name: str, source, base_dir: Path, seed: int) -> Iterator[Raw]:
    return iter_rows(source.path, base_dir, source.limit)


# --- identity ------------------------------------------------------------------------------------------

def hash_file(path: Path) -> str:
    """The sha256 of a file's bytes, in hex (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# What each file was when its digest was taken (size, mtime, ctime, inode), and which files a folder or
# glob held: the load step checks them once it has read the rows (unchanged(), D13)
_STAMPS: dict[str, tuple[int, int, int, int]] = {}
_LISTED: dict[str, tuple[str, ...]] = {}


def _stamp(path: Path) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


class Digests:
    """Files' digests within one fingerprinting pass; `kept` (path -> [size, mtime, ctime, inode, digest],
    or None) holds big files' digests between passes, and `dirty` says whether it changed."""

    def __init__(self, kept: dict | None = None):
        self.kept, self.dirty, self._seen = kept, False, {}

    def file(self, path: Path) -> str:
        key = str(path)
        if key not in self._seen:
            _STAMPS[key] = _stamp(path)   # before the bytes are read: a write while hashing changes it
            st = os.stat(path) if self.kept is not None else None
            if st is not None and st.st_size >= MEMO_BYTES:
                # keyed by a digest of the path: a path from the environment is no name in the cache
                full = hashlib.sha256(str(Path(path).resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:32]
                stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
                old = self.kept.get(full)
                if old and old[:4] == stamp:
                    self._seen[key] = old[4]
                else:
                    self._seen[key] = hash_file(path)
                    self.kept[full] = [*stamp, self._seen[key]]
                    self.dirty = True
            else:
                self._seen[key] = hash_file(path)
        return self._seen[key]


def digest(rel: str, base: Path, digests: Digests) -> str:
    """A file, a folder or a glob -> one digest over every file's relative name and bytes. The files are
    enumerated by the walk the reader uses (paths.data_files, every file rather than data files only):
    a file read through a symlinked folder is hashed, a symlink loop is walked once."""
    p = base / rel
    if not any(c in rel for c in "*?[") and not p.is_dir():
        return digests.file(p) if p.is_file() else "missing"
    found, _ = data_files(rel, base, suffixes=None)
    # a checkpoint folder inside a model folder is a trainer's resumable state, not the model
    paths = sorted(x for x in found if not (p.is_dir() and "checkpoint-" in x.parent.name))
    _LISTED[str(p)] = tuple(map(str, paths))
    h = hashlib.sha256()
    for x in paths:
        h.update(os.path.relpath(x, p if p.is_dir() else base).encode() + b"\0" + digests.file(x).encode())
    return h.hexdigest()


def unchanged(rel: str, base: Path) -> str | None:
    """After a step read `rel`: why what it read may not be what its fingerprint hashed (a file written,
    added or removed since the digest was taken), or None. Stamps, not bytes: any write changes a file's
    ctime, which no tool sets back, so a file shortened and restored while the rows were read is caught
    too. Nothing to say about a path this process did not fingerprint."""
    p = base / rel
    key = str(p)
    if key in _LISTED:
        found, _ = data_files(rel, base, suffixes=None)
        now = tuple(sorted(str(x) for x in found if not (p.is_dir() and "checkpoint-" in x.parent.name)))
        if now != _LISTED[key]:
            return f"{rel} changed while the run read it (files added or removed); run again"
        files = now
    else:
        files = (key,)
    for f in files:
        try:
            same = f not in _STAMPS or _stamp(Path(f)) == _STAMPS[f]
        except OSError:
            same = False
        if not same:
            return f"{os.path.relpath(f, base)} changed while the run read it; run again"
    return None
