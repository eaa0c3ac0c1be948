"""Source kinds own their identity (runner/sources/): the engine asks the registry, never a kind; each
files entry belongs to exactly one kind; and the load step's Source, rebuilt from what it declared, is
the recipe's Source."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from runner import api, sources
from runner.dag.compile import compile_recipe
from runner.sources import hub, local, remote
from runner.steps.load import _source

ROOT = Path(__file__).resolve().parent.parent
SHA = "0123456789abcdef0123456789abcdef01234567"


def _imported(path: Path) -> set[str]:
    """The runner modules a file under runner/dag/ imports (relative imports resolved)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = "runner" if node.level == 2 else "runner.dag" if node.level == 1 else ""
            module = ".".join(p for p in (base, node.module) if p)
            out |= {module} | {f"{module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def test_the_engine_imports_no_source_kind():
    kinds = {f"runner.sources.{m.stem}" for m in (ROOT / "runner" / "sources").glob("*.py") if m.stem != "__init__"}
    for f in sorted((ROOT / "runner" / "dag").glob("*.py")):
        assert not _imported(f) & kinds, f"{f.name} imports {sorted(_imported(f) & kinds)}"
    assert "runner.sources" in _imported(ROOT / "runner" / "dag" / "fingerprint.py")
    assert "hub" not in (ROOT / "runner" / "dag" / "fingerprint.py").read_text(encoding="utf-8").lower()


@pytest.mark.parametrize("entry, kind", [
    ("hf://datasets/acme/chat", hub), (f"hf://datasets/acme/chat@{SHA}", hub), ("hf://datasets/chat@v1.0", hub),
    ("hf://datasets/acme/chat/data/train.jsonl", remote),   # a file in a hub repo, read through fsspec
    ("https://example.com/rows.jsonl", remote), ("s3://bucket/part-*.parquet", remote),
    ("../data/tang_poems.jsonl", local), ("model/*.json", local), ("templates/chat.jinja", local),
])
def test_each_files_entry_belongs_to_one_kind(entry, kind):
    assert [k for k in sources.KINDS.values() if k.owns(entry)][0] is kind


def test_a_hub_entry_is_keyed_by_its_id_and_digested_to_its_commit(tmp_path):
    assert sources.key(f"hf://datasets/acme/chat@{SHA}") == sources.key("hf://datasets/acme/chat") \
        == "hf://datasets/acme/chat"
    assert sources.digest(f"hf://datasets/acme/chat@{SHA}", tmp_path, sources.Digests()) == SHA
    assert sources.restore((f"hf://datasets/acme/chat@{SHA}",)) == {"revision": SHA}
    assert sources.restore(("hf://datasets/acme/chat",)) == {"revision": None}
    assert sources.changed("hf://datasets/acme/chat", "a" * 40, SHA) == \
        f"dataset acme/chat moved: {'a' * 12} -> {SHA[:12]}"
    assert sources.changed("../data/x.jsonl", "a", "b") == "file ../data/x.jsonl changed"


def test_a_local_entry_is_digested_by_its_bytes(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.jsonl").write_text('{"text": "a"}\n')
    one = sources.digest("d", tmp_path, sources.Digests())
    assert sources.digest("d/*.jsonl", tmp_path, sources.Digests()) != "missing"
    (tmp_path / "d" / "a.jsonl").write_text('{"text": "b"}\n')
    assert sources.digest("d", tmp_path, sources.Digests()) != one
    assert sources.digest("nope.jsonl", tmp_path, sources.Digests()) == "missing"


SOURCES = {
    "hub, a branch": {"dataset": "acme/chat", "format": "messages"},
    "hub, pinned and sampled": {"dataset": "acme/chat", "revision": SHA, "split": ["a", "b"], "format": "messages",
                                "streaming": True, "shuffle": 100, "limit": 10, "config": "c"},
    "hub, data_files": {"dataset": "acme/chat", "revision": "v1.0", "data_files": {"train": ["x/*.parquet"]},
                        "format": "alpaca"},
    "remote": {"path": "https://example.com/rows.jsonl", "format": "prompt_response", "limit": 5},
    "local, placeholders": {"path": "rows.jsonl", "format": "text", "placeholders": {"name": "Ada"}},
}


def _recipes():
    for f in sorted((ROOT / "recipes").glob("*.yaml")):
        try:
            yield f.stem, api.load(f)
        except Exception:   # a base file (base_lora.yaml) is not a whole recipe
            continue


def test_the_load_step_rebuilds_exactly_the_recipes_source(tmp_path):
    """run() reads the Source from the declared params and files alone: it is the recipe's, key for key."""
    import yaml
    checked = 0
    doc = yaml.safe_load((ROOT / "recipes" / "poetry_lora.yaml").read_text())
    (tmp_path / "rows.jsonl").write_text('{"text": "a"}\n')
    for label, src in SOURCES.items():
        d = {k: v for k, v in doc.items() if k not in ("extends", "sources", "filters", "mix", "groups")}
        d.update(model={"base": "builtin:tiny"}, sources={"s": src})
        (tmp_path / "r.yaml").write_text(yaml.safe_dump(d, allow_unicode=True))
        recipes = [(label, api.load(tmp_path / "r.yaml"))] + (list(_recipes()) if not checked else [])
        for name, r in recipes:
            for step in compile_recipe(r).steps:
                if step.kind == "load":
                    assert _source(dict(step.params["source"]), step.files) == r.sources[step.source], \
                        f"{name}: {step.name}"
                    checked += 1
    assert checked > 20


def test_a_source_folder_is_hashed_as_it_is_read_through_symlinks(tmp_path):
    """The fingerprint enumerates a folder with the reader's walk (issue 26): a file read through a
    symlinked subfolder is hashed, so changing it makes the load step stale; a symlink loop is walked once
    by both; a hidden file, which the reader skips, changes nothing."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "data" / ".cache").mkdir(parents=True)
    (tmp_path / "data" / "a.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    (tmp_path / "elsewhere" / "b.jsonl").write_text('{"text": "c"}\n')
    (tmp_path / "data" / ".cache" / "x.jsonl").write_text('{"text": "hidden"}\n')
    (tmp_path / "data" / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "data" / "loop").symlink_to(tmp_path / "data", target_is_directory=True)
    path = tmp_path / "r.yaml"
    path.write_text("recipe: linked\nmodel: {base: builtin:tiny}\nsources: {s: {path: data, format: text}}\n")
    cache = str(tmp_path / "cache")

    def load_step():
        return next(s for s in api.plan(path, cache_dir=cache).steps if s.name == "load.s")

    _, _, records, _ = api.run(path, cache_dir=cache, output=str(tmp_path / "run"), only="load.s")
    stats = next(r for r in records if r.name == "load.s").stats
    assert stats["rows_out"] == 3 and stats["dropped"] == {"quarantine:symlink_loop": 1}   # c came through `more`
    assert load_step().status == "cached"
    (tmp_path / "data" / ".cache" / "x.jsonl").write_text('{"text": "still hidden"}\n')
    assert load_step().status == "cached"                        # not read, not hashed
    (tmp_path / "elsewhere" / "b.jsonl").write_text('{"text": "changed"}\n')
    step = load_step()
    assert step.status == "stale" and step.why == ["file data changed"]
