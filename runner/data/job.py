"""The executor seam: a data step says WHAT to compute (a Job), an executor (runner/executors/) decides WHERE.

A data step's work has two parts:

  batch(b) -> result     row-parallel and pure: one batch of rows (or lines) in, the batch's output lines and
                         compact per-row state or counts out; no shared state, no files written, so a batch may
                         run in a forked worker, another host's process, or twice (a retried task)
  reduce(results) -> T   global: consumes the results IN INPUT ORDER (MinHash band keys, candidates'
                         confirmation, split and mix on ids and counts) and writes the artifact through the
                         step's Store

A global part that is a group-by is a Job too: its batches are partitions by key, so no group spans two (the
dedup's exact and MinHash candidate group-bys, runner/data/groupby.py).

An Executor runs a Job: it calls `batch` on every batch, wherever it likes, in any order it likes, and hands
the results to `reduce` in the batches' order. Whatever the executor, the artifact is the same bytes.
Executors register by name (runner/executors/__init__.py); RunOptions.executor picks one at run time and is
never fingerprinted: where the work runs is not what the recipe means."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterable, Iterator, Protocol, TypeVar

B = TypeVar("B")   # a batch
R = TypeVar("R")   # what batch() makes of one
T = TypeVar("T")   # what reduce() makes of all of them


@dataclass(frozen=True)
class Job(Generic[B, R, T]):
    batch: Callable[[B], R]                       # pure, row-parallel
    batches: Iterable[B]                          # in input order (e.g. runner.data.io.Lines: a file in chunks)
    reduce: Callable[[Iterator[R]], T]            # global, sees the results in input order
    # Hints an executor may use or ignore; neither changes a byte of the result.
    big: bool = True        # enough rows that spreading them over processes pays for starting them
    forkable: bool = True   # False: the batch function holds state that does not survive a fork
                            # (torch's or rensa's thread pool); run it in this process or a fresh one
    name: str = ""          # what the work is, for an executor's logs ("filter.tang")


class Executor(Protocol):
    """Runs jobs. One method; everything else (workers, a cluster's address) is the executor's own."""
    name: str

    def run(self, job: Job[Any, Any, T]) -> T: ...


def serial(job: Job[Any, Any, T]) -> T:
    """The reference semantics every executor must match: batch after batch, in this process."""
    return job.reduce(map(job.batch, job.batches))
