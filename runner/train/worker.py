"""One training process of a multi-process stage:  python -m runner.train.worker SPEC.json

Every process the launcher starts runs this with the same spec (write_spec) and trains its shard;
the main process writes final/, log_history.json and metrics.json. The recipe travels as its
canonical resolved document, so every process trains exactly what the parent validated."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from ..recipe import model


def write_spec(path: str | Path, recipe: model.Recipe, stage: model.Stage, train_rows_path: str | Path,
               out_dir: str | Path, *, init_from: str | Path | None = None, ewc_state: str | Path | None = None,
               resume: bool = True, trust: bool = False) -> Path:
    """The JSON spec for train_stage's arguments."""
    spec = {"file": str(recipe.file), "document": recipe.document, "stage": stage.name,
            "train_rows": str(train_rows_path), "out_dir": str(out_dir),
            "init_from": str(init_from) if init_from else None,
            "ewc_state": str(ewc_state) if ewc_state else None, "resume": resume, "trust": trust,
            "ewc_off": stage.ewc is None}   # the compiler may turn a stage's ewc off: the document alone can't say
    path = Path(path)
    path.write_text(json.dumps(spec, ensure_ascii=False))
    return path


def run(spec_path: str | Path) -> dict[str, Any]:
    from .run_sft import train_stage

    spec = json.loads(Path(spec_path).read_text())
    recipe = model.build(spec["document"], Path(spec["file"]))
    stage = recipe.stage(spec["stage"])
    if spec["ewc_off"]:
        stage = dataclasses.replace(stage, ewc=None)
    return train_stage(recipe, stage, spec["train_rows"], spec["out_dir"],
                       init_from=spec["init_from"], ewc_state=spec["ewc_state"], resume=spec["resume"],
                       trust=spec["trust"])


def main(argv: list[str]) -> int:
    # the deepspeed launcher appends --local_rank=N; LOCAL_RANK in the environment says the same
    specs = [a for a in argv if not a.startswith("--local_rank")]
    if len(specs) != 1:
        print("usage: python -m runner.train.worker SPEC.json", file=sys.stderr)
        return 2
    run(specs[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
