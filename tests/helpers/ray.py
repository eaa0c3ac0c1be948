"""What the Ray executor's tests share."""
from __future__ import annotations

import sys


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
