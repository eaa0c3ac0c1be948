"""What a step gets. A step module has `VERSION` (bump it when its output changes for the same
inputs) and `run(ctx) -> stats`; it reads its upstream artifacts from ctx.input(name), writes only
into ctx.out, and returns JSON stats (rows_in, rows_out, dropped{reason: n}, by_source{...})."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..recipe.model import Recipe


@dataclass(frozen=True)
class Step:
    name: str                      # unique: "load.tang", "mix.base", "dedup", ...
    kind: str                      # key of runner.steps.STEPS
    stage: str | None
    source: str | None
    inputs: tuple[str, ...]        # upstream step names
    params_json: str               # canonical JSON of everything this step reads from the recipe
    files: tuple[str, ...] = ()    # paths (relative to the recipe) whose bytes are part of the fingerprint

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.params_json)


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    force: bool = False
    trust: bool = False
    launcher: str = "none"
    num_procs: int = 1
    hostfile: str | None = None


@dataclass
class StepContext:
    recipe: Recipe
    step: Step
    fingerprint: str
    out: Path                       # empty; becomes the cached artifact on success
    inputs: Mapping[str, Path]      # upstream step name -> its artifact directory (read-only)
    run_dir: Path                   # runs/<recipe>: what the user looks at
    partial: Path                   # survives a crash: resumable work (training checkpoints)
    options: RunOptions = field(default_factory=RunOptions)
    log: Callable[[str], None] = print
    # progress(done, total): a long step says how far it is (rows); the UI shows a bar with rows/s and ETA
    progress: Callable[[int, int | None], None] = lambda done, total=None: None
    _tokens: Any = None

    def input(self, name: str) -> Path:
        return self.inputs[name]

    def token_counter(self) -> Callable[[dict], int]:
        """Tokens of a record rendered exactly as training will see it (template + tokenizer)."""
        if self._tokens is None:
            from ..chat import token_counter
            self._tokens = token_counter(self.recipe, self.options.trust)
        return self._tokens
