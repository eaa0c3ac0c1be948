"""The file-enumeration family (issue 26, D1/D2): what a source's fingerprint hashes and what its loader reads
are listed by one walk. The property, on generated trees of folders, files and symlinks (loops to a parent or
to itself, links to a sibling folder, to a folder outside, to a file, dangling): listing ends; every file the
loader reads is read once and hashed; changing any of them changes the fingerprint."""
from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from runner.sources.local import Digests, digest
from runner.sources.readers import resolve

NAMES = st.sampled_from(["a", "b", "sub", "x.y", "deep"])
LINKS = st.sampled_from([".", "..", "../..", "../outside", "../a.jsonl", "nowhere", "sub", "../sub"])
NODE = st.recursive(
    st.one_of(st.tuples(st.just("file"), st.sampled_from([".jsonl", ".json", ".txt", ".parquet"])),
              st.tuples(st.just("link"), LINKS)),
    lambda inner: st.tuples(st.just("dir"), st.dictionaries(NAMES, inner, max_size=4)), max_leaves=12)
TREE = st.dictionaries(NAMES, NODE, min_size=1, max_size=5)


def _build(folder: Path, tree: dict, counter: list[int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (kind, what) in tree.items():
        p = folder / name
        if kind == "dir":
            _build(p, what, counter)
        elif kind == "file":
            counter[0] += 1
            p.with_suffix(what).write_text(f'{{"n": {counter[0]}}}\n')
        else:
            p.symlink_to(what)


@settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
@given(tree=TREE, spec=st.sampled_from(["data", "data/**/*.jsonl", "data/*", "data/**/*"]))
def test_the_loader_reads_each_file_once_and_the_fingerprint_hashes_what_it_reads(tmp_path_factory, tree, spec):
    # one level below a folder of its own: `../..` from data/ must not reach the session's temp folder, where
    # every earlier test's files (caches, Ray's session folders) would make the walk as slow as that folder is big
    base = tmp_path_factory.mktemp("tree") / "root"
    base.mkdir()
    (base / "outside").mkdir()
    (base / "outside" / "o.jsonl").write_text('{"o": 1}\n')
    _build(base / "data", tree, [0])
    read = [p for p in resolve(spec, base) if p.is_file()]
    real = [os.path.realpath(p) for p in read]
    assert len(real) == len(set(real)), "a file reached twice through symlinks is read once"
    before = digest(spec, base, Digests())
    assert digest(spec, base, Digests()) == before
    for p in read:
        old = Path(p).read_bytes()
        Path(p).write_bytes(old + b'{"changed": true}\n')
        assert digest(spec, base, Digests()) != before, f"{p} is read but its change is not seen"
        Path(p).write_bytes(old)
    assert digest(spec, base, Digests()) == before
