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
_MUL = 0x100000001B3     # odd: the rolling key below mixes every word of an n-gram


def _word_ids(ws: list[str]) -> list[int]:
    """A stable 63-bit id per word: the n-gram keys built from them are the same in every process."""
    ids = [*map(_VOCAB.get, ws)]
    if None in ids:
        if len(_VOCAB) >= _VOCAB_MAX:
            _VOCAB.clear()
        for k, w in enumerate(ws):
            if ids[k] is None:
                digest = hashlib.blake2b(w.encode("utf-8"), digest_size=8).digest()
                ids[k] = _VOCAB[w] = int.from_bytes(digest, "big") >> 1
    return ids


def grams(s: str, n: int):
    """Keys of the word n-grams of `s`, in order, as a uint64 array (empty for fewer than n words):
    sum of id(word i+j) * _MUL^(n-1-j), mod 2^64, over the whole text at once."""
    import numpy as np

    ids = np.array(_word_ids(words(normalize(s))), dtype=np.uint64)
    k = len(ids) - n + 1
    if k <= 0:
        return np.zeros(0, dtype=np.uint64)
    mul = np.uint64(_MUL)
    out = ids[:k].copy()
    for j in range(1, n):
        out *= mul           # wraps mod 2^64, as meant
        out += ids[j:j + k]
    return out


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
    """Every n-gram of the evaluation files, sorted (`keys`), with where it first occurs (`where[row[i]]`,
    "file:line")."""

    def __init__(self, names: tuple[str, ...], base_dir: Path, n: int, fields: tuple[str, ...] | None):
        import numpy as np

        self.where: list[str] = []
        parts = []
        for name in names:
            for line, row in _rows(base_dir / name):
                self.where.append(f"{name}:{line}")
                parts.append(grams(eval_text(row, fields), n))
        keys = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
        owner = np.repeat(np.arange(len(parts), dtype=np.int64), [len(p) for p in parts])
        self.keys, first = np.unique(keys, return_index=True)    # first: the earliest row that has it
        self.row = owner[first]

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, keys) -> tuple[int, str | None]:
        """(how many of `keys` are evaluation n-grams, where the first of them occurs)."""
        import numpy as np

        if not len(keys) or not len(self.keys):
            return 0, None
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        hit = self.keys[pos] == keys
        found = int(hit.sum())
        return found, (self.where[self.row[pos[int(hit.argmax())]]] if found else None)


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
            raise RecipeError(f"decontaminate filter: cannot read {name} (relative to the recipe): "
                              f"{e.strerror}") from None
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
        found, where = idx.find(grams(text(record, f.field), f.ngram))
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
