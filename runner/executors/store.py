"""Store: the one object a data step writes its artifact through.

The folder behind it is the cache's tmp/<fp>.<pid>/ (Cache.begin); the engine commits it atomically once
run() returns (Cache.commit: manifest last, then one rename) or removes it (Cache.abort), so whatever
executor computed the rows, a half-written artifact is never trusted. Paths are relative to the artifact
and checked to stay inside it (runner.paths.under). The same bytes as runner.data.io writes: UTF-8, "\\n"."""
from __future__ import annotations

from pathlib import Path
from typing import IO, Any, Iterable

from ..data.io import dumps
from ..paths import under


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, name: str) -> Path:
        """Where file `name` (e.g. "records/tang.jsonl") goes, its folder made: for a writer of its own."""
        p = under(self.root, name)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def open(self, name: str, binary: bool = False) -> IO[Any]:
        if binary:
            return open(self.path(name), "wb")
        return open(self.path(name), "w", encoding="utf-8", newline="\n")

    def write_jsonl(self, name: str, rows: Iterable[Any]) -> int:
        """One JSON row a line, written the one way artifacts are (runner.data.io.dumps)."""
        n = 0
        with self.open(name) as f:
            for row in rows:
                f.write(dumps(row) + "\n")
                n += 1
        return n

    def copy_lines(self, name: str, rows: Any, picks: Iterable[Any]) -> int:
        """Lines of JSON Lines files we wrote, copied without parsing: `rows` is one io.JsonlRows and
        picks its row numbers (read in runs: JsonlRows.lines), or a {key: JsonlRows} and picks (key, row
        number) pairs (a mix's draw, shuffled: read a line at a time)."""
        n = 0
        with self.open(name, binary=True) as f:
            if isinstance(rows, dict):
                for key, i in picks:
                    f.write(rows[key].line(i))
                    n += 1
            else:
                picks = list(picks)
                if picks:          # rows may be io.rows_of's [] for a missing file: nothing to copy
                    f.writelines(rows.lines(picks))
                n = len(picks)
        return n
