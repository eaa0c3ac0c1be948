"""JSON Lines in and out. Artifacts are compared byte for byte (cache hits, determinism tests), so a
row is always written the same way: sorted keys, no spaces, UTF-8 kept as is, one row per line."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from .common import without_gc


def dumps(row: Any) -> str:
    return json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> int:
    """Write rows to `path` (parent folders created); return how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    # newline="\n": the same bytes on every platform
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(dumps(row))
            f.write("\n")
            n += 1
    return n


def iter_jsonl(path: str | Path) -> Iterator[Any]:
    """Rows of a JSON Lines file we wrote ourselves (trusted: a bad line is our bug and raises)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


@without_gc
def read_jsonl(path: str | Path) -> list[Any]:
    return list(iter_jsonl(path))


class JsonlRows:
    """A JSON Lines file we wrote, as a read-only sequence of rows that never holds them all: iterating
    streams the file; `rows[i]` and `lines(indices)` read by row number through the byte offsets of the
    lines (8 bytes a row). The data steps keep compact per-row state (hashes, indices) and read rows
    like this, so their memory does not grow with the rows' text."""

    def __init__(self, path: str | Path):
        import numpy as np

        self.path = Path(path)
        ends = []
        pos = 0
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                ends.append(np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10) + (pos + 1))
                pos += len(block)
        if pos and (not ends or not len(ends[-1]) or ends[-1][-1] != pos):
            ends.append(np.array([pos]))     # a last line without a newline
        self._starts = np.concatenate([np.zeros(1, dtype=np.int64), *ends]).astype(np.int64)
        self._fd: int | None = None

    def __len__(self) -> int:
        return len(self._starts) - 1

    def __iter__(self) -> Iterator[Any]:
        return iter_jsonl(self.path)

    def line(self, i: int) -> bytes:
        """Row i's line as written, newline included. Read with pread, not a memory map: mapped pages
        would count towards the process's memory for as long as the file is read."""
        line = self._read(int(self._starts[i]), int(self._starts[i + 1]))
        return line if line.endswith(b"\n") else line + b"\n"

    def lines(self, indices: Iterable[int]) -> Iterator[bytes]:
        """The lines of `indices`, in that order, as line() gives them; a run of consecutive rows is read
        with one pread of at most SPAN bytes (a pread a row was most of the cost of copying rows)."""
        import numpy as np

        indices = indices if isinstance(indices, list) else list(indices)
        if len(indices) < 16:      # too few to pay for finding runs (a small source's rows)
            yield from map(self.line, indices)
            return
        idx = np.array(indices, dtype=np.int64)
        cut = np.flatnonzero(np.diff(idx) != 1) + 1
        firsts, ends = idx[np.r_[0, cut]], idx[np.r_[cut - 1, len(idx) - 1]] + 1
        starts = self._starts
        for a, b, sa, sb in zip(firsts.tolist(), ends.tolist(), starts[firsts].tolist(), starts[ends].tolist()):
            while sb - sa > SPAN and b - a > 1:    # [a, c): whole lines within SPAN bytes, or one line alone
                c = max(a + 1, int(np.searchsorted(starts, sa + SPAN, side="right")) - 1)
                yield self._read(sa, int(starts[c]))
                a, sa = c, int(starts[c])
            block = self._read(sa, sb)
            yield block if block.endswith(b"\n") else block + b"\n"    # a last line without one

    def _read(self, start: int, end: int) -> bytes:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return os.pread(self._fd, end - start, start)

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    def __getitem__(self, i: int) -> Any:
        return json.loads(self.line(i))

    def write(self, path: str | Path, indices: Iterable[int]) -> int:
        """Copy the lines of `indices`, in that order, to `path`: the same bytes write_jsonl would write
        for those rows, without parsing them."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        indices = list(indices)
        with open(path, "wb") as f:
            f.writelines(self.lines(indices))
        return len(indices)


SPAN = 1 << 20     # bytes read at once at most by JsonlRows.lines (one longer line is read whole)


def rows_of(path: str | Path) -> "JsonlRows | list":
    """An artifact's rows for a step that reads them by index (an empty list when the file is missing)."""
    return JsonlRows(path) if Path(path).exists() else []


def count_lines(path: str | Path) -> int:
    n = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            n += block.count(b"\n")
    return n


@dataclass(frozen=True)
class Lines:
    """A JSON Lines file as batches for an executor: (index of the first row, lines), `size` non-blank
    lines at a time. A description, not an open file: an executor on other hosts may read `path` itself
    (from a filesystem they all see) as long as it keeps the batches' order."""
    path: Path
    size: int

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        from .parallel import line_chunks
        return line_chunks(self.path, self.size)
