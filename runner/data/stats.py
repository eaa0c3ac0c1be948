"""Row accounting for every data step: rows in = rows out + dropped (- added, for rows a step
creates, such as oversampled repeats), exactly, overall and per source. A step that cannot balance
its books has lost rows silently, which is a bug, so `assert_balanced` raises."""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping


class Stats:
    def __init__(self, sources: Iterable[str] = ()):
        self._src: dict[str, dict[str, Any]] = {}
        for s in sources:
            self._row(s)

    def _row(self, source: str) -> dict[str, Any]:
        if source not in self._src:
            self._src[source] = {"rows_in": 0, "rows_out": 0, "dropped": Counter(), "added": Counter()}
        return self._src[source]

    def seen(self, source: str, n: int = 1) -> None:
        self._row(source)["rows_in"] += n

    def kept(self, source: str, n: int = 1) -> None:
        self._row(source)["rows_out"] += n

    def dropped(self, source: str, reason: str, n: int = 1) -> None:
        if n:
            self._row(source)["dropped"][reason] += n

    def added(self, source: str, reason: str, n: int = 1) -> None:
        if n:
            self._row(source)["added"][reason] += n

    def assert_balanced(self) -> None:
        for source, r in self._src.items():
            rhs = r["rows_out"] + sum(r["dropped"].values()) - sum(r["added"].values())
            if r["rows_in"] != rhs:
                raise AssertionError(
                    f"row accounting for source '{source}' does not balance: {r['rows_in']} in, "
                    f"{r['rows_out']} out, dropped {dict(r['dropped'])}, added {dict(r['added'])}")

    def to_json(self) -> dict[str, Any]:
        total: dict[str, Any] = {"rows_in": 0, "rows_out": 0, "dropped": Counter(), "added": Counter()}
        by_source = {}
        for source in sorted(self._src):
            r = self._src[source]
            for k in total:
                total[k] += r[k]
            by_source[source] = _plain(r)
        return {**_plain(total), "by_source": by_source}


def _plain(r: Mapping[str, Any]) -> dict[str, Any]:
    out = {"rows_in": r["rows_in"], "rows_out": r["rows_out"], "dropped": dict(sorted(r["dropped"].items()))}
    if r["added"]:
        out["added"] = dict(sorted(r["added"].items()))
    return out


def rich_table(stats: Mapping[str, Any], title: str | None = None):
    """A rich Table of a step's stats (to_json() output): one line per source and a total."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("source", "in", "out", "dropped"):
        table.add_column(col, justify="left" if col in ("source", "dropped") else "right")

    def reasons(r: Mapping[str, Any]) -> str:
        parts = [f"{k} {v}" for k, v in r.get("dropped", {}).items()]
        parts += [f"+{k} {v}" for k, v in r.get("added", {}).items()]
        return ", ".join(parts) or "-"

    for source, r in stats.get("by_source", {}).items():
        table.add_row(source, str(r["rows_in"]), str(r["rows_out"]), reasons(r))
    table.add_row("[b]total[/b]", str(stats["rows_in"]), str(stats["rows_out"]), reasons(stats))
    return table
