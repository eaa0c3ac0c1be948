"""The trainers: name -> the package that trains with it. A trainer is a small package,

  runner/trainers/<name>/<name>_config.py   its spec type (what its step declared) and the adapter to its
                                            TRL config
  runner/trainers/<name>/<name>_trainer.py  the TRL trainer subclass (as few hooks overridden as possible)
  runner/trainers/<name>/driver.py          `Spec` (the spec type) and `train(spec, **job)`: spec -> trained
                                            stage in out_dir (final/, log_history.json, metrics.json)

and one line below. `run` trains with any of them, here or under a launcher (torchrun, deepspeed) through
the one worker (runner/train/worker.py), so every trainer runs multi-process without code of its own.
Importing this registry is light: a trainer's package is imported when it trains."""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping

TRAINERS = {
    "sft": "runner.trainers.sft",          # SFT (+ EWC): the train.<stage> steps and a meta recipe's control
    "fomaml": "runner.trainers.fomaml",    # first-order MAML: a meta recipe's train.meta
}


def driver(name: str) -> ModuleType:
    """The trainer's driver module (its `Spec` and `train`)."""
    return importlib.import_module(f"{TRAINERS[name]}.driver")


def run(name: str, spec: Any, job: Mapping[str, Any], *, launcher: str = "none", num_procs: int = 1,
        hostfile: str | None = None, spec_file: Path | None = None, log: Callable[[str], None] = print,
        secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train `spec` with trainer `name`; `job` is the rest of its driver's arguments (JSON values: paths as
    text), out_dir among them. With a launcher, the processes get the spec through `spec_file`; the
    `secrets` (values from the environment) travel in their environment, never in the file."""
    if launcher == "none":
        return driver(name).train(spec, **job)
    from ..train.launch import launch
    from ..train.worker import write_spec

    path = write_spec(spec_file or Path(job["out_dir"]) / "spec.json", driver(name).__name__, spec, job,
                      secrets=secrets)
    return launch(path, launcher=launcher, num_procs=num_procs, hostfile=hostfile, log=log, secrets=secrets)
