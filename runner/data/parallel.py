"""Row-parallel work: chunks of rows go to worker processes and come back in input order, so what a
step writes is the same bytes whatever the number of workers. At most 2 chunks per worker are in
flight, so memory stays bounded by the chunk size, not the number of rows.

Workers are forked (Linux): they inherit the step's state (tokenizer, settings) without pickling it.
Elsewhere, and for one worker, the work runs in this process. Steps do not call this directly: it is the
local executor's engine (runner/executors/local.py), and a step hands its batches to ctx.executor."""
from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from typing import Any, Callable, Iterable, Iterator

from ..errors import RecipeError

_TASK: Callable[[Any], Any] | None = None


class _UserError:
    """A RecipeError raised in a worker, carried back as its text (subclasses do not all pickle)."""
    def __init__(self, text: str):
        self.text = text


def cpus() -> int:
    """Cores this process may run on; RECIPE_WORKERS overrides (1 = no worker processes)."""
    if os.environ.get("RECIPE_WORKERS"):
        return max(1, int(os.environ["RECIPE_WORKERS"]))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _call(chunk: Any) -> Any:
    assert _TASK is not None
    try:
        return _TASK(chunk)
    except RecipeError as e:
        return _UserError(str(e))


def _result(r: Any) -> Any:
    if isinstance(r, _UserError):
        raise RecipeError(r.text)
    return r


def ordered_map(fn: Callable[[Any], Any], chunks: Iterable[Any], workers: int) -> Iterator[Any]:
    """fn(chunk) for each chunk, in order; in `workers` forked processes when that is more than 1."""
    if workers <= 1 or sys.platform != "linux":
        yield from map(fn, chunks)
        return
    global _TASK
    _TASK = fn
    # Children tokenize on one thread each; telling the tokenizers library so before the fork also
    # silences its "forked after parallelism has already been used" warning.
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        pool = multiprocessing.get_context("fork").Pool(workers)
    finally:
        if saved is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved
    try:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.apply_async(_call, (chunk,)))
            if len(pending) >= 2 * workers:
                yield _result(pending.popleft().get())
        while pending:
            yield _result(pending.popleft().get())
    finally:
        # On an early exit (a user error in one chunk, a consumer that stops) let the chunks in flight
        # finish (at most 2 per worker) and close the pool: Pool.terminate() while its task thread is in
        # the middle of a put() deadlocks (seen in CI on the render check's error path).
        for p in pending:
            p.wait()
        pool.close()
        pool.join()
        _TASK = None


def line_chunks(path: Any, rows: int) -> Iterator[tuple[int, list[str]]]:
    """(index of the first row, lines) for every `rows` non-blank lines of a text file."""
    start, lines = 0, []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                lines.append(line)
                if len(lines) == rows:
                    yield start, lines
                    start, lines = start + rows, []
    if lines:
        yield start, lines
