"""Terminal output for runs: one line per step, a spinner while it works (rich)."""
from __future__ import annotations

from typing import Any


class StepUI:
    def __init__(self, console: Any = None):
        from rich.console import Console
        self.console = console or Console(stderr=True, highlight=False)
        self._status = None

    def log(self, msg: str) -> None:
        self.console.print(f"    {msg}", markup=False, soft_wrap=True)

    def started(self, step) -> None:
        if self.console.is_terminal:
            self._status = self.console.status(f"{step.name} ...")
            self._status.start()
        else:
            self.console.print(f"  ... {step.name}", markup=False)

    def _stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def finished(self, rec) -> None:
        self._stop()
        s = rec.stats or {}
        rows = f"{s['rows_in']:,} -> {s['rows_out']:,} rows" if "rows_in" in s else ""
        dropped = sum(s.get("dropped", {}).values()) if isinstance(s.get("dropped"), dict) else 0
        extra = f", {dropped:,} dropped" if dropped else ""
        mark = "[green]✓[/]" if rec.status == "ran" else "[dim]=[/]"
        took = f"{rec.seconds:.1f}s" if rec.status == "ran" else "cached"
        self.console.print(f"  {mark} {rec.name:<16} {took:>7}  {rows}{extra}")

    def failed(self, name: str) -> None:
        self._stop()
        self.console.print(f"  [red]✗[/] {name}")
