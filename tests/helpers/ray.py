"""What the Ray executor's tests share."""
from __future__ import annotations

import os
import sys
import time


def restore_registry():
    """Importing runner.executors.ray registers "ray": undone after the module that used it, for the tests that
    list the known executors (tests/test_executors.py) and a later import that registers it again."""
    from runner import executors
    saved = dict(executors._FACTORIES)
    yield
    executors._FACTORIES.clear()
    executors._FACTORIES.update(saved)
    sys.modules.pop("runner.executors.ray", None)
    vars(executors).pop("ray", None)       # else `from runner.executors import ray` finds the old module


def runtime_processes(temp_dir: str) -> list:
    """The processes of the Ray runtime whose temp dir (`--temp-dir`, RAY_TMPDIR) is `temp_dir`: every one
    names it on its command line (session folder, sockets, logs)."""
    import psutil
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.pid != os.getpid() and any(temp_dir in a for a in p.info["cmdline"] or []):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def wait_gone(temp_dir: str, seconds: float) -> list:
    """The runtime's processes still running after up to `seconds` (none: it ended)."""
    deadline = time.monotonic() + seconds
    while (left := runtime_processes(temp_dir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def stop(temp_dir: str) -> None:
    """Kill every process of that runtime, by its id."""
    import psutil
    for _ in range(3):
        procs = runtime_processes(temp_dir)
        if not procs:
            return
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=10)
