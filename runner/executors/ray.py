"""The Ray executor (`recipe run R --executor ray`): a data step's batches as Ray tasks, on a local Ray runtime
or on the cluster at RAY_ADDRESS (`--ray-address HOST:PORT`), with the step's own batch and reduce functions.

The driver (this process) reads the batches, keeps at most two per cluster CPU in flight, and hands the
results to the step's reducer in input order, which writes the artifact through the step's Store under the
cache's tmp/ folder; the engine commits it atomically as with the local executor. So the bytes are the
local executor's, a task Ray retries (its worker died) computes the same result again, and a run that stops
half-way commits nothing of the step. The batch function goes to the object store once per job and is
unpickled once per worker (a tokenizer is not rebuilt for every batch). Workers load model and tokenizer
files by the recipe's paths and the batches come from the cache, so every node must see the cache root and
the recipe's folder at the same paths: checked once per cache root, one line when a node cannot."""
from __future__ import annotations

import os
import socket
from collections import Counter, deque
from pathlib import Path
from typing import Any, Iterator, TypeVar

from ..data.job import Job
from ..errors import RecipeError
from ..environment import environment_kept
from . import register

try:
    import ray
    import ray.exceptions
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ModuleNotFoundError as e:
    if e.name != "ray" and not (e.name or "").startswith("ray."):
        raise
    raise RecipeError("--executor ray: Ray is not installed; install it with pip install -e '.[ray]'") from None

T = TypeVar("T")

# Tasks run per (job name, node id) in this process: where the work ran (the cluster test asserts both nodes).
PLACED: Counter = Counter()
_SEEN: set[str] = set()          # folders every node was checked to see
_FNS: dict[str, Any] = {}        # in a worker: the last jobs' batch functions, unpickled once


class _UserError:
    """A RecipeError raised in a task, carried back as its text (subclasses do not all pickle)."""
    def __init__(self, text: str):
        self.text = text


@ray.remote(num_cpus=1, max_retries=3, scheduling_strategy="SPREAD")
def _run_batch(fn_ref: list, batch: Any) -> tuple[str, Any]:
    """One batch on a worker: (the node it ran on, the batch function's result). The function arrives as an
    object reference in a list, so Ray does not resolve it per task and the worker unpickles it once."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")   # one task per CPU already
    key = fn_ref[0].hex()
    if key not in _FNS:
        if len(_FNS) >= 4:
            _FNS.pop(next(iter(_FNS)))
        _FNS[key] = ray.get(fn_ref[0])
    node = ray.get_runtime_context().get_node_id()
    try:
        return node, _FNS[key](batch)
    except RecipeError as e:
        return node, _UserError(str(e))


@ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
def _warm() -> None:
    """Start a worker and import what the batch functions use while the driver loads the sources."""
    from ..chat import batch  # noqa: F401
    from ..data import dedup, filters  # noqa: F401


@ray.remote(num_cpus=0)
def _sees(path: str) -> bool:
    return os.path.exists(path)


def address() -> str | None:
    """The cluster to join: RAY_ADDRESS (what --ray-address sets); None starts a local runtime when none runs."""
    return os.environ.get("RAY_ADDRESS") or None


def connect() -> None:
    """Join the cluster (or start a local runtime) once per process; a cluster that does not answer is one line."""
    if ray.is_initialized():
        return
    where = address()
    try:
        _reachable(where)
        _init(where)
        for _ in range(int(ray.cluster_resources().get("CPU", 1))):
            _warm.remote()      # not waited for: the first step's tasks find their workers started
    except Exception as e:      # Ray raises bare Exceptions too ("node timed out during startup")
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if where and where != "local":
            raise RecipeError(f"--ray-address {where}: no Ray cluster answers there ({first}); start one with "
                              "`ray start --head --port PORT` or leave --ray-address and RAY_ADDRESS unset to run "
                              "on a local Ray runtime") from None
        raise RecipeError(f"--executor ray: a local Ray runtime did not start ({first}); see /tmp/ray/session_latest/logs, "
                          "or run with --executor local") from None


def _init(where: str | None) -> None:
    """ray.init, without the marks it leaves on this process's environment. Ray 2.60 sets RAY_AUTH_MODE=token
    (starting a local runtime: token authentication on), PYTHONBREAKPOINT (its remote debugger) and
    RAY_USAGE_STATS_ENABLED in os.environ, and ray.shutdown() leaves them. A process started from here later
    inherits them: with RAY_AUTH_MODE, a driver that joins a cluster without tokens demands one of that
    cluster's workers, whose calls to it fail, and Ray reports the object's owner as gone (OwnerDiedError).
    The runtime's own processes have what they need already, so every variable is put back as it was."""
    with environment_kept():
        ray.init(address=where, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                 configure_logging=True)


def _reachable(where: str | None) -> None:
    """A HOST:PORT where nothing listens fails now, not after Ray's minute of retries."""
    host, _, port = (where or "").rpartition(":")
    if host and port.isdigit() and "://" not in where:
        socket.create_connection((host, int(port)), timeout=10).close()


def check_nodes_see(path: Path) -> None:
    """One task pinned to every live node: does it see `path`'s folder? The batches and model files are
    read by path, so a node that does not see the cache root would fail (or worse, read another file)."""
    here = Path(path).resolve()
    # the cache root once (an artifact's file is <root>/objects/<fp>/...), any other file's folder
    folder = str(next((p.parent for p in here.parents if p.name == "objects"), here.parent))
    if folder in _SEEN:
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [_sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(folder)
            for n in nodes]
    for n, ok in zip(nodes, ray.get(refs)):
        if not ok:
            raise RecipeError(f"ray: node {n.get('NodeManagerAddress')} does not see {folder}: the cache root "
                              "(--cache-dir) and the recipe's folder must be on a filesystem every node mounts "
                              "at the same path")
    _SEEN.add(folder)


class RayExecutor:
    """Every batch a Ray task (any node, Ray retries a task whose worker died); reduce() here, in order."""
    name = "ray"

    def __init__(self) -> None:
        connect()

    def run(self, job: Job[Any, Any, T]) -> T:
        path = getattr(job.batches, "path", None)
        try:
            if path is not None:
                check_nodes_see(path)
            return job.reduce(self._results(job))
        except ray.exceptions.RayTaskError as e:
            raise e.as_instanceof_cause() from None     # a bug in a batch function: its own traceback
        except ray.exceptions.RayError as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise RecipeError(f"ray: the cluster failed during {job.name or 'a data step'} ({type(e).__name__}: "
                              f"{first[:200]}); nothing of this step was committed: rerun when the cluster is "
                              "back, finished steps come from the cache") from None

    def _results(self, job: Job[Any, Any, T]) -> Iterator[Any]:
        """The batch function's results in input order, at most 2 tasks per cluster CPU in flight."""
        fn_ref = [ray.put(job.batch)]
        window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        pending: deque = deque()
        try:
            for batch in job.batches:
                pending.append(_run_batch.remote(fn_ref, batch))
                if len(pending) >= window:
                    yield self._take(job, pending.popleft())
            while pending:
                yield self._take(job, pending.popleft())
        finally:
            for ref in pending:                 # an early exit (a user error in one batch): stop the rest
                ray.cancel(ref)

    @staticmethod
    def _take(job: Job, ref: Any) -> Any:
        node, result = ray.get(ref)
        PLACED[(job.name, node)] += 1
        if isinstance(result, _UserError):
            raise RecipeError(result.text)
        return result


register("ray", RayExecutor)
