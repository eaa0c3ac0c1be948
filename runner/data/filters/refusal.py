"""refusal: drop answers that refuse instead of answering. Each turn of `field` is searched in its
first `window` characters (a refusal comes first; a long answer that later says "I can't be sure"
is not one), case-insensitively. `patterns` replaces the built-in list, `extra_patterns` adds to it.

The built-in list is English and Chinese (simplified and traditional). It names phrases that refuse
or disclaim, not bare words: "I'm sorry" alone opens plenty of good answers.

A match is not a refusal (so the row is kept) when
- it starts after the answer's second sentence (an answer, not a refusal; "you, as an AI" is not one either);
- the conversation offers tools (`meta.tools`, or a tool turn) and `tools_exempt`: declining a task
  that no tool covers, and saying what the tools can do, is exactly what a tool-using model must learn;
- the phrase only says what the speaker is ("As an AI assistant, I suggest ...", "作为一个AI助手，我会
  ...") with no negation in the same sentence;
- the answer asks for the input the prompt lacks ("Could you provide ...", "如果您能提供 ...");
- the answer goes on to help: a "however" / "但是" followed by at least `min_continuation` characters
  (CJK characters count double) that do not start by sending the user elsewhere ("refer to ...",
  "建议您向 ... 咨询").
On the shipped data's 74 rows that the patterns match (tests/labelled/refusal.jsonl, labelled by
hand) this raises precision from 0.12 to 1.0 at recall 1.0 (9 real refusals); see tests/test_refusal.py."""
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


# Phrases that say what the speaker is; a refusal only with a negation in the same sentence.
PERSONA = re.compile(r"as an AI|I{_A}?m (?:just |only )?an AI|作[为為]|我只是一[个個]".format(_A=_A), re.IGNORECASE)
NEGATION = re.compile(rf"can{_A}?t|cannot|unable|not able|don{_A}?t|do not|won{_A}?t|will not|"
                      r"无法|無法|不能|没有办法|沒有辦法|不会|不會|没有|沒有", re.IGNORECASE)
SENTENCE_END = re.compile(r"[.!?。！？\n]")
ASKS_INPUT = re.compile(
    r"(?:could|can|would) you (?:please )?(?:provide|share|give|tell me|clarify|specify)|"
    r"please (?:provide|share|specify|clarify)|if you (?:can |could )?(?:provide|share|give)|"
    r"(?:请|請)(?:提供|告诉|告訴|给出|給出|描述)|能否提供|如果您?能?(?:提供|描述)|如果你能?(?:提供|描述)|"
    r"[您你]可以(?:描述|提供|告诉|告訴)", re.IGNORECASE)
PIVOT = re.compile(r"\b(?:however|but|instead|nevertheless|that said|here (?:is|are)|according to|if it)\b|"
                   r"I(?:'ll| will) (?:provide|give|share)|但是|但|然而|不过|不過|可是|以下|如下|例如|如果", re.IGNORECASE)
REDIRECT = re.compile(r"\b(?:refer to|consult|check (?:with|the|online)|contact|visit)\b|"
                      r"the best way to find|建议您?向|建議您?向|您可以(?:询问|詢問|咨询|諮詢|联系|聯繫)|"
                      r"可以询问|可以詢問", re.IGNORECASE)
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def _weight(s: str) -> int:
    """Characters, CJK counting double (a Chinese character carries about two English letters' worth)."""
    return len(s) + len(CJK.findall(s))


def offers_tools(record) -> bool:
    return bool((record.get("meta") or {}).get("tools")) or any(m["role"] == "tool" for m in record["messages"])


def refuses(t: str, m: re.Match, min_continuation: int | None) -> bool:
    """Whether the match `m` in answer `t` is a refusal, by the rules in the module docstring."""
    if min_continuation is None:
        return True
    first = SENTENCE_END.search(t)
    second = SENTENCE_END.search(t, first.end()) if first else None
    if second and m.start() >= second.end():    # a refusal comes first, not two sentences into an answer
        return False
    if PERSONA.match(m.group(0)) and m.start() and t[m.start() - 1] in "你您":   # "you, as an AI": not the speaker
        return False
    if PERSONA.match(m.group(0)) and not NEGATION.search(m.group(0)):
        end = SENTENCE_END.search(t, m.end())
        if not NEGATION.search(t, m.end(), end.start() if end else len(t)):
            return False
    rest = t[m.end():]
    if ASKS_INPUT.search(rest):
        return False
    pivot = PIVOT.search(rest)
    if pivot:
        after = rest[pivot.end():].lstrip(" ,，、")
        if _weight(after) >= min_continuation and not REDIRECT.search(after, 0, 40):
            return False
    return True


def make(f: RefusalFilter, ctx: FilterContext) -> RowFilter:
    patterns = list(DEFAULT_PATTERNS if f.patterns is None else f.patterns) + list(f.extra_patterns)
    if not patterns:
        return lambda record: (None, record)
    matcher = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
    window, tools_exempt, min_cont = f.window, f.tools_exempt, f.min_continuation

    def check(record):
        for t in turns(record, f.field):
            m = matcher.search(t, 0, window)
            if m and not (tools_exempt and offers_tools(record)) and refuses(t, m, min_cont):
                return "refusal", record
        return None, record
    return check
