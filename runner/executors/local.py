"""The local executor: today's forked workers (runner/data/parallel.py). Batches go to one worker process per
core and come back in input order, at most 2 per worker in flight; workers are forked, so they inherit the
step's state (tokenizer, settings) without pickling it. A small job, and one whose state does not survive
a fork, runs in this process."""
from __future__ import annotations

from typing import Any, TypeVar

from ..data.parallel import cpus, ordered_map
from ..data.job import Job

T = TypeVar("T")


class LocalExecutor:
    """One forked worker per core for a big job that survives a fork; this process otherwise."""
    name = "local"

    def __init__(self, workers: int | None = None):
        self.workers = workers

    def run(self, job: Job[Any, Any, T]) -> T:
        workers = (self.workers or cpus()) if job.big and job.forkable else 1
        return job.reduce(ordered_map(job.batch, job.batches, workers))
