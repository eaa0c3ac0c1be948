"""Executors by name. `local` (forked workers on this machine) is the default; another executor is one
module runner/executors/<name>.py that calls register(name, factory) when imported: get(name) imports it
on first use, so adding one edits no step and no list. Tests register their own (tests/test_executors.py)."""
from __future__ import annotations

import importlib
import re
from typing import Callable

from ..errors import RecipeError
from ..data.job import Executor, Job, serial
from .local import LocalExecutor

__all__ = ["Executor", "Job", "get", "names", "register", "serial"]

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
