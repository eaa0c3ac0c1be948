"""Paths we write and paths we read, each in one place.

Writing: every file `recipe` writes (run directory, cache, quarantine, index) goes through `under(root,
...)`, which refuses any path that would leave its root: a recipe or source named `..`, an absolute part,
a symlink inside the root that points out of it. Names come from the user's recipe, so this is the
last line of defence behind the schema's name patterns, not the only one.

Reading: `data_files` expands a source's `path` (a file, a folder, or a glob with `**`) to the files it
names. Symlinks are followed, but every real file is read at most once and every real folder walked at
most once, so a link back to a parent (`loop -> .`) cannot repeat rows or recurse forever; what was left
out (a dangling link, a file reached twice, a loop) is returned with the reason, to be counted. A
fingerprint enumerates a declared path with the same walk (every file, not only data files), so what is
read is always part of what is hashed."""
from __future__ import annotations

import contextlib
import fnmatch
import os
import re
from pathlib import Path
from typing import Callable, NamedTuple

from .errors import RecipeError

READABLE = (".jsonl", ".json", ".csv", ".parquet")


class UnsafePath(RecipeError):
    """A path we were about to write lies outside its root."""


def under(root: str | os.PathLike, *parts: str) -> Path:
    """root/parts..., guaranteed inside `root` (after resolving `..` and symlinks); raises UnsafePath."""
    base = Path(root).resolve()
    for part in parts:
        part = str(part)
        if not part or part in (".", "..") or "\0" in part or os.path.isabs(part) or \
                any(p == ".." for p in re.split(r"[\\/]", part)):
            raise UnsafePath(f"refusing to write {part!r} under {root}: not a plain relative name")
    target = base.joinpath(*map(str, parts)).resolve()
    if target != base and base not in target.parents:
        raise UnsafePath(f"refusing to write {target}: it is outside {base} (a symlink out of it?)")
    return Path(root).joinpath(*map(str, parts))   # as the caller named it (a relative root stays relative)


def folder_option(path: str | os.PathLike, flag: str) -> Path:
    """A folder the user named (--output, --cache-dir): it may not exist yet, but it cannot be a file,
    nor lie under one."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise RecipeError(f"{flag} {path}: this is a file, not a folder; name a folder (it is created if missing)")
    for parent in p.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise RecipeError(f"{flag} {path}: {parent} is a file, so no folder can be made under it")
            break
    return p


def safe_name(name: str) -> str:
    """A user-given name (recipe, source, stage) as one path component, or RecipeError."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name or ""):
        raise UnsafePath(f"{name!r} cannot be used as a file or folder name")
    return name


class Skipped(NamedTuple):
    path: Path
    code: str      # dangling_symlink | duplicate_file | duplicate_folder | symlink_loop | unreadable_folder
    detail: str


def data_files(spec: str, base_dir: Path, suffixes: tuple[str, ...] | None = READABLE
               ) -> tuple[list[Path], list[Skipped]]:
    """The data files `spec` names (sorted; a saved `datasets` folder is one entry) and what was skipped.
    suffixes=None: every file, a saved dataset's too (what a fingerprint hashes)."""
    base_dir = Path(base_dir)
    p = base_dir / spec
    if any(c in spec for c in "*?["):
        root, pattern = _split_glob(spec)
        parts = pattern.split("/")
        depth = float("inf") if "**" in parts else len(parts)   # no `**`: no deeper than the pattern
        return _walk(base_dir / root, _glob_match(pattern), prune_hidden=True, depth=depth, suffixes=suffixes)
    if p.is_dir():
        if is_saved_dataset(p) and suffixes is not None:
            return [p], []
        return _walk(p, None, prune_hidden=True, suffixes=suffixes)
    return [p], []


def is_saved_dataset(p: Path) -> bool:
    return (p / "state.json").is_file() or (p / "dataset_dict.json").is_file()


def _split_glob(spec: str) -> tuple[str, str]:
    """'data/**/x*.jsonl' -> ('data', '**/x*.jsonl'): the folder before the first wildcard, and the rest."""
    parts = spec.replace("\\", "/").split("/")
    i = next(i for i, part in enumerate(parts) if any(c in part for c in "*?["))
    return "/".join(parts[:i]) or ".", "/".join(parts[i:])


def _glob_match(pattern: str):
    """A glob over "/"-separated relative paths, as glob.glob(recursive=True) reads it: a `**` part spans
    any number of folders, `*`, `?` and [...] stay within one name."""
    want = [p for p in pattern.split("/") if p not in ("", ".")]

    def match(parts: list[str], pat: list[str]) -> bool:
        if not pat:
            return not parts
        if pat[0] == "**":
            return any(match(parts[i:], pat[1:]) for i in range(len(parts) + 1))
        return bool(parts) and fnmatch.fnmatchcase(parts[0], pat[0]) and match(parts[1:], pat[1:])

    return lambda rel: match(rel.split("/"), want)


def _walk(root: Path, match: Callable[[str], bool] | None, prune_hidden: bool, depth: float = float("inf"),
          suffixes: tuple[str, ...] | None = READABLE) -> tuple[list[Path], list[Skipped]]:
    files: list[Path] = []
    skipped: list[Skipped] = []
    seen_files: dict[tuple[int, int], Path] = {}
    seen_dirs: dict[tuple[int, int], Path] = {}
    if not root.is_dir():
        return files, skipped

    def visit(folder: Path, rel: str) -> None:
        st = folder.stat()
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            first = seen_dirs[key]
            loop = first in folder.parents
            skipped.append(Skipped(folder, "symlink_loop" if loop else "duplicate_folder",
                                   f"the folder is {first} again (through a symlink); not read twice"))
            return
        seen_dirs[key] = folder
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            skipped.append(Skipped(folder, "unreadable_folder", e.strerror or str(e)))
            return
        for entry in entries:
            if prune_hidden and entry.name.startswith("."):
                continue
            path = folder / entry.name
            sub = f"{rel}{entry.name}"
            try:
                is_dir = entry.is_dir()               # follows symlinks
                is_file = not is_dir and entry.is_file()
            except OSError:
                is_dir = is_file = False
            if is_dir:
                if sub.count("/") + 1 < depth:
                    visit(path, sub + "/")
            elif is_file:
                if suffixes is not None and not entry.name.endswith(suffixes) or match is not None and not match(sub):
                    continue
                st = path.stat()
                fkey = (st.st_dev, st.st_ino)
                if fkey in seen_files:
                    skipped.append(Skipped(path, "duplicate_file", f"the same file as {seen_files[fkey]} "
                                                                   "(through a symlink); read once"))
                    continue
                seen_files[fkey] = path
                files.append(path)
            elif entry.is_symlink() and (match is None or match(sub)) and (suffixes is None or sub.endswith(suffixes)):
                skipped.append(Skipped(path, "dangling_symlink", f"a symlink to {os.readlink(path)}, which "
                                                                 "does not exist"))

    visit(root, "")
    files.sort(key=lambda p: p.as_posix())
    return files, skipped


# --- publishing into the run directory ---------------------------------------------------------------
# The run directory (--output) may hold the user's own files next to ours (notes in tasks/, a hand-made
# quarantine/manual.jsonl). So we never remove a folder: each publish names its unit (e.g. "tasks",
# "sft/final") and the files it writes, WRITTEN records them, and the next publish of that unit removes only
# the files its last one wrote and this one does not. Nothing is written or removed through a symlink.

WRITTEN = ".recipe-written.json"


def publish_files(run_dir: Path, unit: str, files: dict[str, Path | bytes]) -> dict[str, Path]:
    """Write `files` ({path under run_dir: a source file to copy, or bytes}) as publish unit `unit`;
    remove what this unit wrote last time and does not write now. -> {path: where it was written}."""
    run_dir = Path(run_dir)
    with _one_writer(run_dir):                   # two runs publishing into one --output: one record, both units
        return _publish(run_dir, unit, files)


def own_folder(run_dir: Path, rel: str) -> Path:
    """A folder of ours under run_dir that a library writes into itself (TensorBoard's event files): made here,
    never through a symlink, refused in one line where a user's file is in the way."""
    run_dir = Path(run_dir)
    _refuse_links(run_dir, f"{rel}/x")
    target = under(run_dir, rel)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise UnsafePath(f"{target} is not a folder recipe made; move it away (or name another --output) and rerun")
    target.mkdir(parents=True, exist_ok=True)
    return target


@contextlib.contextmanager
def _one_writer(run_dir: Path):
    import fcntl
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)    # a lock on the folder itself: no file of ours to leave
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _publish(run_dir: Path, unit: str, files: dict[str, Path | bytes]) -> dict[str, Path]:
    record = _read_written(run_dir)
    old = set(record.get(unit, ()))
    for rel in sorted(old | set(files)):
        _refuse_links(run_dir, rel)
    for rel in files:
        _in_the_way(run_dir, rel, old)
    record[unit] = sorted(old | set(files))        # a crash half-way leaves nothing of ours unrecorded
    _write_written(run_dir, record)
    for rel in sorted(old - set(files), reverse=True):
        _remove_ours(run_dir, rel)
    out = {rel: _write_one(run_dir, rel, src) for rel, src in sorted(files.items())}
    record[unit] = sorted(files)
    if not files:
        del record[unit]
    _write_written(run_dir, record)
    return out


def publish_tree(run_dir: Path, unit: str, src: Path | None, skip: tuple[str, ...] = ()) -> None:
    """Publish every file under folder `src` (names in `skip` left out, at any depth) as run_dir/unit/...;
    src None or missing: unit is emptied of what we wrote."""
    files: dict[str, Path | bytes] = {}
    if src is not None and Path(src).is_dir():
        for f in sorted(Path(src).rglob("*")):
            if f.is_file() and f.name not in skip:
                files[f"{unit}/{f.relative_to(src).as_posix()}"] = f
    publish_files(run_dir, unit, files)


def _read_written(run_dir: Path) -> dict[str, list[str]]:
    import json
    p = run_dir / WRITTEN
    try:
        data = json.loads(p.read_text(encoding="utf-8")) if p.is_file() and not p.is_symlink() else {}
    except (OSError, ValueError):
        data = {}
    units = data.get("units") if isinstance(data, dict) else None
    if not isinstance(units, dict):
        return {}
    # an entry edited to leave the run directory is dropped: the record can never make us remove a user's file
    return {k: [f for f in v if _plain(f)] for k, v in units.items() if isinstance(k, str) and isinstance(v, list)}


def _plain(rel) -> bool:
    return isinstance(rel, str) and bool(rel) and not os.path.isabs(rel) and ".." not in rel.split("/")


def _write_written(run_dir: Path, record: dict[str, list[str]]) -> None:
    import json
    run_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"about": "files recipe wrote here; it removes only these", "units": record}, indent=1)
    _write_one(run_dir, WRITTEN, text.encode() + b"\n")


def _refuse_links(run_dir: Path, rel: str) -> None:
    """A symlink where we need a folder is the user's: refuse in one line, never follow it."""
    if ".." in rel.split("/") or os.path.isabs(rel):
        under(run_dir, rel)                              # raises: not a plain relative name
    p = Path(run_dir)
    for part in rel.split("/")[:-1]:
        p = p / part
        if p.is_symlink():
            raise UnsafePath(f"{p} is a symlink; recipe writes its own folder there and will not write through "
                             "a link: remove the link (or name another --output) and rerun")
    under(run_dir, rel)                                  # and nothing else leads out of the run directory


def _in_the_way(run_dir: Path, rel: str, ours: set[str]) -> None:
    """A user's file where we need a folder, or a user's folder where we write a file: refuse before removing
    anything (what we wrote there ourselves is removed first, so it is never in the way)."""
    run_dir = Path(run_dir)
    p = run_dir
    for part in rel.split("/")[:-1]:
        p = p / part
        if p.exists() and not p.is_dir() and p.relative_to(run_dir).as_posix() not in ours:
            raise UnsafePath(f"{p} is a file, but recipe writes a folder there: move it away and rerun")
    target = run_dir / rel
    if target.is_dir() and not target.is_symlink() and any(
            f.relative_to(run_dir).as_posix() not in ours for f in target.rglob("*") if not f.is_dir()):
        raise UnsafePath(f"{target} is a folder, but recipe writes a file there: move it away and rerun")


def _remove_ours(run_dir: Path, rel: str) -> None:
    """Remove a file we wrote (not a link or folder someone put in its place), then its folders if empty."""
    p = Path(run_dir) / rel
    if p.is_file() and not p.is_symlink():
        p.unlink()
    for parent in p.parents:
        if parent == Path(run_dir) or Path(run_dir) not in parent.parents:
            break
        try:
            parent.rmdir()                               # only if empty: a user's file keeps its folder
        except OSError:
            break


def _write_one(run_dir: Path, rel: str, src: Path | bytes) -> Path:
    """Copy (or write) to a temp file beside the target, then rename over it: a symlink at the target is
    replaced, never followed, and a reader never sees half a file."""
    import shutil
    import tempfile
    target = under(run_dir, rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.name[-20:])
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(src, bytes):
                out.write(src)
        if isinstance(src, bytes):
            os.chmod(tmp, 0o644)                         # as write_text would (mkstemp makes it 0600)
        else:
            shutil.copy2(src, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
