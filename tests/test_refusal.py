"""The refusal filter against hand labels: every row of the shipped data that the built-in patterns
match (tests/labelled/refusal.jsonl: 74 rows, 9 real refusals). Precision is what the filter is for:
each false positive is a good training row thrown away (the old rule dropped 29 correct tool-use
answers of glaive, 65 of its 74 drops were wrong)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.data.filters import FILTERS, FilterContext
from runner.data.formats import load_source
from runner.recipe.model import RefusalFilter

from helpers.data import recipe

LABELS = Path(__file__).parent / "labelled" / "refusal.jsonl"
FILES = {"alpaca_en": "alpaca_en_demo.json", "alpaca_zh": "alpaca_zh_demo.json",
         "glaive": "glaive_toolcall_en_demo.json", "identity": "identity.json"}
BODY = "sources:\n" + "".join(
    f"  {name}: {{path: '{{data}}/{file}', format: {'sharegpt' if name == 'glaive' else 'alpaca'}}}\n"
    for name, file in FILES.items())


def _filter(**kw) -> RefusalFilter:
    return RefusalFilter(**{"kind": "refusal", "field": "assistant", "patterns": None, "extra_patterns": (),
                            "window": 200, "tools_exempt": True, "min_continuation": 100, "sources": None, **kw})


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """[(record, label)] for every labelled row, read with the real loaders."""
    r = recipe(tmp_path_factory.mktemp("refusal"), BODY)
    records = {FILES[name]: load_source(name, src, r.file.parent)[0] for name, src in r.sources.items()}
    out = []
    for line in LABELS.read_text(encoding="utf-8").splitlines():
        x = json.loads(line)
        rec = records[x["file"]][x["index"]]
        assert any(m["content"].startswith(x["starts"]) for m in rec["messages"]), x   # labels still line up
        out.append((rec, x["label"]))
    return out, records


def _scores(f: RefusalFilter, labelled) -> tuple[float, float, int]:
    check = FILTERS["refusal"](f, FilterContext())
    dropped = [label for rec, label in labelled if check(rec)[0] == "refusal"]
    refusals = sum(label == "refusal" for _, label in labelled)
    tp = dropped.count("refusal")
    return tp / max(len(dropped), 1), tp / max(refusals, 1), len(dropped)


def test_labels_cover_every_match_of_the_built_in_patterns(labelled):
    rows, records = labelled
    old = FILTERS["refusal"](_filter(tools_exempt=False, min_continuation=None), FilterContext())
    matched = sum(old(rec)[0] == "refusal" for recs in records.values() for rec in recs)
    assert matched == len(rows) == 74


def test_precision_and_recall_on_the_labelled_shipped_data(labelled):
    rows, _ = labelled
    old_p, old_r, old_n = _scores(_filter(tools_exempt=False, min_continuation=None), rows)
    new_p, new_r, new_n = _scores(_filter(), rows)
    print(f"refusal filter on {len(rows)} labelled rows: old precision {old_p:.2f} recall {old_r:.2f} ({old_n} "
          f"dropped); new precision {new_p:.2f} recall {new_r:.2f} ({new_n} dropped)")
    assert old_p < 0.2 and old_r == 1.0
    assert new_p >= 0.9 and new_r >= 0.85


def test_tool_conversations_keep_their_declines(labelled):
    rows, _ = labelled
    tools = [(rec, label) for rec, label in rows if rec["meta"].get("tools")]
    assert len(tools) == 29
    assert _scores(_filter(), tools)[2] == 0
    assert _scores(_filter(tools_exempt=False, min_continuation=None), tools)[2] == 29


@pytest.mark.parametrize("text, verdict", [
    ("I'm sorry, but I can't help with that.", "refusal"),
    ("As an AI, I don't have a physical house, so I cannot describe it. Can I help you with something else?",
     "refusal"),
    ("I'm sorry, but I cannot estimate that without more information. Could you provide the location?", None),
    ("As an AI assistant, I suggest three strategies: first, tell stories; second, share expertise.", None),
    ("As an AI, I don't have real-time data. However, according to the 2019 census, the median age of the "
     "US population was 38.4 years, up from 37.2 in 2010, as the large post-war generation grew older.", None),
    ("I am sorry, but as an AI language model, I do not have housing data. However, I can suggest that you "
     "refer to reputable real estate websites or consult a local agent for the latest prices in your area.",
     "refusal"),
    ("抱歉，作为一个人工智能助手，我无法看到物体。", "refusal"),
    ("对不起，我无法回答您的问题，因为您并未提供诗歌的具体内容。如果您能提供诗歌文本，我很乐意为您解答。", None),
])
def test_rule_cases(text, verdict):
    rec = {"id": "r", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": text}],
           "meta": {}}
    assert FILTERS["refusal"](_filter(), FilterContext())(rec)[0] == verdict
