"""Splits: sizes, seeds, strategies, group-aware leak freedom, and meta-learning tasks."""
from __future__ import annotations

from collections import Counter

import pytest

from helpers.data import TANG_FIELDS, record, recipe
from runner.data.formats import load_source
from runner.data.splits import check_no_leak, select_tasks, split_source, split_tasks
from runner.errors import RecipeError
from runner.recipe.model import MetaSplit, Split


def rows(n, source="s", **meta):
    return [record(f"answer number {i}", f"{source}{i}", source=source, **{k: v(i) for k, v in meta.items()})
            for i in range(n)]


def ids(side):
    return [r["id"] for r in side]


def test_random_split_sizes_seed_and_order():
    data = rows(1000)
    train, eval_ = split_source(data, Split("random", 0.05, None), seed=1)
    assert (len(train), len(eval_)) == (950, 50)
    assert ids(train) == sorted(ids(train), key=lambda x: int(x[1:]))      # input order kept
    assert split_source(data, Split("random", 0.05, None), seed=1) == (train, eval_)
    assert ids(split_source(data, Split("random", 0.05, None), seed=2)[1]) != ids(eval_)
    assert split_source(data, Split("random", 0.0, None), seed=1) == (data, [])


def test_planted_duplicates_land_on_one_side():
    data = rows(400)
    for i in range(0, 400, 8):      # same text under another id, and same id under another text
        data.append(record(f"Answer  number {i}!", f"dup-text-{i}"))
        data.append(record(f"something else {i}", f"s{i + 1}"))
    for seed in range(5):
        train, eval_ = split_source(data, Split("random", 0.3, None), seed=seed)
        assert len(train) + len(eval_) == len(data)
        side = {r["id"]: "t" for r in train} | {r["id"]: "e" for r in eval_}
        for i in range(0, 400, 8):
            assert side[f"s{i}"] == side[f"dup-text-{i}"]
        check_no_leak({"train": train, "eval": eval_})


def test_copies_across_sources_follow_the_first():
    a, b = rows(200, "a"), rows(200, "b")          # the same texts under other ids, in another source
    taken: dict[str, str] = {}
    ta, ea = split_source(a, Split("random", 0.2, None), 1, taken)
    tb, eb = split_source(b, Split("random", 0.2, None), 2, taken)
    assert [r["id"][1:] for r in ea] == [r["id"][1:] for r in eb]
    check_no_leak({"train": ta + tb, "eval": ea + eb})


def test_check_no_leak_raises_on_a_leaky_split():
    a = record("some text", "1")
    with pytest.raises(RecipeError, match="split leak: id '1' of source 's' is in both train and eval"):
        check_no_leak({"train": [a], "eval": [record("other text", "1")]})
    with pytest.raises(RecipeError, match="split leak: the text of id '2'"):
        check_no_leak({"train": [a], "eval": [record("Some   TEXT.", "2")]})
    check_no_leak({"train": [a], "eval": [record("other text", "1", source="t")]})   # ids are per source


def test_stratified_keeps_each_values_share():
    data = rows(1000, kind=lambda i: "a" if i % 10 < 7 else ("b" if i % 10 < 9 else "c"))
    train, eval_ = split_source(data, Split("stratified", 0.1, "meta.kind"), seed=3)
    total, held = Counter(r["meta"]["kind"] for r in data), Counter(r["meta"]["kind"] for r in eval_)
    assert held == {k: round(n * 0.1) for k, n in total.items()} == {"a": 70, "b": 20, "c": 10}
    with pytest.raises(RecipeError, match="field 'meta.nope' is missing in 1000 of 1000 rows"):
        split_source(data, Split("stratified", 0.1, "meta.nope"), seed=3)


def test_temporal_puts_the_latest_in_eval_without_shuffling():
    data = rows(100, t=lambda i: str((i * 37) % 100))       # numeric strings, out of order
    train, eval_ = split_source(data, Split("temporal", 0.1, "meta.t"), seed=1)
    assert [int(r["meta"]["t"]) for r in train] == list(range(90))           # ordered numerically, not "10" < "9"
    assert [int(r["meta"]["t"]) for r in eval_] == list(range(90, 100))
    assert split_source(data, Split("temporal", 0.1, "meta.t"), seed=99) == (train, eval_)


def test_real_poems_split_without_leaks(tmp_path):
    r = recipe(tmp_path, f"sources:\n  tang:\n    path: '{{data}}/tang_poems.jsonl'\n    format: fields{TANG_FIELDS}\n")
    records, _, _ = load_source("tang", r.sources["tang"], r.file.parent)
    train, eval_ = split_source(records, r.split, seed=42)
    assert abs(len(eval_) - 0.05 * len(records)) <= 30     # natural duplicates move whole groups
    check_no_leak({"train": train, "eval": eval_})


def test_split_tasks_for_meta_learning():
    authors = {"li": 120, "du": 90, "wang": 61, "meng": 59, "bai": 100}
    data = [record(f"{a} poem {i}", f"{a}{i}", author=a, len="short" if i % 3 else "long")
            for a, n in authors.items() for i in range(n)]
    data.append(record("li poem 0", "copy", author="du", len="short"))       # a text in two tasks
    tasks = split_tasks(data, "meta.author", 60, 3, MetaSplit("stratified", "meta.len", 0.3, 0.4, 0.3), 5)
    assert list(tasks) == ["li", "bai", "du"]                                 # the 3 largest with >= 60 rows
    assert select_tasks(data, "meta.author", 60, 3)[1] == {"split:task_too_small": 59, "split:beyond_max_tasks": 61}
    li = tasks["li"]
    assert {k: len(v) for k, v in li.items()} == {"support": 36, "query": 48, "test": 36}
    for part in li.values():
        assert Counter(r["meta"]["len"] for r in part)["long"] * 3 == pytest.approx(len(part), abs=3)
    sides = {p: [r for t in tasks.values() for r in t[p]] for p in ("support", "query", "test")}
    check_no_leak(sides)
    assert split_tasks(data, "meta.author", 60, 3, MetaSplit("stratified", "meta.len", 0.3, 0.4, 0.3), 5) == tasks
