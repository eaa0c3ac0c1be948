"""What the train layer reads: one frozen value per step, built by the step kind from its declared
parameters (each value decided once, in that step kind's declare()). The train layer never sees the
recipe, so it cannot read a setting that the fingerprint does not cover.

`Spec` holds what every consumer of a model needs (which model, from where, with which seed and
template); each consumer has its own type with only its own fields: a trainer's spec lives in its
package's config module (runner/trainers/<name>/), the evaluation, export and few-shot specs here."""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, TypeVar

from ..recipe import model

S = TypeVar("S", bound="Spec")


@dataclass(frozen=True, kw_only=True)
class Spec:
    model: model.Model                          # model.init_from as the step decided it
    seed: int
    base_dir: Path                              # the recipe's folder: relative paths resolve against it
    stage: str | None = None                    # the stage's name (a meta recipe's training: its role);
    #                                             None for a step of no stage (eval.few_shot)
    template: model.Template | None = None      # rendering prompts (and max_length for training)

    def path(self, p: str | Path) -> Path:
        return (self.base_dir / p).resolve()

    @classmethod
    def of(cls: type[S], params: Mapping[str, Any], base_dir: Path, **more: Any) -> S:
        """From a step's declared parameters (the keys that are fields; the rest is the step's own)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in params.items() if k in names}, "base_dir": Path(base_dir), **more})


@dataclass(frozen=True)
class Fisher:
    """What of a later stage's `ewc:` shapes the Fisher a stage leaves behind: not lambda, so a lambda
    sweep reuses the trained stage."""
    fisher_samples: int
    gamma: float


@dataclass(frozen=True, kw_only=True)
class EvalSpec(Spec):
    evaluate: model.Evaluate                    # loss rows, generation prompts and settings


@dataclass(frozen=True, kw_only=True)
class ExportSpec(Spec):
    recipe: str                                 # the recipe's name (export manifest)
    merge: bool = False                         # also merge the adapter into the base


@dataclass(frozen=True, kw_only=True)
class FewShotSpec(Spec):
    inner: model.Inner                          # FOMAML's inner loop: how each model adapts to k shots
    few_shot_eval: model.FewShotEval


def dump(spec: Spec) -> dict[str, Any]:
    """JSON data for another process (the launcher's workers); load() rebuilds the same value."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return str(v) if isinstance(v, Path) else v
    return plain(spec)


def load(tp: type[S], data: Mapping[str, Any]) -> S:
    """dump()'s inverse, for a spec of type `tp`."""
    return _freeze(tp, data)


def _freeze(tp: Any, v: Any) -> Any:
    if v is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
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
        return types.MappingProxyType({k: _freeze(typing.get_args(tp)[1], x) for k, x in v.items()})
    if tp is Path:
        return Path(v)
    return v
