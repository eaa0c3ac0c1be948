"""Executors by name. `local` (forked workers on this machine) is the default; another executor is one
module runner/executors/<name>.py that calls register(name, factory) when imported: get(name) imports it
on first use, so adding one edits no step and no list. Tests register their own (tests/test_executors.py)."""
from __future__ import annotations

import importlib
import os
import re
from contextlib import contextmanager
from typing import Callable, Iterator

from ..errors import RecipeError
from ..data.job import Executor, Job, serial
from .local import LocalExecutor

__all__ = ["Executor", "Job", "environment_kept", "get", "names", "register", "serial"]

_FACTORIES: dict[str, Callable[[], Executor]] = {"local": LocalExecutor}
DEFAULT = "local"


def register(name: str, factory: Callable[[], Executor]) -> None:
    _FACTORIES[name] = factory


def names() -> list[str]:
    return sorted(_FACTORIES)


def get(name: str = DEFAULT) -> Executor:
    """The executor registered as `name`, importing runner/executors/<name>.py when none is yet."""
    if name not in _FACTORIES and re.fullmatch(r"[a-z][a-z0-9_]*", name or "") and name not in ("store",):
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":    # the module exists but needs a package that is missing
                raise RecipeError(f"executor '{name}' needs the package '{e.name}', which is not installed") from None
    if name not in _FACTORIES:
        raise RecipeError(f"executor '{name}': no such executor (known: {', '.join(names()) or 'none'})")
    return _FACTORIES[name]()


@contextmanager
def environment_kept(*names: str) -> Iterator[None]:
    """os.environ's `names` (all of it when none are named) as they were, whatever the block sets: an
    executor's settings (RAY_ADDRESS from --ray-address) and what its library leaves (ray.init's RAY_AUTH_MODE)
    must not outlive the call, or a later run in this process, and every process it starts, inherits them."""
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
