"""One training process of a multi-process stage:  python -m runner.train.worker SPEC.json

Every process the launcher starts runs this with the same spec (write_spec) and trains its shard;
the main process writes final/, log_history.json and metrics.json. The stage travels as its StageSpec
(what the train step declared), so every process trains exactly what the parent compiled."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from . import spec as specs
from .spec import StageSpec


def write_spec(path: str | Path, spec: StageSpec, train_rows_path: str | Path, out_dir: str | Path, *,
               init_from: str | Path | None = None, ewc_state: str | Path | None = None,
               resume: bool = True, trust: bool = False) -> Path:
    """The JSON spec for train_stage's arguments."""
    data = {"spec": specs.dump(spec), "train_rows": str(train_rows_path), "out_dir": str(out_dir),
            "init_from": str(init_from) if init_from else None,
            "ewc_state": str(ewc_state) if ewc_state else None, "resume": resume, "trust": trust}
    path = Path(path)
    path.write_text(json.dumps(data, ensure_ascii=False))
    return path


def run(spec_path: str | Path) -> dict[str, Any]:
    from .run_sft import train_stage

    data = json.loads(Path(spec_path).read_text())
    return train_stage(specs.load(data["spec"]), data["train_rows"], data["out_dir"],
                       init_from=data["init_from"], ewc_state=data["ewc_state"], resume=data["resume"],
                       trust=data["trust"])


def main(argv: list[str]) -> int:
    # the deepspeed launcher appends --local_rank=N; LOCAL_RANK in the environment says the same
    specs_ = [a for a in argv if not a.startswith("--local_rank")]
    if len(specs_) != 1:
        print("usage: python -m runner.train.worker SPEC.json", file=sys.stderr)
        return 2
    run(specs_[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
