"""Content-addressed artifacts. A step's output lives in objects/<fp>/ and is complete by
construction: it is written into tmp/ and renamed into place only after its manifest is written, so
a run killed at any point never leaves a half artifact that a later run would trust.

    <cache>/objects/<fp>/            artifact files + manifest.json (+ stats.json)
    <cache>/tmp/<fp>.<pid>/          being written (removed on the next run when its process is gone)
    <cache>/partial/<fp>/            resumable work of an unfinished step (training checkpoints)
    <cache>/index/<recipe>/<step>.json   the last fingerprint components, for "why is this stale"
    <cache>/digests.json             digests of big input files by (a digest of) path, size, mtime, ctime, inode
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..paths import under
from .fingerprint import Fingerprint

MANIFEST = "manifest.json"


def default_dir(recipe_file: Path, cli: str | None = None) -> Path:
    if cli:
        return Path(cli).resolve()
    if os.environ.get("RECIPE_CACHE_DIR"):
        return Path(os.environ["RECIPE_CACHE_DIR"]).resolve()
    return recipe_file.parent / ".recipe" / "cache"


def _dump(path: Path, data) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class Cache:
    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def digests(self) -> Path:
        return self.root / "digests.json"

    def object_dir(self, fp: str) -> Path:
        return under(self.root, "objects", fp)

    def has(self, fp: str) -> bool:
        return (self.object_dir(fp) / MANIFEST).is_file()

    def manifest(self, fp: str) -> dict | None:
        try:
            return json.loads((self.object_dir(fp) / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def stats(self, fp: str) -> dict | None:
        m = self.manifest(fp)
        return m.get("stats") if m else None

    def begin(self, fp: str) -> Path:
        self.clean_tmp()
        tmp = under(self.root, "tmp", f"{fp}.{os.getpid()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, tmp: Path, fp: str, manifest: dict) -> Path:
        _dump(tmp / MANIFEST, manifest)  # last file written: its presence means complete
        final = self.object_dir(fp)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # a concurrent run finished the same step first; theirs is as good as ours
            shutil.rmtree(tmp)
        else:
            os.rename(tmp, final)
        return final

    def abort(self, tmp: Path) -> None:
        shutil.rmtree(tmp, ignore_errors=True)

    def clean_tmp(self) -> None:
        tdir = self.root / "tmp"
        if not tdir.is_dir():
            return
        for d in tdir.iterdir():
            pid = d.name.rsplit(".", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(d, ignore_errors=True)

    # --- resumable steps ---
    def partial_dir(self, fp: str) -> Path:
        return under(self.root, "partial", fp)

    def drop_partial(self, fp: str) -> None:
        shutil.rmtree(self.partial_dir(fp), ignore_errors=True)

    # --- index: last known components per (recipe, step) ---
    def _index(self, recipe: str, step: str, suffix: str = "") -> Path:
        return under(self.root, "index", recipe, f"{step}{suffix}.json")

    def last(self, recipe: str, step: str, suffix: str = "") -> dict | None:
        try:
            return json.loads(self._index(recipe, step, suffix).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def remember(self, recipe: str, step: str, fp: Fingerprint, suffix: str = "", **extra) -> None:
        p = self._index(recipe, step, suffix)
        p.parent.mkdir(parents=True, exist_ok=True)
        _dump(p, {"fingerprint": fp.value, "components": fp.components, **extra})

    def forget(self, recipe: str, step: str, suffix: str = "") -> None:
        self._index(recipe, step, suffix).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
