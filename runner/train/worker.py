"""One training process of a multi-process stage:  python -m runner.train.worker SPEC.json

Every process the launcher starts runs this with the same spec file (write_spec) and trains its shard;
the main process writes final/, log_history.json and metrics.json. The file names the trainer's driver
module (runner/trainers/<name>/driver.py: it is data here, as a module is to `python -m`, so this layer
knows no trainer), the spec its step declared (rebuilt as the driver's `Spec`, so every process trains
exactly what the parent compiled) and the rest of the driver's arguments (`job`).

A value from the environment (a token in template.system) is never written into the spec: the file holds
a placeholder, and the launcher hands the values to its processes in their environment (RECIPE_SECRETS)."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Mapping

from ..errors import RecipeError
from ..recipe.secrets import MIN_LEN
from . import spec as specs
from .spec import Spec


SECRETS_ENV = "RECIPE_SECRETS"


def _placeholder(i: int, number: bool = False) -> str:
    return f"${{{SECRETS_ENV}[{i}]{':number' if number else ''}}}"


_PLACED = re.compile(re.escape(f"${{{SECRETS_ENV}[") + r"(\d+)\]\}")
_PLACED_NUMBER = re.compile(re.escape(f"${{{SECRETS_ENV}[") + r"(\d+)\]:number\}")


def _hide(v: Any, secrets: tuple[str, ...]) -> Any:
    """`v` with each secret text as its placeholder; a number from the environment becomes one whole."""
    if isinstance(v, str):
        if v in secrets:
            return _placeholder(secrets.index(v))
        inside = [t for t in secrets if len(t) >= MIN_LEN]
        if inside:
            # one pass, longest first: replacing text by text could find a secret inside an earlier placeholder
            found = re.compile("|".join(re.escape(t) for t in sorted(inside, key=len, reverse=True)))
            v = found.sub(lambda m: _placeholder(secrets.index(m.group())), v)
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool) and str(v) in secrets:
        return _placeholder(secrets.index(str(v)), number=True)
    if isinstance(v, dict):
        return {k: _hide(x, secrets) for k, x in v.items()}
    if isinstance(v, list):
        return [_hide(x, secrets) for x in v]
    return v


def _show(v: Any, secrets: list[str] | None) -> Any:
    """_hide's inverse, with the values the launcher passed in the environment."""
    if isinstance(v, str) and f"${{{SECRETS_ENV}[" in v:
        if secrets is None:
            raise RecipeError(f"this stage has values from the environment, which the spec file does not hold, "
                              f"and {SECRETS_ENV} did not reach this process; on other nodes, list "
                              f"{SECRETS_ENV} in ~/.deepspeed_env")
        number = _PLACED_NUMBER.fullmatch(v)
        if number:
            return json.loads(secrets[int(number.group(1))])
        return _PLACED.sub(lambda m: secrets[int(m.group(1))], v)
    if isinstance(v, dict):
        return {k: _show(x, secrets) for k, x in v.items()}
    if isinstance(v, list):
        return [_show(x, secrets) for x in v]
    return v


def write_spec(path: str | Path, driver: str, spec: Spec, job: Mapping[str, Any], *,
               secrets: tuple[str, ...] = ()) -> Path:
    """The JSON file for `driver`.train(spec, **job), `secrets` (the recipe's values from the environment)
    left out: pass the same to launch(). `job` holds out_dir, where the main process writes metrics.json."""
    data = {"driver": driver, "spec": _hide(specs.dump(spec), tuple(secrets)), "job": dict(job)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False))
    return path


def read_spec(spec_path: str | Path) -> tuple[Any, Spec, dict[str, Any]]:
    """(the driver module, its spec, its job) from a spec file."""
    import importlib

    data = json.loads(Path(spec_path).read_text())
    driver = importlib.import_module(data["driver"])
    passed = os.environ.get(SECRETS_ENV)
    spec = specs.load(driver.Spec, _show(data["spec"], json.loads(passed) if passed is not None else None))
    return driver, spec, data["job"]


def run(spec_path: str | Path) -> dict[str, Any]:
    driver, spec, job = read_spec(spec_path)
    return driver.train(spec, **job)


def main(argv: list[str]) -> int:
    # the deepspeed launcher appends --local_rank=N; LOCAL_RANK in the environment says the same
    specs_ = [a for a in argv if not a.startswith("--local_rank")]
    if len(specs_) != 1:
        print("usage: python -m runner.train.worker SPEC.json", file=sys.stderr)
        return 2
    from .distributed import shutdown
    try:
        run(specs_[0])
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
