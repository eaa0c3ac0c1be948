"""repetition: drop degenerate answers, the kind a model learns to loop on.

- a line repeated more than `max_line_repeats` times. Only lines with a letter or digit count:
  code closes many blocks with "}" and markdown repeats "---", and neither is degenerate;
- for texts of at least `min_chars`, a share of repeated word n-grams above `max_ngram_ratio`:
  (n-grams - distinct n-grams) / n-grams, with CJK characters counted as words. Short answers
  ("The capital of France is Paris.", a quatrain) skip this check: a few words can repeat by nature."""
from __future__ import annotations

import re
from collections import Counter

from ...recipe.model import RepetitionFilter
from ..text import text, words
from .context import FilterContext, RowFilter

_WORDY = re.compile(r"\w")


def make(f: RepetitionFilter, ctx: FilterContext) -> RowFilter:
    n = f.ngram_size

    def check(record):
        s = text(record, f.field)
        if f.max_line_repeats is not None:
            lines = [x for x in (ln.strip() for ln in s.split("\n")) if x]
            # most texts have few lines, or no line twice: skip the counting then
            if len(lines) > f.max_line_repeats and len(set(lines)) < len(lines):
                counts = Counter(x for x in lines if _WORDY.search(x))
                if counts and max(counts.values()) > f.max_line_repeats:
                    return "repetition:line", record
        if f.max_ngram_ratio is not None and len(s) >= f.min_chars:
            w = words(s)
            grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
            if grams and (len(grams) - len(set(grams))) / len(grams) > f.max_ngram_ratio:
                return "repetition:ngram", record
        return None, record
    return check
