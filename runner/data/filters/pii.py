"""pii: find personal data with presidio's pattern recognisers; drop the row (reason
"pii:<ENTITY>", the first span found) or mask each span as <ENTITY>.

presidio's default engine loads a spaCy model, which cannot be downloaded here and which pattern
recognisers do not need. So the engine is built from parts: presidio's NoOpNlpEngine (no model, empty
NLP artifacts) and a registry holding only the recognisers for the requested entities. Two of those
are adjusted to work offline and without NLP context:
- e-mail: presidio validates the domain with tldextract, whose default fetches the public suffix list
  from the internet on first use; ours uses tldextract's bundled snapshot and never fetches;
- phone: presidio scores a phonenumbers match 0.4 and raises it to 0.75 when a context word ("call",
  "phone") is near, which needs the NLP engine's tokens. Ours does that lookup on the raw text: 0.75
  when a context word (English or Chinese) is in the 40 characters before the number, else 0.4. So
  the default 0.5 threshold finds "call (415) 555-2671" but not "1000 - 200 - 400 = 400", which
  phonenumbers also accepts; `score_threshold: 0.4` takes every match. CN is added to the regions.
  Above 0.4, a text without a context word cannot hold a phone number that counts, so phonenumbers
  (~2 ms per region per paragraph, the slowest recogniser by far) is not run on it at all.

Pre-screen: most texts hold nothing any recogniser could match, yet a presidio call costs ~1 ms. For each
entity, PRESCREEN is a condition every match of that recogniser must meet (its patterns, read from
presidio's source, all contain it; phonenumbers needs 4 digits for the shortest valid number of our
regions); a text that meets none of the requested ones cannot give a span and skips presidio. So the
results are the same, which tests/test_pii_prescreen.py checks on the shipped data plus planted PII of
every kind, and on generated text.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from ...recipe.model import PiiFilter
from .context import FilterContext, RowFilter

PHONE_REGIONS = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR", "CN")
PHONE_BASE_SCORE = 0.4         # presidio's PhoneRecognizer.SCORE
PHONE_CONTEXT_SCORE = 0.75     # presidio: 0.4 + 0.35 context-similarity factor
PHONE_CONTEXT_CHARS = 40
# presidio's list minus "number" (every other maths problem says "the number of"), plus Chinese
PHONE_CONTEXT = re.compile(r"phone|telephone|\bcell|mobile|\bcall|\btel\b|\bfax|contact|whatsapp|"
                           r"电话|電話|手机|手機|联系|聯繫|聯絡|致电|拨打|撥打", re.IGNORECASE)


# Python's \d is every Unicode decimal digit, a superset of [0-9] and of what phonenumbers reads as digits;
# a letter class ([^\W\d_]) covers whatever presidio's case-insensitive [a-z] can match.
PRESCREEN = {
    "EMAIL_ADDRESS": r"@",
    "URL": r"\.[^\W\d_]{2}",                                  # a dot, then a top-level domain (2+ letters)
    "IP_ADDRESS": r"\d\.\d{1,3}\.\d|::|[0-9A-Fa-f]:[0-9A-Fa-f]{1,4}:",   # IPv4, compressed or full IPv6
    "CREDIT_CARD": r"\d{4}[- ]?\d{3}",
    "IBAN_CODE": r"[^\W\d_]{2}\d{2}",
    "US_SSN": r"\d{3}[- .]?\d{2}",
    "PHONE_NUMBER": r"\d(?:\D*\d){3}",
}


def prescreen(entities, threshold: float = 0.0):
    """text -> whether presidio could find one of `entities` in it (False: it certainly finds none).
    Above the base phone score a phone number counts only with a context word (TextContextPhone)."""
    phone = "PHONE_NUMBER" in entities and threshold > PHONE_BASE_SCORE
    others = [e for e in sorted(entities) if not (phone and e == "PHONE_NUMBER")]
    screen = re.compile("|".join(f"(?:{PRESCREEN[e]})" for e in others)).search if others else (lambda t: None)
    digits = re.compile(PRESCREEN["PHONE_NUMBER"]).search

    def candidate(text: str) -> bool:
        return bool(screen(text) or (phone and digits(text) and PHONE_CONTEXT.search(text)))
    return candidate


@lru_cache(maxsize=None)
def analyzer(entities: tuple[str, ...], threshold: float = 0.0) -> Any:
    """An offline AnalyzerEngine for these entity types (built once per process and threshold)."""
    import logging

    import tldextract
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NoOpNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer, EmailRecognizer, IbanRecognizer, IpRecognizer, PhoneRecognizer,
        UrlRecognizer, UsSsnRecognizer)

    offline_tld = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmail(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return offline_tld(pattern_text).fqdn != ""

    class TextContextPhone(PhoneRecognizer):
        def analyze(self, text, entities, nlp_artifacts=None):
            if threshold > PHONE_BASE_SCORE and not PHONE_CONTEXT.search(text):
                return []
            results = super().analyze(text, entities, nlp_artifacts)
            for r in results:
                if PHONE_CONTEXT.search(text, max(0, r.start - PHONE_CONTEXT_CHARS), r.start):
                    r.score = max(r.score, PHONE_CONTEXT_SCORE)
            return results

    make = {"EMAIL_ADDRESS": OfflineEmail, "CREDIT_CARD": CreditCardRecognizer, "IP_ADDRESS": IpRecognizer,
            "URL": UrlRecognizer, "IBAN_CODE": IbanRecognizer, "US_SSN": UsSsnRecognizer,
            "PHONE_NUMBER": lambda: TextContextPhone(supported_regions=PHONE_REGIONS)}
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)   # it logs every request at INFO
    nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    nlp.load()
    registry = RecognizerRegistry(recognizers=[make[e]() for e in entities], supported_languages=["en"])
    return AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"])


def spans(engine: Any, text: str, entities: list[str], threshold: float) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, entity) spans in text order. Where spans overlap (an e-mail's
    domain is also a URL) the higher score wins, then the longer span, then the earlier one."""
    found = engine.analyze(text=text, language="en", entities=entities, score_threshold=threshold)
    found = sorted(found, key=lambda r: (-r.score, -(r.end - r.start), r.start, r.entity_type))
    chosen: list[tuple[int, int, str]] = []
    for r in found:
        if all(r.end <= s or r.start >= e for s, e, _ in chosen):
            chosen.append((r.start, r.end, r.entity_type))
    return sorted(chosen)


def mask(text: str, found: list[tuple[int, int, str]]) -> str:
    for start, end, entity in reversed(found):
        text = text[:start] + f"<{entity}>" + text[end:]
    return text


def make(f: PiiFilter, ctx: FilterContext) -> RowFilter:
    entities = sorted(f.entities)
    engine = analyzer(tuple(entities), f.score_threshold)
    roles = None if f.field == "all" else {f.field}
    candidate = prescreen(entities, f.score_threshold)

    def check(record):
        changed = False
        messages = []
        for m in record["messages"]:
            wanted = (roles is None or m["role"] in roles) and candidate(m["content"])
            found = spans(engine, m["content"], entities, f.score_threshold) if wanted else []
            if found and f.action == "drop":
                return f"pii:{found[0][2]}", record
            if found:
                changed = True
                m = {**m, "content": mask(m["content"], found)}
            messages.append(m)
        return None, ({**record, "messages": messages} if changed else record)
    return check
