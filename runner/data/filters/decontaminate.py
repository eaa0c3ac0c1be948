"""decontaminate: drop training rows that share a long word n-gram with evaluation data (a benchmark's
test set, the recipe's own eval rows), so a score on them is not a score on memorised text.

Tokens are words as GPT-3's and lm-evaluation-harness's decontamination count them: the text is
normalised (NFKC, lowercase, punctuation deleted, whitespace collapsed; `normalize`, the notion of
"the same text" that dedup and exclude use) and split on whitespace, except that CJK characters count
one word each (`words`), since Chinese puts no spaces between words. So a copy with other case,
spacing or punctuation, or a 13-word stretch of a test item inside a longer row, still matches.

An evaluation row's text is every string in it, in order (question then answer, a chat's turns), or
only the `fields` named; a training row's is its `field` turns (all by default: prompt and response).

A scored filter (like length): `measure` counts the row's n-grams found in the evaluation files and
where the first one was (file:line, for the drop reason); `rules` drops rows with at least
`min_matches`. The filter step keeps the counts, so `recipe plan` says what another `min_matches`
keeps without reading a row; another `ngram`, `fields` or file needs a rerun."""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ...errors import RecipeError
from ...recipe.model import DecontaminateFilter
from ..text import normalize, text, words
from .context import FilterContext, RowFilter

_VOCAB: dict[str, int] = {}
_VOCAB_MAX = 2_000_000   # words remembered per process; past it the table starts over (a cache only)


def _word_id(w: str) -> int:
    """A stable 63-bit id per word: the n-gram keys built from them hash the same in every process."""
    got = _VOCAB.get(w)
    if got is None:
        if len(_VOCAB) >= _VOCAB_MAX:
            _VOCAB.clear()
        got = _VOCAB[w] = int.from_bytes(hashlib.blake2b(w.encode("utf-8"), digest_size=8).digest(), "big") >> 1
    return got


def grams(s: str, n: int) -> Iterator[int]:
    """Keys of the word n-grams of `s`, in order (a text shorter than n words has none)."""
    ids = tuple(_word_id(w) for w in words(normalize(s)))
    for i in range(len(ids) - n + 1):
        yield hash(ids[i:i + n])   # a tuple of ints hashes alike in every process (no salt)


def _strings(value: Any, out: list[str]) -> list[str]:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, Mapping):
        for v in value.values():
            _strings(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _strings(v, out)
    return out


def eval_text(row: Any, fields: tuple[str, ...] | None) -> str:
    """The text of one evaluation row: every string in it, or those under `fields`."""
    if fields is None:
        return "\n".join(_strings(row, []))
    if not isinstance(row, Mapping):
        return ""
    return "\n".join(s for k in fields for s in _strings(row.get(k), []))


def _rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line or row number from 1, row) of a JSON-lines, JSON (a list) or parquet file."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        yield from enumerate(pq.read_table(path).to_pylist(), 1)
        return
    if path.suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise RecipeError(f"{path}:{e.lineno}: not JSON ({e.msg})") from None
        if not isinstance(rows, list):
            raise RecipeError(f"{path}: expected a JSON list of rows")
        yield from enumerate(rows, 1)
        return
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    raise RecipeError(f"{path}:{n}: not JSON ({e.msg})") from None


class Index:
    """Every n-gram of the evaluation files -> where it first occurs ("file:line")."""

    def __init__(self, names: tuple[str, ...], base_dir: Path, n: int, fields: tuple[str, ...] | None):
        self.where: list[str] = []
        self.first: dict[int, int] = {}    # n-gram key -> index into `where`
        for name in names:
            for line, row in _rows(base_dir / name):
                k = len(self.where)
                self.where.append(f"{name}:{line}")
                for g in grams(eval_text(row, fields), n):
                    self.first.setdefault(g, k)


@lru_cache(maxsize=2)
def _index(names: tuple[str, ...], base_dir: Path, n: int, fields: tuple[str, ...] | None, stamp: tuple) -> Index:
    return Index(names, base_dir, n, fields)


def index(f: DecontaminateFilter, base_dir: Path) -> Index:
    """Built once per process and files' state: the filter step calls make() for every batch of rows."""
    stamp = []
    for name in f.against:
        try:
            st = os.stat(base_dir / name)
        except OSError as e:
            raise RecipeError(f"decontaminate filter: cannot read {name} (relative to the recipe): {e.strerror}") from None
        stamp.append((st.st_size, st.st_mtime_ns))
    return _index(tuple(f.against), Path(base_dir).resolve(), f.ngram, f.fields, tuple(stamp))


def measures(f: DecontaminateFilter) -> tuple[str, ...]:
    # the count depends on n and on which eval fields were indexed: another of either is not scored
    tag = "" if f.fields is None else "_" + hashlib.sha1(json.dumps(list(f.fields)).encode()).hexdigest()[:8]
    return (f"matches_{f.ngram}{tag}",)


def measure(f: DecontaminateFilter, ctx: FilterContext) -> Callable[[dict], dict[str, Any]]:
    idx = index(f, ctx.base_dir)
    (name,) = measures(f)

    def m(record: dict) -> dict[str, Any]:
        found, where = 0, None
        for g in grams(text(record, f.field), f.ngram):
            k = idx.first.get(g)
            if k is not None:
                found += 1
                if where is None:
                    where = idx.where[k]
        return {name: found, "match": where}    # "match" names the place in the drop reason; it is not kept
    return m


def rules(f: DecontaminateFilter, ctx: FilterContext, m: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(reason, hit); for one row the reason also says where its first shared n-gram is (the step's
    counts keep the part before the space)."""
    where = m.get("match")
    reason = "decontaminate" + (f" {f.ngram}-gram of {where}" if where else "")
    return [(reason, m[measures(f)[0]] >= f.min_matches)]


def make(f: DecontaminateFilter, ctx: FilterContext) -> RowFilter:
    m = measure(f, ctx)

    def check(record):
        return next((reason for reason, hit in rules(f, ctx, m(record)) if hit), None), record
    return check
