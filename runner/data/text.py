"""Which text of a record a filter looks at, how words are counted, and what "the same text" means.

`field` (in every filter) picks turns by role: assistant, user, system, or all turns. Words are
whitespace-separated tokens, except that CJK characters (Han, kana) count one word each, because
Chinese and Japanese put no spaces between words; a token of punctuation alone ("，", "--") is not
a word. `normalize` is the one definition of "the same text" for exact dedup and for keeping copies
on one side of a split: NFKC, lowercase, punctuation removed, whitespace collapsed."""
from __future__ import annotations

import hashlib
import re
import unicodedata
from functools import lru_cache
from typing import Any, Mapping

# Han (with extensions and compatibility forms), kana, bopomofo and CJK radicals. Hangul is left out:
# Korean separates words with spaces.
CJK = ("\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
       "\uf900-\ufaff\U00020000-\U0003134f")
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
    # isalnum() is \w for every character but "_": the common word passes without a regex search
    return [t for t in _TOKEN.findall(s) if t.isalnum() or _WORDY.search(t)]


_PLANES = 0x40000   # the BMP and the supplementary planes that hold letters and CJK


def _char_class(codes: list[int]) -> str:
    ranges: list[list[int]] = []
    for c in sorted(codes):
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    return "".join(re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b > a else "") for a, b in ranges)


@lru_cache(maxsize=1)
def _tables() -> tuple[re.Pattern, re.Pattern, re.Pattern]:
    """Built once (~0.05 s): patterns of the punctuation characters (categories P*) in the BMP and
    beyond it, and of the BMP characters that NFKC changes beyond NFC (fullwidth letters and digits,
    ligatures, circled digits...). A class of BMP characters compiles to a lookup table (fast); one
    that mixes in astral characters compiles to a slow range list, hence the split.
    Fullwidth punctuation ("，。") is left out of the NFKC pattern: NFKC maps it to punctuation,
    which is deleted either way."""
    punct, compat = [], []
    for c in range(_PLANES):
        ch = chr(c)
        is_punct = unicodedata.category(ch)[0] == "P"
        if is_punct:
            punct.append(c)
        if c < 0x10000 and unicodedata.decomposition(ch) and \
                unicodedata.normalize("NFKD", ch) != unicodedata.normalize("NFD", ch):
            if not (is_punct and all(unicodedata.category(x)[0] == "P" for x in unicodedata.normalize("NFKC", ch))):
                compat.append(c)
    return (re.compile(f"[{_char_class([c for c in punct if c < 0x10000])}]+"),
            re.compile(f"[{_char_class([c for c in punct if c >= 0x10000])}]+"),
            re.compile(f"[{_char_class(compat)}]"))


def normalize(s: str) -> str:
    """NFKC, lowercase, punctuation deleted, whitespace collapsed. Symbols (S*) stay: "1+1=2" and
    "1=1+2" must not become the same text. Fast paths give the same result as the definition
    (tests check): ASCII needs no NFKC; NFKC is ~80x slower than NFC on Chinese text and equal to
    it on a text without the characters _tables() lists."""
    bmp, astral, compat = _tables()
    if s.isascii():
        s = bmp.sub("", s.lower())
    elif len(s.encode("utf-16-le", "surrogatepass")) == 2 * len(s):   # no astral characters
        s = bmp.sub("", unicodedata.normalize("NFKC" if compat.search(s) else "NFC", s).lower())
    else:
        s = astral.sub("", bmp.sub("", unicodedata.normalize("NFKC", s).lower()))
    return " ".join(s.split())


def digest(normalized: str) -> bytes:
    """A normalised text in 16 bytes: what dedup and the split keep per row instead of the text ("" -> b"",
    so an empty text stays recognisably empty)."""
    return hashlib.blake2b(normalized.encode("utf-8", "surrogatepass"), digest_size=16).digest() if normalized else b""
