"""Frozen, typed recipe objects. Built once from the validated document with every default already
filled in from the schema, so nothing downstream invents a default. Field names are the schema's keys
(a test keeps the two in step); `from`/`lambda` become `from_`/`lambda_`."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Union

from ..errors import RecipeError
# the row filters live in their own module; a Recipe holds them, and they are reached as model.<Filter> too
from .filters import (FILTER_TYPES, DecontaminateFilter, DedupFilter, ExcludeFilter, Filter, IncompleteFilter,  # noqa: F401
                      LengthFilter, PiiFilter, RefusalFilter, RegexFilter, RepetitionFilter, ToxicityFilter)


@dataclass(frozen=True)
class Adapter:
    type: str
    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]
    trainable_tokens: tuple[str, ...] = ()   # their embedding (and tied output) rows train too

    @property
    def wraps_lm_head(self) -> bool:
        """peft wraps the LM head (trainable token rows, tied with the embeddings): the loss must be the
        model's own, since TRL's chunked/fused heads read the head's weight around the wrapper."""
        return self.type == "lora" and bool(self.trainable_tokens)


@dataclass(frozen=True)
class Model:
    base: str
    init_from: str | None
    adapter: Adapter
    trust_remote_code: bool
    dtype: str


@dataclass(frozen=True)
class Fields:
    system: str | None
    user: str
    assistant: str
    id: str | None
    meta: Mapping[str, str]


@dataclass(frozen=True)
class Source:
    path: str | None                 # a local file/folder/glob or a remote URL; None for a hub `dataset`
    dataset: str | None              # a hub dataset id (owner/name)
    config: str | None
    split: str | tuple[str, ...]
    revision: str | None
    data_files: str | tuple[str, ...] | Mapping[str, str | tuple[str, ...]] | None
    streaming: bool
    shuffle: int | None
    format: str
    fields: Fields | None
    roles: Mapping[str, str]
    on_error: str
    priority: int
    limit: int | None
    placeholders: Mapping[str, str]

    @property
    def splits(self) -> tuple[str, ...]:
        return (self.split,) if isinstance(self.split, str) else self.split


@dataclass(frozen=True)
class Sampling:
    method: str
    oversample: bool


@dataclass(frozen=True)
class Split:
    strategy: str
    eval: float
    by: str | None


@dataclass(frozen=True)
class Template:
    chat: str
    system: str | None
    train_on: str
    max_length: int


@dataclass(frozen=True)
class Train:
    trainer: str
    epochs: float
    max_steps: int | None
    learning_rate: float
    lr_scheduler: str
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float
    micro_batch_size: int | str      # or "auto": resolved at the start of training (train/batch.py)
    batch_size: int
    world_size: int
    precision: str
    gradient_checkpointing: bool
    packing: bool
    padding_free: bool
    use_liger_kernel: bool
    torch_compile: bool | str        # or "reduce-overhead": compiled and replayed as CUDA graphs
    deepspeed: str | None
    logging_steps: int
    save_steps: int
    report_to: tuple[str, ...]
    # a lever added after recipes were fingerprinted: left out of a step's fingerprint while it has
    # this value (steps.base.plain), so existing recipes keep their cached steps
    shapes: str = dataclasses.field(metadata={"fingerprint_omits": "dynamic"})

    @property
    def grad_accum(self) -> int | None:
        """batch_size / (micro_batch_size x world_size); None while micro_batch_size is `auto` (known once
        training starts). Refuses a batch that does not divide: rounding would train with another
        effective batch than the recipe says."""
        if self.micro_batch_size == "auto":
            return None
        problem = batch_problem(self.batch_size, self.micro_batch_size, self.world_size)
        if problem:
            raise RecipeError(f"train.{problem}")
        return self.batch_size // (self.micro_batch_size * self.world_size)


def batch_problem(batch_size: int, micro_batch_size: int, world_size: int) -> str | None:
    """The one batch rule: gradient accumulation must be whole. None when the batch divides."""
    if batch_size % (micro_batch_size * world_size):
        return (f"batch_size {batch_size} is not a multiple of micro_batch_size {micro_batch_size} x "
                f"world_size {world_size}; gradient accumulation must be whole")
    return None


@dataclass(frozen=True)
class Ewc:
    lambda_: float
    fisher_samples: int
    gamma: float


@dataclass(frozen=True)
class Stage:
    """A training stage with its effective settings (the recipe's `train` merged with the stage's)."""
    name: str
    mix: Mapping[str, float] | None
    size: int | float | None
    from_: str | None
    skip: bool
    train: Train
    ewc: Ewc | None


@dataclass(frozen=True)
class DerivedTasks:
    source: str
    by: str
    min_rows: int
    max_tasks: int | None


@dataclass(frozen=True)
class Task:
    name: str
    support: tuple[str, ...]
    query: tuple[str, ...]
    test: tuple[str, ...]
    support_max_samples: int | None


@dataclass(frozen=True)
class MetaSplit:
    strategy: str
    by: str | None
    support: float
    query: float
    test: float


@dataclass(frozen=True)
class Inner:
    learning_rate: float
    steps: int
    batch_size: int


@dataclass(frozen=True)
class Outer:
    learning_rate: float
    meta_batch_size: int
    query_batch_size: int


@dataclass(frozen=True)
class FewShotEval:
    shots: tuple[int, ...]
    held_out_tasks: int
    seeds: int
    sft_control: bool
    answer_pattern: str | None = None     # with it, exact-match accuracy of generated answers
    answer_max_new_tokens: int = 128


@dataclass(frozen=True)
class Meta:
    algorithm: str
    tasks: DerivedTasks | tuple[Task, ...]
    split: MetaSplit
    inner: Inner
    outer: Outer
    total_steps: int
    few_shot_eval: FewShotEval


@dataclass(frozen=True)
class Generate:
    prompts: tuple[str, ...]
    max_new_tokens: int
    temperature: float
    top_p: float
    no_repeat_ngram_size: int
    eval_prompts: int


@dataclass(frozen=True)
class Gate:
    """evaluate.gates[i]: a metric (runner/recipe/validate/gates.py names them) and its bounds."""
    metric: str
    min_: float | None = None
    max_: float | None = None
    stage: str | None = None


@dataclass(frozen=True)
class Evaluate:
    every_stage: bool
    before: bool
    max_rows: int | None
    generate: Generate
    # Checked by the engine on the run report (runner/dag/gates.py), read by no step: no artifact depends on
    # it, so it is no part of any fingerprint (steps/base.py: plain) and changing a gate reruns nothing.
    gates: tuple[Gate, ...] = field(default=(), metadata={"fingerprint": False})


@dataclass(frozen=True)
class Output:
    merge: bool
    save_total_limit: int


IMPLICIT_STAGE = "main"
CHAT_TEMPLATES = ("chatml", "llama3", "alpaca", "text", "tokenizer")           # anything else is a .jinja path
ROLES = ("system", "user", "assistant", "tool")                         # a message's role in a record
# The DeepSpeed presets are the JSON files shipped in runner/train/deepspeed/ (a folder, not an import).
DEEPSPEED_PRESET_DIR = Path(__file__).resolve().parents[1] / "train" / "deepspeed"
DEEPSPEED_PRESETS = tuple(sorted((p.stem for p in DEEPSPEED_PRESET_DIR.glob("*.json")),
                                 key=lambda n: (n.split("_")[0], n)))   # zero1, zero2, zero2_offload, ...


@dataclass(frozen=True)
class Recipe:
    recipe: str
    seed: int
    model: Model
    sources: Mapping[str, Source]
    groups: Mapping[str, tuple[str, ...]]
    filters: tuple[Filter, ...]
    sampling: Sampling
    split: Split
    template: Template
    train: Train
    stages: tuple[Stage, ...]        # always >= 1: a single-stage recipe has one implicit stage "main"
    meta: Meta | None
    evaluate: Evaluate
    output: Output
    file: Path                       # the recipe file; relative paths in the recipe resolve against its folder
    document: Mapping[str, Any]      # the canonical resolved document (what `recipe show` prints)
    secrets: frozenset = frozenset()  # paths in `document` to print as *** (values from secret env vars)

    @property
    def name(self) -> str:
        return self.recipe

    def path(self, p: str) -> Path:
        return (self.file.parent / p).resolve()

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    @property
    def active_stages(self) -> tuple[Stage, ...]:
        """The stages that run (not `skip:`), in order: the one home of that rule."""
        return tuple(s for s in self.stages if not s.skip)

    def row_filters(self, source: str) -> list[Filter]:
        """The per-row filters (every kind but dedup) that apply to `source`, in recipe order."""
        return [f for f in self.filters if f.kind != "dedup" and (f.sources is None or source in f.sources)]

    def expand(self, name: str) -> tuple[str, ...]:
        """A mix key is a source or a group; return the sources it stands for."""
        return self.groups.get(name, (name,))


# --- construction from the validated document -------------------------------------------------

_RENAMES = {"from": "from_", "lambda": "lambda_", "min": "min_", "max": "max_"}


def _freeze(tp: Any, value: Any) -> Any:
    """Convert a JSON value to the annotated type: dicts to dataclasses or read-only mappings,
    lists to tuples."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (Union, getattr(__import__("types"), "UnionType", Union)) and args:
        if isinstance(value, list):
            tp = next((a for a in args if typing.get_origin(a) is tuple), args[0])
        elif isinstance(value, dict):
            tp = next((a for a in args if dataclasses.is_dataclass(a) or typing.get_origin(a) is Mapping), args[0])
        else:
            return value
        return _freeze(tp, value)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value)
    if origin is tuple:
        return tuple(_freeze(typing.get_args(tp)[0], v) for v in value)
    if origin is Mapping or origin is dict:
        vt = typing.get_args(tp)[1]
        return MappingProxyType({k: _freeze(vt, v) for k, v in value.items()})
    return value


def _build(cls: type, doc: Mapping[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in doc.items():
        name = _RENAMES.get(key, key)
        kwargs[name] = _freeze(hints[name], value)
    return cls(**kwargs)


def _filter(doc: Mapping[str, Any]) -> Filter:
    return _build(FILTER_TYPES[doc["kind"]], doc)


def build(doc: Mapping[str, Any], file: Path, secrets: frozenset = frozenset()) -> Recipe:
    """The validated, defaults-filled document -> Recipe. Assumes validation passed."""
    train = _build(Train, doc["train"])
    stages: list[Stage] = []
    if doc.get("stages"):
        for name, st in doc["stages"].items():
            stages.append(Stage(
                name=name, mix=MappingProxyType(dict(st["mix"])), size=st["size"], from_=st["from"],
                skip=st["skip"], train=dataclasses.replace(train, **_train_overrides(st["train"])),
                ewc=_freeze(Ewc | None, st["ewc"])))
    else:
        mix = MappingProxyType(dict(doc["mix"])) if doc["mix"] is not None else None
        stages.append(Stage(name=IMPLICIT_STAGE, mix=mix, size=doc["size"], from_=None, skip=False,
                            train=train, ewc=None))
    meta = None
    if doc.get("meta"):
        m = doc["meta"]
        tasks = (_build(DerivedTasks, m["tasks"]) if isinstance(m["tasks"], dict)
                 else tuple(_build(Task, t) for t in m["tasks"]))
        meta = Meta(algorithm=m["algorithm"], tasks=tasks, split=_build(MetaSplit, m["split"]),
                    inner=_build(Inner, m["inner"]), outer=_build(Outer, m["outer"]),
                    total_steps=m["total_steps"], few_shot_eval=_build(FewShotEval, m["few_shot_eval"]))
    return Recipe(
        recipe=doc["recipe"], seed=doc["seed"], model=_build(Model, doc["model"]),
        sources=MappingProxyType({k: _build(Source, v) for k, v in doc["sources"].items()}),
        groups=MappingProxyType({k: tuple(v) for k, v in doc["groups"].items()}),
        filters=tuple(_filter(f) for f in doc["filters"]),
        sampling=_build(Sampling, doc["sampling"]), split=_build(Split, doc["split"]),
        template=_build(Template, doc["template"]), train=train, stages=tuple(stages), meta=meta,
        evaluate=_build(Evaluate, doc["evaluate"]), output=_build(Output, doc["output"]),
        file=file, document=doc, secrets=secrets)


def _train_overrides(partial: Mapping[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(Train)
    return {k: _freeze(hints[k], v) for k, v in partial.items()}
