"""A hub split as `datasets` prepared it: arrow files in its cache, read in slices by load tasks where they run
(a forked worker, a Ray node) instead of row by row in the driver. hub.py opens the split; this module says
whether its rows are the files' rows as stored, cuts them into slices and reads one."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Iterator

from .readers import Raw

# A load task reads this many rows of one file (its rows, mapped, are then ~ a JSON Lines range's work).
SHARD_ROWS = 4096


def slices(parts: list[tuple[str, Any]]) -> list[tuple[Path, int, tuple]] | None:
    """(file, its size, (label, file, first, stop, rows of the split before the file)) per SHARD_ROWS rows of
    each split's arrow files, in reading order, for hub._open's (label, split) pairs. None when a split's rows
    are not its files' rows in order, as stored (held in memory, reordered or chosen by an indices mapping,
    columns changed after loading): the driver reads it then."""
    out = []
    for label, part in parts:
        files = [Path(f["filename"]) for f in part.cache_files]
        if not files or getattr(part, "_indices", None) is not None:
            return None
        before = 0
        for f in files:
            stat = f.stat()
            arrow = _arrow(str(f), stat.st_mtime_ns)
            if arrow.features != part.features:   # the split's columns are not the file's as stored
                return None
            n = arrow.num_rows
            out += [(f, stat.st_size, (label, str(f), lo, min(lo + SHARD_ROWS, n), before))
                    for lo in range(0, n, SHARD_ROWS)]
            before += n
        if before != len(part):   # files that are not the split's rows in order: read it here
            return None
    return out


def shard_rows(shard: tuple) -> Iterator[Raw]:
    """The rows of one slice, numbered within their split as the driver's read numbers them; read by
    `datasets` itself (Dataset.from_file), so features decode as in the whole split."""
    label, file, first, stop, before = shard
    rows = _arrow(file, os.stat(file).st_mtime_ns).select(range(first, stop))
    return (Raw(label, None, before + first + k, obj) for k, obj in enumerate(rows, 1))


@functools.lru_cache(maxsize=2)
def _arrow(file: str, mtime_ns: int):
    """A task's slices of one file come one after another: it is mapped once per process, not per slice
    (and again when the file was written since)."""
    from datasets import Dataset
    return Dataset.from_file(file)
