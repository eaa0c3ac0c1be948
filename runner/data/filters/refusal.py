"""refusal: drop answers that refuse instead of answering. Each turn of `field` is searched in its
first `window` characters (a refusal comes first; a long answer that later says "I can't be sure"
is not one), case-insensitively. `patterns` replaces the built-in list, `extra_patterns` adds to it.

The built-in list is English and Chinese (simplified and traditional). It names phrases that refuse
or disclaim, not bare words: "I'm sorry" alone opens plenty of good answers."""
from __future__ import annotations

import re

from ...recipe.model import RefusalFilter
from ..text import turns
from .context import FilterContext, RowFilter

_A = "['’]"   # straight or curly apostrophe
DEFAULT_PATTERNS = (
    # English
    rf"\bI{_A}?m sorry,? but I (?:can{_A}?t|cannot|am unable|won{_A}?t|am not able)",
    rf"\bI am sorry,? but I (?:can{_A}?t|cannot|am unable|won{_A}?t|am not able)",
    rf"\bI apologi[sz]e,? but I (?:can{_A}?t|cannot|am unable|won{_A}?t|am not able)",
    rf"\bI(?:{_A}m| am) (?:not able|unable) to (?:help|assist|provide|comply|fulfil|answer|generate|create)",
    rf"\bI (?:can{_A}?t|cannot|won{_A}?t|will not) (?:help|assist|provide|comply|fulfil|engage|generate|create)"
    rf"\w* (?:you )?(?:with )?(?:that|this|your|such)",
    r"\bas an AI(?: language)? model\b",
    rf"\bas an AI(?: assistant)?,? I (?:don{_A}?t|do not|can{_A}?t|cannot|am not able|am unable)",
    rf"\bI{_A}?m (?:just |only )?an AI(?: language model| assistant)?,? (?:and |so )?I (?:don{_A}?t|do not|can{_A}?t|cannot)",
    r"\bI (?:must|have to) (?:respectfully )?decline",
    r"\b(?:it is|it's) not appropriate for me to",
    # Chinese, simplified and traditional
    r"我(?:无法|無法|不能)(?:提供|回答|帮助|幫助|协助|協助|满足|滿足|完成|执行|執行|生成|为您|為您|给出|給出)",
    r"(?:抱歉|对不起|對不起|很抱歉|非常抱歉)[，,]?\s*(?:但)?我(?:无法|無法|不能|没有办法|沒有辦法)",
    r"作[为為](?:一[个個名])?\s*(?:AI|人工智能|人工智慧|语言模型|語言模型)",
    r"我只是一[个個](?:AI|人工智能|人工智慧|语言模型|語言模型)",
)


def make(f: RefusalFilter, ctx: FilterContext) -> RowFilter:
    patterns = list(DEFAULT_PATTERNS if f.patterns is None else f.patterns) + list(f.extra_patterns)
    if not patterns:
        return lambda record: (None, record)
    matcher = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
    window = f.window

    def check(record):
        for t in turns(record, f.field):
            if matcher.search(t, 0, window):
                return "refusal", record
        return None, record
    return check
