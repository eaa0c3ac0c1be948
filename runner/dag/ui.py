"""Terminal output for runs: one line per step, a spinner while it works (rich). A long step reports
progress (rows done of a total): on a terminal the spinner line becomes a bar with rows/s and an ETA;
otherwise (CI logs) a plain line every RECIPE_PROGRESS_EVERY seconds (default 10)."""
from __future__ import annotations

import os
import time
from typing import Any

from ..steps.result import count


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds + 0.5), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def progress_text(name: str, done: int, total: int | None, elapsed: float, width: int = 24) -> str:
    rate = done / elapsed if elapsed > 0 else 0.0
    parts = [name]
    if total:
        filled = min(width, int(width * done / total))
        parts.append("━" * filled + "╺" + " " * (width - filled - 1) if filled < width else "━" * width)
        parts.append(f"{done / total:4.0%} {done:,}/{total:,} rows")
    else:
        parts.append(f"{done:,} rows")
    parts.append(f"{rate:,.0f} rows/s")
    if total and rate > 0:
        parts.append(f"ETA {_clock((total - done) / rate)}")
    return "  ".join(parts)


class StepUI:
    def __init__(self, console: Any = None):
        from rich.console import Console
        self.console = console or Console(stderr=True, highlight=False)
        self._status = None

    def log(self, msg: str) -> None:
        self.console.print(f"    {msg}", markup=False, soft_wrap=True)

    def progress(self, done: int, total: int | None = None) -> None:
        now = time.monotonic()
        if self._status is not None:
            if now - self._shown >= 0.1 or self._shown == self._start or (total and done >= total):
                self._status.update(progress_text(f"{self._name}", done, total, now - self._start))
                self._shown = now
        elif now - self._shown >= self._every or (total and done >= total and self._shown > self._start):
            self.console.print(f"    {progress_text(self._name, done, total, now - self._start)}", markup=False)
            self._shown = now

    def started(self, step) -> None:
        self._name, self._start = step.name, time.monotonic()
        self._shown = self._start
        self._every = float(os.environ.get("RECIPE_PROGRESS_EVERY", "10"))
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
        r = rec.result
        rows = f"{count(r.rows_in)} -> {count(r.rows_out)} rows" if r.rows_in is not None else ""
        dropped = sum(r.dropped.values())
        extra = f", {count(dropped)} dropped" if dropped else ""
        mark = "[green]✓[/]" if rec.status == "ran" else "[dim]=[/]"
        took = f"{rec.seconds:.1f}s" if rec.status == "ran" else "cached"
        self.console.print(f"  {mark} {rec.name:<16} {took:>7}  {rows}{extra}")

    def failed(self, name: str) -> None:
        self._stop()
        self.console.print(f"  [red]✗[/] {name}")
