"""Mixing: ratios are shares of the final mix, after filtering; sizes; groups; too-small sources."""
from __future__ import annotations

from collections import Counter
from types import MappingProxyType

import pytest

from helpers.data import record, recipe
from runner.data.filters import FilterContext, run_filters
from runner.data.formats import load_source
from runner.data.mixing import mix
from runner.errors import RecipeError
from runner.recipe.model import Sampling, Stage

RANDOM = Sampling("random", False)


def stage(mix_, size=None, name="main"):
    return Stage(name=name, mix=None if mix_ is None else MappingProxyType(mix_), size=size, from_=None, skip=False,
                 train=None, ewc=None)


def rows(n, source):
    return [record(f"{source} answer {i}", f"{source}{i}", source=source) for i in range(n)]


def test_ratios_hold_after_filtering(tmp_path):
    r = recipe(tmp_path, """sources:
  en: {path: '{data}/alpaca_en_demo.json', format: alpaca}
  zh: {path: '{data}/alpaca_zh_demo.json', format: alpaca}
  tools: {path: '{data}/glaive_toolcall_en_demo.json', format: sharegpt}
filters:
  - {kind: length, field: assistant, min_chars: 200}
  - {kind: refusal}
mix: {en: 0.5, zh: 0.3, tools: 0.2}
""")
    train = {}
    for name in r.sources:
        records, _, _ = load_source(name, r.sources[name], r.file.parent)
        train[name], dropped, _ = run_filters(name, records, r.row_filters(name), FilterContext())
        assert dropped                                       # the filters did remove rows
    out, report = mix(train, r.stages[0], r.groups, r.sampling, r.seed)
    counts = Counter(x["source"] for x in out)
    total = len(out)
    assert total == report["total"] == report["max_total"]   # size null: the largest mix without repeats
    for s, share in {"en": 0.5, "zh": 0.3, "tools": 0.2}.items():
        assert counts[s] == report["counts"][s]
        assert abs(counts[s] / total - share) <= 1 / total
    assert any(counts[s] == len(train[s]) for s in counts)   # the limiting source is used whole


def test_too_small_source_says_what_was_asked_and_what_to_do():
    train = {"a": rows(900, "a"), "b": rows(50, "b")}
    with pytest.raises(RecipeError) as e:
        mix(train, stage({"a": 0.8, "b": 0.2}, size=1000), {}, RANDOM, 1)
    msg = str(e.value)
    assert "'b' has 50 train rows but a 0.2 share of 1000 needs 200 (it can give a 0.05 share)" in msg
    assert "most these ratios allow is 250 rows" in msg and "oversample: true" in msg and "ratios" in msg


def test_oversampling_repeats_rows_and_reports_it():
    train = {"a": rows(900, "a"), "b": rows(50, "b")}
    out, report = mix(train, stage({"a": 0.8, "b": 0.2}, size=1000), {}, Sampling("random", True), 1)
    counts = Counter(x["source"] for x in out)
    assert counts == {"a": 800, "b": 200} and report["oversampled"] == {"b": 150}
    assert Counter(x["id"] for x in out if x["source"] == "b") == {f"b{i}": 4 for i in range(50)}
    st = report["stats"]
    assert st["rows_in"] + st["added"]["mix:oversampled"] == st["rows_out"] + sum(st["dropped"].values())


def test_sizes_int_fraction_and_null():
    train = {"a": rows(300, "a"), "b": rows(100, "b")}
    assert len(mix(train, stage({"a": 0.5, "b": 0.5}), {}, RANDOM, 1)[0]) == 200
    assert len(mix(train, stage({"a": 0.5, "b": 0.5}, size=0.25), {}, RANDOM, 1)[0]) == 50
    assert len(mix(train, stage({"a": 0.5, "b": 0.5}, size=1.0), {}, RANDOM, 1)[0]) == 200
    assert len(mix(train, stage({"a": 0.5, "b": 0.5}, size=31), {}, RANDOM, 1)[0]) == 31
    out, report = mix(train, stage(None), {}, RANDOM, 1)               # mix null: proportional to size
    assert report["requested"] == {"a": 0.75, "b": 0.25} and len(out) == 400


def test_group_share_is_split_by_member_size():
    train = {"general": rows(1000, "general"), "identity": rows(90, "identity"), "tools": rows(270, "tools")}
    out, report = mix(train, stage({"general": 0.6, "task": 0.4}), {"task": ("identity", "tools")}, RANDOM, 1)
    assert report["requested"] == {"general": 0.6, "identity": 0.1, "tools": 0.3}
    assert report["counts"] == {"general": 540, "identity": 90, "tools": 270} and len(out) == 900


def test_systematic_sampling_spreads_over_the_source():
    train = {"a": rows(1000, "a")}
    out, _ = mix(train, stage({"a": 1.0}, size=100), {}, Sampling("systematic", False), 4)
    picked = sorted(int(x["id"][1:]) for x in out)
    gaps = {b - a for a, b in zip(picked, picked[1:])}
    assert gaps <= {9, 10, 11} and picked[0] < 10


def test_mix_is_deterministic_shuffled_and_counts_every_row():
    train = {"a": rows(500, "a"), "b": rows(500, "b"), "c": rows(10, "c")}
    one = mix(train, stage({"a": 0.5, "b": 0.5}, size=400), {}, RANDOM, 7)
    assert one == mix(train, stage({"a": 0.5, "b": 0.5}, size=400), {}, RANDOM, 7)
    assert one[0] != mix(train, stage({"a": 0.5, "b": 0.5}, size=400), {}, RANDOM, 8)[0]
    first_half = Counter(x["source"] for x in one[0][:200])
    assert 60 < first_half["a"] < 140                                   # sources interleave
    st = one[1]["stats"]
    assert st["by_source"]["c"] == {"rows_in": 10, "rows_out": 0, "dropped": {"mix:not_in_stage": 10}}
    assert st["rows_in"] == st["rows_out"] + sum(st["dropped"].values())


def test_an_empty_source_in_the_mix_is_an_error():
    with pytest.raises(RecipeError, match="nothing to mix: 'b' has no train rows"):
        mix({"a": rows(10, "a"), "b": []}, stage({"a": 0.5, "b": 0.5}), {}, RANDOM, 1)
