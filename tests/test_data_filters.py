"""Row filters: each kind on hand-made and real rows; ordinary SFT answers pass."""
from __future__ import annotations

import json
import re
import socket
import sys
import types

import pytest
from hypothesis import given, settings, strategies as st

from helpers.data import DATA, TANG_FIELDS, record, recipe
from runner.data.filters import FILTERS, FilterContext, run_filters
from runner.data.filters.repetition import measure
from runner.data.formats import load_source
from runner.data.text import _TOKEN, words
from runner.errors import RecipeError
from runner.recipe.model import (ExcludeFilter, IncompleteFilter, LengthFilter, PiiFilter, RefusalFilter,
                                 RegexFilter, RepetitionFilter, ToxicityFilter)

CTX = FilterContext()
ORDINARY = [
    "The capital of France is Paris.",
    "床前明月光，\n疑是地上霜。\n舉頭望明月，\n低頭思故鄉。",
    "Twinkle, twinkle, little star,\nHow I wonder what you are!\nUp above the world so high,\n"
    "Like a diamond in the sky.\nTwinkle, twinkle, little star,\nHow I wonder what you are!",
    "```python\ndef f(x):\n    if x:\n        return 1\n    }\n    }\n    }\n    }\n```",
    "Yes.",
    "1. Preheat the oven to 180C.\n2. Mix the flour and the sugar.\n3. Add the eggs one by one.\n"
    "4. Bake for 25 minutes, until a knife comes out clean.",
]


def length(**kw):
    return LengthFilter(**{"kind": "length", "field": "assistant", "min_chars": None, "max_chars": None,
                           "min_words": None, "max_words": None, "max_tokens": None, "sources": None, **kw})


def repetition(**kw):
    return RepetitionFilter(**{"kind": "repetition", "field": "assistant", "max_line_repeats": 3, "ngram_size": 4,
                               "max_ngram_ratio": 0.5, "min_chars": 100, "sources": None, **kw})


def refusal(**kw):
    return RefusalFilter(**{"kind": "refusal", "field": "assistant", "patterns": None, "extra_patterns": (),
                            "window": 200, "tools_exempt": True, "min_continuation": 100, "sources": None, **kw})


def pii(**kw):
    return PiiFilter(**{"kind": "pii", "field": "all", "action": "drop", "score_threshold": 0.5, "sources": None,
                        "entities": ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IP_ADDRESS", "URL"), **kw})


def verdict(f, text, ctx=CTX, **kw):
    return FILTERS[f.kind](f, ctx)(record(text, "r", **kw))[0]


def test_registry_is_one_dict_with_every_row_filter():
    assert set(FILTERS) == {"length", "repetition", "incomplete", "refusal", "regex", "pii", "toxicity", "exclude",
                            "decontaminate"}


def test_length_chars_words_and_tokens():
    assert verdict(length(min_chars=10), "short") == "length:min_chars"
    assert verdict(length(max_chars=10), "a" * 11) == "length:max_chars"
    assert verdict(length(min_chars=5, max_chars=10), "a" * 10) is None
    # CJK characters count one word each; punctuation is not a word
    assert verdict(length(min_words=10), "床前明月光，疑是地上霜。") is None
    assert verdict(length(min_words=11), "床前明月光，疑是地上霜。") == "length:min_words"
    assert verdict(length(max_words=6), "The capital of France is Paris .") is None
    assert verdict(length(max_words=5), "The capital of France is Paris.") == "length:max_words"
    seen = []
    ctx = FilterContext(max_length=8, token_count=lambda r: seen.append(r["id"]) or len(r["messages"][1]["content"]))
    assert verdict(length(max_tokens="max_length"), "a" * 9, ctx) == "length:max_tokens"
    assert verdict(length(max_tokens="max_length"), "a" * 8, ctx) is None
    assert verdict(length(max_tokens=20), "a" * 9, ctx) is None and len(seen) == 3
    with pytest.raises(ValueError):
        FILTERS["length"](length(max_tokens=5), FilterContext())


def test_length_field_picks_the_role():
    r = record("a long enough answer", "r", user="hi")
    assert FILTERS["length"](length(field="user", min_chars=5), CTX)(r)[0] == "length:min_chars"
    assert FILTERS["length"](length(field="all", min_chars=5), CTX)(r)[0] is None


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_answers_pass_repetition_and_incomplete(text):
    assert verdict(repetition(), text) is None
    assert verdict(repetition(min_chars=0), text) is None     # even with the n-gram check on every length
    assert verdict(FILTERS_INCOMPLETE, text) is None


FILTERS_INCOMPLETE = IncompleteFilter(kind="incomplete", field="assistant", min_chars=1, sources=None,
                                      bad_endings=(",", "，", "、", ":", "：", ";", "；", "(", "（", "[", "{", "-", "—"))


def test_repetition_catches_degenerate_answers():
    assert verdict(repetition(), "I am here.\n" * 4) == "repetition:line"
    assert verdict(repetition(), "I am here.\n" * 3) is None
    looping = "the cat sat on the mat and " * 20
    assert verdict(repetition(), looping) == "repetition:ngram"
    assert verdict(repetition(), "哈哈哈哈" * 40) == "repetition:ngram"              # CJK characters are words
    assert verdict(repetition(max_ngram_ratio=None), looping) is None
    assert verdict(repetition(), looping[:90]) is None                                # short: n-gram check skipped


def test_repetition_and_length_keep_nearly_all_real_answers(tmp_path):
    r = recipe(tmp_path, f"""sources:
  tang:
    path: '{{data}}/tang_poems.jsonl'
    format: fields
    limit: 5000{TANG_FIELDS}
  en: {{path: '{{data}}/alpaca_en_demo.json', format: alpaca}}
  zh: {{path: '{{data}}/alpaca_zh_demo.json', format: alpaca}}
  tools: {{path: '{{data}}/glaive_toolcall_en_demo.json', format: sharegpt}}
filters:
  - {{kind: repetition}}
  - {{kind: incomplete}}
""")
    for name in r.sources:
        records, _, _ = load_source(name, r.sources[name], r.file.parent)
        kept, dropped, stats = run_filters(name, records, r.row_filters(name), FilterContext())
        assert len(dropped) <= 0.02 * len(records), (name, stats.to_json()["dropped"])


def test_incomplete():
    assert verdict(FILTERS_INCOMPLETE, "The steps are:") == "incomplete"
    assert verdict(FILTERS_INCOMPLETE, "首先，") == "incomplete"
    assert verdict(FILTERS_INCOMPLETE, "Here:\n```python\nprint(1)\n") == "incomplete"
    assert verdict(FILTERS_INCOMPLETE, "Here:\n```python\nprint(1)\n```") is None
    f = IncompleteFilter(kind="incomplete", field="assistant", min_chars=10, sources=None, bad_endings=(",",))
    assert verdict(f, "short,") is None and verdict(f, "long enough,") == "incomplete"


@pytest.mark.parametrize("text", [
    "I'm sorry, but I can't help with that.",
    "I’m sorry, but I cannot provide that information.",
    "As an AI language model, I do not have opinions.",
    "I cannot assist with that request.",
    "抱歉，我无法回答这个问题。",
    "作为一个AI，我不能提供医疗建议。",
    "對不起，我無法協助此事。",
])
def test_refusals_are_dropped(text):
    assert verdict(refusal(), text) == "refusal"


@pytest.mark.parametrize("text", ORDINARY + [
    "I'm sorry to hear that your cat is ill. Here is what you can do: take her to a vet.",
    "You can't divide by zero, so the expression is undefined.",
    "我无法忘记那个夏天。",
])
def test_ordinary_answers_are_not_refusals(text):
    assert verdict(refusal(), text) is None


def test_refusal_window_and_custom_patterns():
    late = "Here is a long answer. " * 20 + "I'm sorry, but I can't go on."
    assert verdict(refusal(), late) is None
    assert verdict(refusal(window=1000), late) is None            # two sentences into an answer: not a refusal
    assert verdict(refusal(window=1000, min_continuation=None), late) == "refusal"
    assert verdict(refusal(patterns=("^Nope",)), "Nope, not today") == "refusal"
    assert verdict(refusal(patterns=("^Nope",)), "I'm sorry, but I can't") is None
    assert verdict(refusal(extra_patterns=("不想回答",)), "我不想回答。") == "refusal"


def test_regex_keep_and_drop():
    drop = RegexFilter(kind="regex", field="assistant", pattern="^#### ", action="drop", ignore_case=False, sources=None)
    keep = RegexFilter(kind="regex", field="assistant", pattern="#### \\d+$", action="keep", ignore_case=False, sources=None)
    assert verdict(drop, "#### 42") == "regex" and verdict(drop, "so #### 42") is None
    assert verdict(keep, "so #### 42") is None and verdict(keep, "so 42") == "regex"
    icase = RegexFilter(kind="regex", field="user", pattern="password", action="drop", ignore_case=True, sources=None)
    assert FILTERS["regex"](icase, CTX)(record("x", "r", user="my PASSWORD is"))[0] == "regex"


def test_filters_narrowed_to_sources(tmp_path):
    r = recipe(tmp_path, """sources:
  a: {path: '{data}/identity.json', format: alpaca}
  b: {path: '{data}/identity.json', format: alpaca}
filters:
  - {kind: length, min_chars: 1}
  - {kind: regex, pattern: x, sources: [b]}
  - {kind: dedup}
""")
    assert [f.kind for f in r.row_filters("a")] == ["length"]
    assert [f.kind for f in r.row_filters("b")] == ["length", "regex"]


def test_run_filters_accounting_and_first_reason_wins():
    rows = [record("ok answer here", "1"), record("x", "2"), record("I am here.\n" * 5, "3")]
    kept, dropped, stats = run_filters("s", rows, [length(min_chars=3), repetition()], CTX)
    assert [r["id"] for r in kept] == ["1"]
    assert [(d["id"], d["reason"]) for d in dropped] == [("2", "length:min_chars"), ("3", "repetition:line")]
    stats.assert_balanced()
    assert stats.to_json()["dropped"] == {"length:min_chars": 1, "repetition:line": 1}


# --- pii ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def offline(request):
    """presidio must never touch the network: sockets fail while the analyzer is built and used."""
    from runner.data.filters import pii as mod
    mod.analyzer.cache_clear()
    real = socket.socket.connect

    def refuse(*a, **k):
        raise AssertionError("network access")
    socket.socket.connect = refuse
    request.addfinalizer(lambda: setattr(socket.socket, "connect", real))
    return mod


def test_pii_drop_and_mask_offline(offline):
    text = "Write to john.doe@example.com or call (415) 555-2671. Card 4111 1111 1111 1111, ip 10.0.0.1."
    assert verdict(pii(), text) == "pii:EMAIL_ADDRESS"
    check = FILTERS["pii"](pii(action="mask"), CTX)
    reason, out = check(record(text, "r", user="我的邮箱是 zhang@qq.com，电话 13912345678"))
    assert reason is None
    assert out["messages"][1]["content"] == \
        "Write to <EMAIL_ADDRESS> or call <PHONE_NUMBER>. Card <CREDIT_CARD>, ip <IP_ADDRESS>."
    assert out["messages"][0]["content"] == "我的邮箱是 <EMAIL_ADDRESS>，电话 <PHONE_NUMBER>"
    assert out["id"] == "r"


def test_pii_field_entities_and_no_false_alarms_on_maths(offline):
    r = record("The answer is 42.", "r", user="mail me: a.b@example.org")
    assert FILTERS["pii"](pii(field="assistant"), CTX)(r)[0] is None
    assert FILTERS["pii"](pii(field="user"), CTX)(r)[0] == "pii:EMAIL_ADDRESS"
    assert FILTERS["pii"](pii(entities=("CREDIT_CARD",)), CTX)(r)[0] is None
    # the gsm8k answers that phonenumbers itself takes for phone numbers ("1000 - 200 - 400 = 400")
    import phonenumbers
    rows = [json.loads(x) for x in (DATA / "gsm8k_train.jsonl").read_text().splitlines()]
    tricky = [x["answer"] for x in rows if any(True for region in offline.PHONE_REGIONS
                                               for _ in phonenumbers.PhoneNumberMatcher(x["answer"], region, leniency=1))]
    assert len(tricky) >= 5
    check = FILTERS["pii"](pii(entities=("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IP_ADDRESS")), CTX)
    assert [t for t in tricky if check(record(t, "g"))[0]] == []
    lenient = FILTERS["pii"](pii(entities=("PHONE_NUMBER",), score_threshold=0.4), CTX)
    assert all(lenient(record(t, "g"))[0] == "pii:PHONE_NUMBER" for t in tricky)   # every match at 0.4


# --- toxicity ----------------------------------------------------------------------------------------

def test_toxicity_needs_a_local_checkpoint_and_detoxify(tmp_path, monkeypatch):
    f = ToxicityFilter(kind="toxicity", field="assistant", model_path="models/tox.ckpt", threshold=0.8, sources=None)
    with pytest.raises(RecipeError, match="no detoxify checkpoint at .*models/tox.ckpt"):
        FILTERS["toxicity"](f, FilterContext(base_dir=tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tox.ckpt").write_bytes(b"weights")
    monkeypatch.setitem(sys.modules, "detoxify", None)          # not installed
    with pytest.raises(RecipeError, match="pip install detoxify"):
        FILTERS["toxicity"](f, FilterContext(base_dir=tmp_path))

    class FakeDetoxify:          # stands in for the model: scores by a word, to test the wiring
        def __init__(self, checkpoint, device):
            assert checkpoint == str(tmp_path / "models" / "tox.ckpt") and device == "cpu"

        def predict(self, text):
            return {"toxicity": 0.9 if "idiot" in text else 0.1}
    monkeypatch.setitem(sys.modules, "detoxify", types.SimpleNamespace(Detoxify=FakeDetoxify))
    check = FILTERS["toxicity"](f, FilterContext(base_dir=tmp_path))
    assert check(record("you idiot", "1"))[0] == "toxicity"
    assert check(record("you are kind", "2"))[0] is None


# --- exclude -----------------------------------------------------------------------------------------

def test_exclude_drops_listed_texts_by_text_or_sha1(tmp_path):
    from runner.data.filters.exclude import digest
    poems = [json.loads(x) for x in (DATA / "tang_poems.jsonl").read_text(encoding="utf-8").splitlines()[:4]]
    bodies = ["\n".join(p["paragraphs"][1:]) for p in poems]
    listed = tmp_path / "heldout.jsonl"
    # one by its text (other punctuation and case: matching is on normalised text), one by its sha1
    listed.write_text(json.dumps({"text": bodies[0].replace("，", ",") + "  "}, ensure_ascii=False) + "\n\n"
                      + json.dumps({"sha1": digest(bodies[1]), "recipe": "x"}) + "\n", encoding="utf-8")
    f = ExcludeFilter(kind="exclude", field="assistant", file="heldout.jsonl", sources=None)
    kept, dropped, stats = run_filters("tang", [record(b, str(i)) for i, b in enumerate(bodies)], [f],
                                       FilterContext(base_dir=tmp_path))
    assert [d["id"] for d in dropped] == ["0", "1"] and [r["id"] for r in kept] == ["2", "3"]
    assert stats.to_json()["dropped"] == {"excluded": 2}


def test_exclude_file_errors_name_the_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"id": 3}\n', encoding="utf-8")
    f = ExcludeFilter(kind="exclude", field="assistant", file="bad.jsonl", sources=None)
    with pytest.raises(RecipeError, match=r"bad.jsonl:2: expected an object with a `text` or `sha1`"):
        FILTERS["exclude"](f, FilterContext(base_dir=tmp_path))
    (tmp_path / "bad.jsonl").write_text("{not json\n", encoding="utf-8")
    with pytest.raises(RecipeError, match=r"bad.jsonl:1: not JSON"):
        FILTERS["exclude"](f, FilterContext(base_dir=tmp_path))


def test_exclude_missing_file_is_a_validation_error(tmp_path):
    with pytest.raises(RecipeError, match=r"filters\[0\]\.file: no file at nowhere.jsonl"):
        recipe(tmp_path, """sources:
  a: {path: '{data}/identity.json', format: alpaca}
filters:
  - {kind: exclude, file: nowhere.jsonl}
""")


_TEXTS = st.text(st.sampled_from(list("ab_1 \n\t，。--!床前明月光⺀ーｱ\u0301\u00b2") + [chr(0x20000)]), max_size=60)


@settings(max_examples=300, deadline=None)
@given(_TEXTS, st.integers(1, 5))
def test_words_and_the_ngram_ratio_are_their_definitions(s, n):
    """The fast paths (isalnum before the regex; n-grams counted by zip) against the definitions in the
    module docs: a token is a word when it holds a \\w character; the ratio is (n-grams - distinct) / n-grams."""
    w = [t for t in _TOKEN.findall(s) if re.search(r"\w", t)]
    assert words(s) == w
    grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    want = (len(grams) - len(set(grams))) / len(grams) if grams else 0.0
    assert measure(repetition(ngram_size=n), CTX)(record(s, "r"))[f"ngram_ratio_{n}"] == want


def test_the_filter_step_writes_an_unchanged_row_as_read_and_a_masked_one_anew(offline):
    """filter_batch writes a kept row no filter replaced as the line it read, not dumps() of it again: the
    same bytes as dumps on real rows (alpaca, with e-mail addresses planted in some); a row the pii mask
    changed is written masked, and the row the mask was given is left as it was (the filters' contract)."""
    from runner.data.filters import filter_rows
    from runner.data.io import dumps
    from runner.steps.filter import filter_batch

    raw = json.loads((DATA / "alpaca_en_demo.json").read_text(encoding="utf-8"))[:300]
    rows = [record(r["output"] + (f" Write to me{i}@example.com." if i % 7 == 0 else ""), f"a{i}",
                   user=r["instruction"]) for i, r in enumerate(raw)]
    lines = [dumps(r) + "\n" for r in rows]
    mask = pii(action="mask", field="assistant")
    chain = [length(min_chars=20), mask, repetition(), refusal()]
    kept_text, dropped_text, stats, _ = filter_batch("s", chain, CTX, (0, lines))
    want_kept, want_dropped = [], []
    want_stats = filter_rows("s", (json.loads(x) for x in lines), chain, CTX,
                             keep=lambda r: want_kept.append(dumps(r) + "\n"),
                             drop=lambda r: want_dropped.append(dumps(r) + "\n"))
    assert kept_text == "".join(want_kept) and dropped_text == "".join(want_dropped)
    assert stats == want_stats.to_json()
    changed = [x for x in want_kept if x not in lines]
    assert len(want_kept) - len(changed) >= 200 and len(changed) >= 40           # most as read; the masked anew
    assert not any("@example.com" in x for x in want_kept) and sum("<EMAIL_ADDRESS>" in x for x in changed) >= 40
    given_row = json.loads(lines[0])
    reason, out = FILTERS["pii"](mask, CTX)(given_row)
    assert out is not given_row and given_row == json.loads(lines[0]) and "<EMAIL_ADDRESS>" in out["messages"][1]["content"]


def test_no_filter_kind_changes_the_record_it_is_given(offline, tmp_path, monkeypatch):
    """The family behind the filter step's shortcut: every registered kind, on real rows (alpaca, with
    e-mail addresses planted for the mask), leaves the dict it was given as it was; a kind that changes a
    row returns a copy. An in-place edit would have the step write the row's line as read: a mask lost."""
    from runner.data.io import dumps

    (tmp_path / "tox.ckpt").write_bytes(b"x")
    (tmp_path / "listed.jsonl").write_text(json.dumps({"text": "hello"}) + "\n", encoding="utf-8")
    (tmp_path / "test.jsonl").write_text(json.dumps({"question": "What is 2+2?", "answer": "4"}) + "\n",
                                         encoding="utf-8")

    class Flags:      # stands in for detoxify (its weights cannot be downloaded here): flags a word
        def __init__(self, checkpoint, device):
            pass

        def predict(self, text):
            return {"toxicity": 0.9 if "bad" in text else 0.1}
    monkeypatch.setitem(sys.modules, "detoxify", types.SimpleNamespace(Detoxify=Flags))
    r = recipe(tmp_path, """sources:
  a: {path: '{data}/alpaca_en_demo.json', format: alpaca}
filters:
  - {kind: length, min_chars: 5}
  - {kind: repetition}
  - {kind: incomplete}
  - {kind: refusal}
  - {kind: regex, pattern: "xyz", action: drop}
  - {kind: pii, action: mask}
  - {kind: toxicity, model_path: tox.ckpt}
  - {kind: exclude, file: listed.jsonl}
  - {kind: decontaminate, against: [test.jsonl]}
""")
    assert {f.kind for f in r.filters} == set(FILTERS)
    ctx = FilterContext(base_dir=tmp_path)
    raw = json.loads((DATA / "alpaca_en_demo.json").read_text(encoding="utf-8"))[:200]
    rows = [record(x["output"] + (" Mail me@example.com." if i % 5 == 0 else ""), f"a{i}", user=x["instruction"])
            for i, x in enumerate(raw)]
    changed = 0
    for f in r.filters:
        check = FILTERS[f.kind](f, ctx)
        for row in rows:
            given_row = json.loads(dumps(row))
            _, out = check(given_row)
            assert dumps(given_row) == dumps(row), (f.kind, row["id"])
            changed += out is not given_row and dumps(out) != dumps(row)
    assert changed >= 40        # the mask changed rows, as copies
