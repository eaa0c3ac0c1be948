"""Which text of a record a filter looks at, how words are counted, and what "the same text" means.

`field` (in every filter) picks turns by role: assistant, user, system, or all turns. Words are
whitespace-separated tokens, except that CJK characters (Han, kana) count one word each, because
Chinese and Japanese put no spaces between words; a token of punctuation alone ("，", "--") is not
a word. `normalize` is the one definition of "the same text" for exact dedup and for keeping copies
on one side of a split: NFKC, lowercase, punctuation removed, whitespace collapsed."""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any, Mapping

# Han (with extensions and compatibility forms), kana, bopomofo and CJK radicals. Hangul is left out:
# Korean separates words with spaces.
CJK = ("\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
       "\uf900-\ufaff\U00020000-\U0003134f")
CJK_CHAR = re.compile(f"[{CJK}]")
_TOKEN = re.compile(f"[{CJK}]|[^\\s{CJK}]+")
_WORDY = re.compile(r"\w")


def turns(record: Mapping[str, Any], field: str) -> list[str]:
    """The contents of the record's turns that `field` selects, in order."""
    if field == "all":
        return [m["content"] for m in record["messages"]]
    return [m["content"] for m in record["messages"] if m["role"] == field]


def text(record: Mapping[str, Any], field: str) -> str:
    return "\n".join(turns(record, field))


def words(s: str) -> list[str]:
    return [t for t in _TOKEN.findall(s) if _WORDY.search(t)]


@lru_cache(maxsize=1)
def _punctuation() -> dict[int, None]:
    # Every Unicode punctuation character (categories P*) up to the CJK extension planes; built once
    # (~30 ms). Symbols (S*) stay: "1+1=2" and "1=1+2" must not become the same text.
    return {c: None for c in range(0x40000) if unicodedata.category(chr(c))[0] == "P"}


def normalize(s: str) -> str:
    s = unicodedata.normalize("NFKC", s).lower().translate(_punctuation())
    return " ".join(s.split())
