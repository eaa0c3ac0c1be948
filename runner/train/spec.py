"""What the train layer reads: one frozen value per stage, built by the train, evaluate and export steps
from their declared parameters (each value decided once, in that step kind's declare()). The train layer
never sees the recipe, so it cannot read a setting that the fingerprint does not cover."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..recipe import model


@dataclass(frozen=True)
class Fisher:
    """What of a later stage's `ewc:` shapes the Fisher a stage leaves behind: not lambda, so a lambda
    sweep reuses the trained stage."""
    fisher_samples: int
    gamma: float


@dataclass(frozen=True)
class StageSpec:
    stage: str                                  # the stage's name
    model: model.Model                          # model.init_from as the train step decided it
    seed: int
    base_dir: Path                              # the recipe's folder: relative paths resolve against it
    template: model.Template | None = None      # rendering rows and prompts (train and eval steps)
    train: model.Train | None = None            # training settings (train steps)
    ewc: model.Ewc | None = None                # this stage's EWC anchor; None: EWC is off
    fisher_for: Fisher | None = None            # a later stage's ewc: leave a Fisher behind, this big
    save_total_limit: int | None = None
    evaluate: model.Evaluate | None = None      # eval steps
    merge: bool = False                         # export: also merge the adapter into the base
    recipe: str | None = None                   # the recipe's name (export manifest)
    inner: model.Inner | None = None            # meta recipes: FOMAML's inner loop
    outer: model.Outer | None = None            #   its outer loop
    total_steps: int | None = None              #   meta-training steps
    few_shot_eval: model.FewShotEval | None = None   # the few-shot evaluation

    def path(self, p: str | Path) -> Path:
        return (self.base_dir / p).resolve()

    @classmethod
    def of(cls, params: Mapping[str, Any], base_dir: Path, **more: Any) -> "StageSpec":
        """From a step's declared parameters (the keys that are fields; the rest is the step's own)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in params.items() if k in names}, "base_dir": Path(base_dir), **more})


def _thaw(spec: StageSpec) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return str(v) if isinstance(v, Path) else v
    return plain(spec)


def dump(spec: StageSpec) -> dict[str, Any]:
    """JSON data for another process (the launcher's workers); load() rebuilds the same value."""
    return _thaw(spec)


def load(data: Mapping[str, Any]) -> StageSpec:
    return _freeze(StageSpec, data)


def _freeze(tp: Any, v: Any) -> Any:
    if v is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", typing.Union)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = next((a for a in args if dataclasses.is_dataclass(a)), args[0]) if isinstance(v, dict) else \
            next((a for a in args if typing.get_origin(a) is tuple), args[0]) if isinstance(v, list) else args[0]
        origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(**{k: _freeze(hints[k], x) for k, x in v.items()})
    if origin is tuple:
        return tuple(_freeze(typing.get_args(tp)[0], x) for x in v)
    if origin in (Mapping, dict):
        from types import MappingProxyType
        return MappingProxyType({k: _freeze(typing.get_args(tp)[1], x) for k, x in v.items()})
    if tp is Path:
        return Path(v)
    return v
