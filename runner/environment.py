"""The process's environment variables, put back after a block: what a run sets for itself (an executor's
RAY_ADDRESS, the training libraries' quiet settings) or a library leaves there (ray.init's RAY_AUTH_MODE)
must not outlive the call, or a later run in this process, and every process it starts, inherits it."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def environment_kept(*names: str) -> Iterator[None]:
    """os.environ's `names` (all of it when none are named) as they were, whatever the block sets."""
    saved = {k: os.environ.get(k) for k in names} if names else dict(os.environ)
    try:
        yield
    finally:
        for k in (() if names else set(os.environ) - set(saved)):
            del os.environ[k]
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            elif os.environ.get(k) != v:
                os.environ[k] = v
