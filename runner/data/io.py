"""JSON Lines in and out. Artifacts are compared byte for byte (cache hits, determinism tests), so a
row is always written the same way: sorted keys, no spaces, UTF-8 kept as is, one row per line."""
from __future__ import annotations

import json
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
