"""The PII pre-screen (runner/data/filters/pii.py PRESCREEN) only skips texts where presidio finds
nothing: spans with and without it are identical on real rows of every shipped data file, on planted PII
of every entity kind (so there are positives to lose), and on generated text."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from runner.data.filters import pii

DATA = Path(__file__).resolve().parents[1] / "data"
ENTITIES = sorted(pii.PRESCREEN)
PLANTED = [
    "Write to jane.doe+news@example.co.uk or admin@localhost.org today.",
    "Call (415) 555-2671 or +44 20 7946 0958, mobile 138 0013 8000.",
    "电话：１３８００１３８０００，请拨打。",
    "call 030 1234",
    "Card 4111 1111 1111 1111 expires 12/29; amex 3782-822463-10005.",
    "The server is at 192.168.0.1/24, the gateway ::ffff:10.0.0.1 and fe80::1ff:fe23:4567:890a.",
    "Full IPv6 2001:0db8:85a3:0000:0000:8a2e:0370:7334 and the unspecified :: address.",
    "See https://www.example.com/path?q=1 and docs.python.org, or 'example.org'.",
    "IBAN GB82 WEST 1234 5698 7654 32, also DE89370400440532013000.",
    "Her social security number is 536-90-4399.",
    "Nothing here but words, 3.14 and e.g. a list.",
]


def _texts(n: int = 150) -> list[str]:
    out = []
    for name in ("alpaca_en_demo.json", "alpaca_zh_demo.json", "identity.json"):
        for r in json.loads((DATA / name).read_text(encoding="utf-8"))[:n]:
            out += [r["instruction"], r.get("input", ""), r["output"]]
    for r in json.loads((DATA / "glaive_toolcall_en_demo.json").read_text(encoding="utf-8"))[:n // 2]:
        out += [t["value"] for t in r["conversations"]] + [r.get("tools", "")]
    for line in (DATA / "gsm8k_train.jsonl").read_text(encoding="utf-8").splitlines()[:n]:
        r = json.loads(line)
        out += [r["question"], r["answer"]]
    return [t for t in out if t]


@pytest.fixture(scope="module")
def engine():
    return pii.analyzer(tuple(ENTITIES), 0.0)


@pytest.fixture(scope="module")
def engine_05():
    return pii.analyzer(tuple(ENTITIES), 0.5)


def _same(engine, text: str, threshold: float = 0.0) -> list:
    full = pii.spans(engine, text, ENTITIES, threshold)
    if not pii.prescreen(ENTITIES, threshold)(text):
        assert full == [], text
    return full


def test_planted_pii_of_every_kind_is_found_and_passes_the_screen(engine):
    found = {e for t in PLANTED for _, _, e in _same(engine, t)}
    assert found == set(ENTITIES)


def test_same_spans_on_the_shipped_data(engine, engine_05):
    texts = _texts() + PLANTED
    for eng, threshold in ((engine, 0.0), (engine_05, 0.5)):     # 0.5: phone numbers need a context word
        screen = pii.prescreen(ENTITIES, threshold)
        positives = sum(bool(_same(eng, t, threshold)) for t in texts)
        skipped = sum(not screen(t) for t in texts)
        assert len(texts) > 1200 and positives > 20 and skipped > len(texts) // 3, (threshold, positives, skipped)


def test_each_entity_screen_alone(engine):
    """Per entity: a text whose screen for that entity fails has no span of that entity."""
    for t in PLANTED + _texts(60):
        kinds = {e for _, _, e in pii.spans(engine, t, ENTITIES, 0.0)}
        for e in kinds:
            assert pii.prescreen([e])(t), (e, t)


PIIISH = st.text(alphabet=st.sampled_from(list("0123456789０１２٣.:-@/ +()abcdefABCDEFxyzKſ\u212a GBDE")), max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(PIIISH)
def test_screen_never_hides_a_span_on_generated_text(engine, text):
    _same(engine, text)
