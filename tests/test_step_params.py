"""Every step owns its parameters (issue 9): a step kind declares what it depends on, the compiler
fingerprints exactly that, and run() gets exactly that (there is no recipe in its context).

Checked key by key over the shipped recipes: every leaf of a recipe's resolved document is changed in
turn, and the steps whose fingerprint moves must be exactly the steps whose declared parameters or files
moved, plus their descendants. Then, per step kind, each declared parameter must have moved its step's
fingerprint at least once in that sweep."""
from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import pytest

from runner import api, sources
from runner.dag import fingerprint as fpmod
from runner.dag.compile import compile_recipe
from runner.recipe import model
from runner.steps import STEPS, versions
from runner.steps.base import StepContext, StepId, format_step, parse_step

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ["poetry_lora", "curriculum_3stage", "fomaml_poets", "stage2_correction"]


def _leaves(doc, path=()):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(doc, list) and doc and all(isinstance(x, dict) for x in doc):
        for i, v in enumerate(doc):
            yield from _leaves(v, path + (i,))
    else:
        yield path, doc


def _changed(v):
    """Another value of the same type, or None when there is no safe guess."""
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v + 1
    if isinstance(v, float):
        return v * 1.5 if v else 0.5
    if isinstance(v, str):
        return v + "x"
    if isinstance(v, list) and v:
        return v[:-1]
    return None


def _set(doc, path, value):
    doc = copy.deepcopy(doc)
    d = doc
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value
    return doc


def _fingerprints(recipe):
    graph = compile_recipe(recipe)
    return graph, fpmod.fingerprint_graph(graph, recipe.file.parent, versions())


def _sweep(monkeypatch):
    """-> [(recipe, leaf path, {step: (params moved, files or inputs moved)}, graph after, stale steps,
    graph before)] for every leaf change that still builds and compiles."""
    # files are named, not read: a changed path must move the fingerprint, the bytes are another test's
    monkeypatch.setattr(sources, "digest", lambda rel, base, memo: rel)
    out = []
    for name in SHIPPED:
        before = api.load(ROOT / "recipes" / f"{name}.yaml")
        g0, f0 = _fingerprints(before)
        for path, value in _leaves(dict(before.document)):
            new = _changed(value)
            if new is None:
                continue
            try:
                after = model.build(_set(dict(before.document), path, new), before.file)
                g1, f1 = _fingerprints(after)
            except Exception:   # a value the model cannot take (an enum, a stage name): not this test's business
                continue
            common = [s.id for s in g1.steps if s.id in g0]
            moved = {s: (g0[s].params_json != g1[s].params_json, g0[s].files != g1[s].files or
                         g0[s].inputs != g1[s].inputs) for s in common}
            stale = {s for s in common if f0[format_step(s)].value != f1[format_step(s)].value}
            out.append((name, path, moved, g1, stale, g0))
    return out


@pytest.fixture(scope="module")
def sweep():
    with pytest.MonkeyPatch.context() as mp:
        return _sweep(mp)


def test_a_changed_key_makes_exactly_its_readers_and_their_descendants_stale(sweep):
    assert len(sweep) > 200      # the sweep really covers the recipes
    for name, path, moved, graph, stale, _ in sweep:
        direct = {s for s, (p, f) in moved.items() if p or f}
        expected = set().union(*(graph.descendants(s) for s in direct)) if direct else set()
        expected &= set(moved)
        assert stale == expected, f"{name}: {'.'.join(map(str, path))}: stale {sorted(map(str, stale))}, " \
                                  f"expected {sorted(map(str, expected))}"


# A declared parameter the leaf sweep cannot move on the shipped recipes, and why.
UNSWEPT = {
    ("load", "name"): "a source's name is its key: renaming it renames the step",
    ("dedup", "order"): "source order: moves when sources are reordered (test_dag covers it)",
    ("split", "order"): "as above",
    ("split", "meta"): "moved in the FOMAML recipe; a plain recipe has no meta",
    ("mix", "sources"): "the source list: moves when a source is added or removed",
    ("mix", "stage"): "a stage's name is its key",
    ("mix", "groups"): "no shipped recipe mixes by a group",
    ("meta_train", "role"): "the role is the step's identity (train.meta or train.control)",
}


def test_each_declared_parameter_moves_its_steps_fingerprint(sweep):
    seen: dict[tuple[str, str], bool] = {}
    for name in SHIPPED:
        r = api.load(ROOT / "recipes" / f"{name}.yaml")
        for step in compile_recipe(r).steps:
            for key in step.params:
                seen.setdefault((step.kind, key), False)
    for _, _, moved, graph, stale, g0 in sweep:
        for s, (params, _) in moved.items():
            if not params:
                continue
            a, b = json.loads(g0[s].params_json), json.loads(graph[s].params_json)
            for key in set(a) | set(b):
                if a.get(key) != b.get(key):
                    assert s in stale, f"{s}: param {key} moved but the fingerprint did not"
                    seen[(s.kind, key)] = True
    missing = sorted(k for k, hit in seen.items() if not hit and k not in UNSWEPT)
    assert not missing, f"declared parameters the sweep never moved: {missing}"
    assert {k for k, _ in seen} == set(STEPS), "every step kind is compiled from some shipped recipe"


def test_an_undeclared_key_moves_nothing(monkeypatch):
    """Keys no step declares (they shape the graph or only the report) leave every fingerprint alone."""
    monkeypatch.setattr(sources, "digest", lambda rel, base, memo: rel)
    r = api.load(ROOT / "recipes" / "curriculum_3stage.yaml")
    g0, f0 = _fingerprints(r)
    for path, value in [(("train", "report_to"), ["tensorboard"]), (("evaluate", "every_stage"), False)]:
        after = model.build(_set(dict(r.document), path, value), r.file)
        g1, f1 = _fingerprints(after)
        assert {s.name: f1[s.name].value for s in g1.steps} == {s.name: f0[s.name].value for s in g1.steps}


def test_step_names_parse_back_to_their_ids():
    for name in SHIPPED:
        graph = compile_recipe(api.load(ROOT / "recipes" / f"{name}.yaml"))
        for step in graph.steps:
            assert parse_step(step.name, graph.ids) == step.id and format_step(step.id) == step.name
            if step.kind != "meta_train":   # train.<x> is a stage's training unless the graph says otherwise
                assert parse_step(step.name) == step.id
    assert parse_step("eval.task") == StepId("evaluate", stage="task")
    assert parse_step("load.tang") == StepId("load", source="tang") and str(StepId("export")) == "export"


def test_a_step_context_has_no_recipe():
    assert "recipe" not in {f.name for f in dataclasses.fields(StepContext)}


# Data kinds (KIND.data) read only their declared parameters, inputs and files. Train and eval kinds also
# read what they declare as `runtime` (loggers, an eval batch size): no artifact depends on it.
def _data(kind: str) -> bool:
    return STEPS[kind].KIND.data


class _Reads(Mapping):
    """A step's parameters that record which keys run() read."""

    def __init__(self, params):
        self.params, self.read = params, set()

    def __getitem__(self, key):
        self.read.add(key)
        return self.params[key]

    def __iter__(self):
        self.read.update(self.params)
        return iter(self.params)

    def __len__(self):
        return len(self.params)


def _only_declared(ctx, sandbox: Path):
    """ctx with nothing but what the step declared: runtime emptied for a data kind, parameters that
    record their reads, and a recipe folder holding only the step's declared local files (links)."""
    base = sandbox / ctx.step.name / "a" / "b"   # deep enough for a declared ../data/x.jsonl
    base.mkdir(parents=True)
    for entry in ctx.step.files:
        for src in sorted(ctx.base_dir.glob(entry)) if any(c in entry for c in "*?[") else [ctx.base_dir / entry]:
            dest = Path(os.path.normpath(base / os.path.relpath(src, ctx.base_dir)))
            assert sandbox in dest.parents, f"{ctx.step.name}: {entry} reaches out of the sandbox"
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(src.resolve(), target_is_directory=src.is_dir())
    runtime = {} if _data(ctx.step.kind) else dict(ctx.step.runtime)
    step = dataclasses.replace(ctx.step, params=_Reads(ctx.step.params), runtime=MappingProxyType(runtime))
    return dataclasses.replace(ctx, step=step, base_dir=base)


def _spy_on_steps(monkeypatch, sandbox: Path, reads: dict):
    """Every registered kind runs through _only_declared; reads[kind] gathers the parameter keys read."""
    for kind, mod in dict(STEPS).items():
        class Spy:
            VERSION, KIND = mod.VERSION, mod.KIND
            steps = staticmethod(mod.steps)
            declare = staticmethod(mod.declare)
            publish = getattr(mod, "publish", None)

            @staticmethod
            def run(ctx, _mod=mod):
                assert not hasattr(ctx, "recipe")
                bare = _only_declared(ctx, sandbox)
                try:
                    return _mod.run(bare)
                finally:
                    reads.setdefault(ctx.step.kind, set()).update(bare.step.params.read)
        if Spy.publish is None:
            del Spy.publish
        monkeypatch.setitem(STEPS, kind, Spy)


def _artifacts(cache: Path) -> dict[str, bytes]:
    """Every artifact file but the manifests (which hold timings), by its path in the cache."""
    return {str(f.relative_to(cache)): f.read_bytes() for f in sorted((cache / "objects").rglob("*"))
            if f.is_file() and f.name != "manifest.json"}


KINDS_RECIPE = """\
recipe: kinds
model: {base: builtin:tiny}
sources:
  en: {path: data/alpaca_en_demo.json, format: alpaca}
  ident: {path: data/identity.json, format: alpaca}
filters:
  - {kind: length, field: assistant, min_chars: 5, max_tokens: max_length}
  - {kind: dedup, method: exact}
mix: {en: 0.8, ident: 0.2}
size: 40
template: {max_length: 96}
train: {max_steps: 1, micro_batch_size: 2, batch_size: 2, deepspeed: null}
evaluate: {max_rows: 4, generate: {prompts: ["Who are you?"], max_new_tokens: 4}}
"""

META_RECIPE = """\
recipe: kinds_meta
model: {base: builtin:tiny}
sources:
  tang:
    path: data/tang_poems.jsonl
    format: fields
    limit: 2000
    fields:
      user: "{{ paragraphs[0] }}"
      assistant: "{{ paragraphs[1:] | join('\\n') }}"
      meta: {author: "{{ author }}", title_len: "{{ 'short' if title | length <= 4 else 'long' }}"}
meta:
  algorithm: fomaml
  tasks: {source: tang, by: meta.author, min_rows: 20, max_tasks: 6}
  split: {strategy: stratified, by: meta.title_len, support: 0.3, query: 0.4, test: 0.3}
  inner: {learning_rate: 1.0e-4, steps: 1, batch_size: 2}
  outer: {learning_rate: 3.0e-5, meta_batch_size: 2, query_batch_size: 2}
  total_steps: 1
  few_shot_eval: {shots: [2], held_out_tasks: 2}
template: {max_length: 96}
train: {micro_batch_size: 2, batch_size: 2, deepspeed: null}
"""


def _recipe(tmp_path: Path, text: str, *files: str) -> Path:
    import shutil
    (tmp_path / "data").mkdir()
    for f in files:
        shutil.copy(ROOT / "data" / f, tmp_path / "data" / f)
    (tmp_path / "r.yaml").write_text(text, encoding="utf-8")
    return tmp_path / "r.yaml"


def test_data_steps_declare_no_runtime():
    """A data step's run() reads nothing that is not fingerprinted: the load step's Source included."""
    for name in SHIPPED + ["hub_ultrachat", "fomaml_explicit", "tiny_chat"]:
        for step in compile_recipe(api.load(ROOT / "recipes" / f"{name}.yaml")).steps:
            assert not _data(step.kind) or not step.runtime, f"{name}: {step.name} declares {dict(step.runtime)}"


def test_every_step_kind_runs_from_its_declared_parameters_alone(tmp_path, monkeypatch):
    """A whole run (every kind in the registry) where each step's context carries no recipe, no runtime
    (a data kind), and a recipe folder with only the files the step declared: whatever a step reads came
    through its declared parameters, inputs and files. Each parameter a kind declares is read by it."""
    path = _recipe(tmp_path, KINDS_RECIPE, "alpaca_en_demo.json", "identity.json")
    monkeypatch.chdir(tmp_path)
    reads: dict[str, set] = {}
    _spy_on_steps(monkeypatch, tmp_path / "sandbox", reads)
    _, graph, records, _ = api.run(path, cache_dir=str(tmp_path / "cache"), output=str(tmp_path / "run"))
    # every kind but a meta recipe's (tasks: below; train.meta/control and eval.few_shot run in
    # tests/test_e2e.py::test_fomaml_recipe_meta_trains_compares_and_writes_the_task_layout, with the same
    # StepContext, which has no recipe field at all)
    meta = {"tasks", "render_tasks", "meta_train", "few_shot"}
    assert sorted(reads) == sorted(set(STEPS) - meta) and all(r.status == "ran" for r in records)
    for step in graph.steps:
        assert set(step.params) <= reads[step.kind], f"{step.name} never read {set(step.params) - reads[step.kind]}"


@pytest.mark.parametrize("text, files", [(KINDS_RECIPE, ("alpaca_en_demo.json", "identity.json")),
                                         (META_RECIPE, ("tang_poems.jsonl",))], ids=["sft", "meta"])
def test_data_steps_from_declared_parameters_alone_write_the_same_artifacts(tmp_path, monkeypatch, text, files):
    """The data steps of a dry run, once as they run and once from their declared parameters alone:
    the same artifacts, byte for byte."""
    path = _recipe(tmp_path, text, *files)
    monkeypatch.chdir(tmp_path)
    api.run(path, cache_dir=str(tmp_path / "plain"), output=str(tmp_path / "run1"), dry_run=True)
    reads: dict[str, set] = {}
    _spy_on_steps(monkeypatch, tmp_path / "sandbox", reads)
    api.run(path, cache_dir=str(tmp_path / "bare"), output=str(tmp_path / "run2"), dry_run=True)
    ran = {"load", "split", "tasks", "render_tasks"} if "meta:" in text else {"load", "filter", "dedup", "split", "mix", "render"}
    assert set(reads) == ran
    plain, bare = _artifacts(tmp_path / "plain"), _artifacts(tmp_path / "bare")
    assert plain and plain.keys() == bare.keys()
    assert [k for k in plain if plain[k] != bare[k]] == []
