"""Frozen, typed row filters of a recipe (`filters:`), one dataclass per filter kind; field names are
the schema's keys. runner.recipe.model re-exports them: a Recipe holds them in `filters`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class LengthFilter:
    kind: str
    field: str
    min_chars: int | None
    max_chars: int | None
    min_words: int | None
    max_words: int | None
    max_tokens: int | str | None
    sources: tuple[str, ...] | None


@dataclass(frozen=True)
class RepetitionFilter:
    kind: str
    field: str
    max_line_repeats: int | None
    ngram_size: int
    max_ngram_ratio: float | None
    min_chars: int
    sources: tuple[str, ...] | None


@dataclass(frozen=True)
class IncompleteFilter:
    kind: str
    field: str
    bad_endings: tuple[str, ...]
    min_chars: int
    sources: tuple[str, ...] | None


@dataclass(frozen=True)
class RefusalFilter:
    kind: str
    field: str
    patterns: tuple[str, ...] | None
    extra_patterns: tuple[str, ...]
    window: int
    tools_exempt: bool
    min_continuation: int | None
    sources: tuple[str, ...] | None


@dataclass(frozen=True)
class RegexFilter:
    kind: str
    field: str
    pattern: str
    action: str
    ignore_case: bool
    sources: tuple[str, ...] | None


@dataclass(frozen=True)
class PiiFilter:
    kind: str
    field: str
    entities: tuple[str, ...]
    action: str
    score_threshold: float
    sources: tuple[str, ...] | None


@dataclass(frozen=True)
class ToxicityFilter:
    kind: str
    field: str
    model_path: str
    threshold: float
    sources: tuple[str, ...] | None


@dataclass(frozen=True)
class ExcludeFilter:
    kind: str
    field: str
    file: str
    sources: tuple[str, ...] | None


@dataclass(frozen=True)
class DedupFilter:
    kind: str
    method: str
    field: str
    threshold: float
    num_perm: int
    shingle: int
    sources: tuple[str, ...] | None


@dataclass(frozen=True)
class DecontaminateFilter:
    kind: str
    field: str
    against: tuple[str, ...]
    ngram: int
    fields: tuple[str, ...] | None
    min_matches: int
    sources: tuple[str, ...] | None


Filter = Union[LengthFilter, RepetitionFilter, IncompleteFilter, RefusalFilter, RegexFilter,
               PiiFilter, ToxicityFilter, ExcludeFilter, DedupFilter, DecontaminateFilter]
FILTER_TYPES: dict[str, type] = {
    "length": LengthFilter, "repetition": RepetitionFilter, "incomplete": IncompleteFilter,
    "refusal": RefusalFilter, "regex": RegexFilter, "pii": PiiFilter, "toxicity": ToxicityFilter,
    "exclude": ExcludeFilter, "dedup": DedupFilter, "decontaminate": DecontaminateFilter,
}
