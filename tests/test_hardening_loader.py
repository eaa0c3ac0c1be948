"""Issue 26, the recipe-loading layer: every file the loader reads is looked at before it is read (D9),
an `extends` graph is read once per file and bounded (D8), `--set extends` is applied (D25), explicit
meta tasks may not repeat a name or a file (D14), and a recipe name from the environment is never shown
(D6, the name part). Each family has a property test besides the reproduction."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
import tracemalloc

import pytest

from helpers.cli import LINE, MINIMAL, cli, user_error, write
from helpers.data import REPO
from runner import api
from runner.recipe.document import MAX_BYTES, display
from runner.recipe.load import load_document

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FEW = settings(max_examples=25, deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
EXPLICIT = REPO / "recipes" / "fomaml_explicit.yaml"


def _validate_in_a_process(*argv: str, cwd=REPO, timeout: float = 60) -> subprocess.CompletedProcess:
    """A separate process with a timeout and 4 GB of address space: without the fixes these hang (a FIFO, a
    diamond) or read /dev/zero until memory runs out."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    return subprocess.run([sys.executable, "-m", "runner", "validate", *argv], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=limit)


def _in_process(*argv: str) -> tuple[int, str]:
    import contextlib
    import io

    from runner.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", *argv])
    return code, err.getvalue()


# --- D9: look before reading -------------------------------------------------------------------------

def test_dev_zero_as_a_recipe_is_one_line_not_a_memory_error():
    res = _validate_in_a_process("/dev/zero", timeout=60)
    assert res.returncode == 2 and res.stderr == "error: /dev/zero is not a regular file; a recipe is a .yaml file\n"


def test_a_fifo_as_a_recipe_is_refused_without_waiting_for_a_writer(tmp_path):
    os.mkfifo(tmp_path / "r.yaml")
    res = _validate_in_a_process(str(tmp_path / "r.yaml"), cwd=tmp_path, timeout=30)
    assert res.returncode == 2 and res.stderr == "error: r.yaml is not a regular file; a recipe is a .yaml file\n"


def test_an_oversized_recipe_is_refused_without_reading_it(tmp_path, capsys):
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:       # sparse: 60 MB on paper, nothing on disk
        f.truncate(60_000_000)
    tracemalloc.start()
    try:
        lines = user_error(capsys, "validate", str(big))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert lines == [f"{display(big)}:1:1: the recipe is 60,000,000 bytes or more; the limit is {MAX_BYTES:,} "
                     "(a recipe names its data, it does not hold it)"]
    assert peak < 5_000_000, peak     # reading it first held 60 MB of bytes and 60 MB of text


def _not_a_recipe(tmp_path, kind: str):
    """A path of the given kind that no recipe reader may read whole, and the words its refusal uses."""
    p = tmp_path / f"{kind}.yaml"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "device":
        p.symlink_to("/dev/zero")
    elif kind == "folder":
        p.mkdir()
    else:
        with open(p, "wb") as f:
            f.truncate(MAX_BYTES + 1)
    return p


@FEW
@given(kind=st.sampled_from(["fifo", "device", "folder", "oversized"]), depth=st.integers(0, 3),
       via_set=st.booleans())
def test_no_file_the_loader_reads_is_read_whole_or_waited_on(tmp_path_factory, kind, depth, via_set):
    """Wherever the bad file sits (the recipe, a base `depth` files down, a base named by --set extends),
    validate answers at once with exit 2, one line per problem and no traceback."""
    tmp = tmp_path_factory.mktemp("d9")
    bad = _not_a_recipe(tmp, kind)
    top = bad
    if depth or via_set:
        for i in range(depth, 0, -1):
            write(tmp / f"r{i}.yaml", f"extends: {'r%d.yaml' % (i + 1) if i < depth else bad.name}\n")
        top = write(tmp / "r0.yaml", "recipe: r\n" + ("" if via_set or not depth else "extends: r1.yaml\n") + MINIMAL)
    argv = [str(top)] + (["--set", f"extends={'r1.yaml' if depth else bad.name}"] if via_set else [])
    start = time.perf_counter()
    if kind in ("fifo", "device"):   # in a process of its own: waiting for a writer, or reading /dev/zero
        res = _validate_in_a_process(*argv, cwd=tmp, timeout=30)
        code, err = res.returncode, res.stderr
    else:
        code, err = _in_process(*argv)
    assert time.perf_counter() - start < 20
    assert code == 2 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) <= 2 and lines[0], lines
    assert any(w in lines[0] for w in ("not a regular file", "a folder", "bytes or more")), lines



# --- D8: an extends graph is read once per file, and bounded -------------------------------------------

def _diamond(tmp_path, depth: int):
    write(tmp_path / "d0a.yaml", "recipe: diamond\n" + MINIMAL)
    write(tmp_path / "d0b.yaml", "seed: 7\n")
    for i in range(1, depth + 1):
        for s in "ab":
            write(tmp_path / f"d{i}{s}.yaml", f"extends: [d{i - 1}a.yaml, d{i - 1}b.yaml]\n")
    return tmp_path / f"d{depth}a.yaml"


def test_an_extends_diamond_24_deep_validates_in_about_a_second(tmp_path):
    top = _diamond(tmp_path, 24)     # 2^24 paths through 49 files: hours when every path re-read its files
    start = time.perf_counter()
    res = _validate_in_a_process(top.name, cwd=tmp_path, timeout=60)
    assert res.returncode == 0 and res.stdout.startswith("ok: d24a.yaml (diamond: 1 source"), res.stderr
    assert time.perf_counter() - start < 10   # a process start and one load; ~1 s here
    start = time.perf_counter()
    assert api.load(top).seed == 7
    assert time.perf_counter() - start < 2


def test_an_extends_graph_reaching_more_than_256_files_is_one_error(tmp_path, capsys):
    for i in range(300):
        write(tmp_path / f"b{i}.yaml", f"seed: {i}\n")
    r = write(tmp_path / "r.yaml", "recipe: wide\nextends: [" + ", ".join(f"b{i}.yaml" for i in range(300)) + "]\n"
              + MINIMAL)
    lines = user_error(capsys, "validate", str(r))
    assert lines == [f"{display(r)}:2:{11 + sum(len(f'b{i}.yaml, ') for i in range(255))}: `extends` reaches more "
                     f"than 256 files from {display(r)}; the limit is 256: merge some bases into one"], lines


def test_256_files_in_an_extends_graph_load(tmp_path):
    for i in range(255):
        write(tmp_path / f"b{i}.yaml", f"seed: {i}\n")
    r = write(tmp_path / "r.yaml", "recipe: wide\nextends: [" + ", ".join(f"b{i}.yaml" for i in range(255)) + "]\n"
              + MINIMAL)
    assert api.load(r).seed == 254


def _reference(files: dict[int, tuple[list[int], dict]], i: int) -> dict:
    """What file i means, the slow obvious way: its bases merged in order, then itself (mappings merge,
    everything else replaces), every base re-read on every path."""
    def merge(b, o):
        if isinstance(b, dict) and isinstance(o, dict):
            return {**b, **{k: merge(b[k], v) if k in b else v for k, v in o.items()}}
        return o
    bases, own = files[i]
    out: dict = {}
    for b in bases:
        out = merge(out, _reference(files, b))
    return merge(out, copy.deepcopy(own))


@FEW
@given(data=st.data())
def test_a_shared_base_read_once_means_what_reading_it_on_every_path_means(tmp_path_factory, data):
    """Random acyclic extends graphs (files extend lower-numbered ones, shared bases everywhere, some in a
    subfolder so their paths are rebased): the memoized loader gives the naive recursion's document, and
    the position of every value is in the file it came from."""
    tmp = tmp_path_factory.mktemp("dag")
    (tmp / "sub").mkdir()
    n = data.draw(st.integers(2, 9))
    files: dict[int, tuple[list[int], dict]] = {}
    where = {i: ("sub/" if i % 3 == 1 else "") + f"f{i}.yaml" for i in range(n)}
    for i in range(n):
        bases = data.draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else []
        own = {"shared": i, f"k{i}": {"from": i}, "nested": {f"n{i % 3}": i}}
        files[i] = (bases, own)
        up = "../" if where[i].startswith("sub/") else ""
        ext = "extends: [" + ", ".join(up + where[b] for b in bases) + "]\n" if bases else ""
        body = "".join(f"{k}: {v}\n" if not isinstance(v, dict) else f"{k}: {{{', '.join(f'{a}: {b}' for a, b in v.items())}}}\n"
                       for k, v in own.items())
        write(tmp / where[i], ext + body)
    doc = load_document(tmp / where[n - 1])
    assert doc.data == _reference(files, n - 1)
    for key in doc.data:
        origin = doc.data[key] if key == "shared" else int(key[1:]) if key.startswith("k") else None
        if origin is not None:
            assert doc.where((key,)).file == display((tmp / where[origin]).resolve()), (key, doc.where((key,)))



# --- D25: --set extends ---------------------------------------------------------------------------------

def test_set_extends_to_a_missing_file_is_refused_at_the_override(tmp_path, capsys):
    r = write(tmp_path / "r.yaml", "recipe: r\n" + MINIMAL)
    lines = user_error(capsys, "validate", str(r), "--set", "extends=nonexistent.yaml")
    assert lines == [f"--set extends=nonexistent.yaml: `extends` base not found: nonexistent.yaml "
                     f"(looked for {display(tmp_path / 'nonexistent.yaml')})"]


def test_set_extends_replaces_the_files_bases_relative_to_the_recipe(tmp_path, monkeypatch):
    write(tmp_path / "base.yaml", "recipe: from_base\nseed: 1\n" + MINIMAL)
    write(tmp_path / "other.yaml", "recipe: from_other\nseed: 2\n" + MINIMAL)
    (tmp_path / "elsewhere").mkdir()
    r = write(tmp_path / "r.yaml", "extends: base.yaml\ntrain: {epochs: 3}\n")
    monkeypatch.chdir(tmp_path / "elsewhere")     # relative to the recipe file, not to where the command runs
    assert (api.load(r).name, api.load(r).seed) == ("from_base", 1)
    rec = api.load(r, ["extends=other.yaml"])
    assert (rec.name, rec.seed, rec.train.epochs) == ("from_other", 2, 3)
    rec = api.load(r, ["extends=[base.yaml, other.yaml]", "seed=9"])
    assert (rec.name, rec.seed) == ("from_other", 9)
    r2 = write(tmp_path / "r2.yaml", "recipe: own\nextends: base.yaml\n" + MINIMAL)
    assert api.load(r2).seed == 1 and api.load(r2, ["extends=[]"]).seed != 1    # [] extends nothing


def test_set_extends_cannot_make_a_cycle(tmp_path, capsys):
    r = write(tmp_path / "r.yaml", "recipe: r\n" + MINIMAL)
    lines = user_error(capsys, "validate", str(r), "--set", "extends=r.yaml")
    assert lines == [f"--set extends=r.yaml: `extends` cycle: {display(r)} -> {display(r)}"]



# --- D14: explicit meta tasks ------------------------------------------------------------------------------

def test_two_explicit_tasks_of_one_name_are_an_error_at_the_second(tmp_path, capsys):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "data").symlink_to(REPO / "data")
    write(tmp_path / "recipes" / "base_lora.yaml", (REPO / "recipes" / "base_lora.yaml").read_text(encoding="utf-8"))
    text = EXPLICIT.read_text(encoding="utf-8").replace("{name: math_3step,", "{name: math_2step,")
    r = write(tmp_path / "recipes" / "r.yaml", text)
    lines = user_error(capsys, "validate", str(r))
    line = [i for i, l in enumerate(text.splitlines(), 1) if "{name: math_2step" in l][1]
    col = text.splitlines()[line - 1].index("math_2step") + 1
    assert lines == [f"{display(r)}:{line}:{col}: meta.tasks[1].name: 'math_2step' is already the name of "
                     "meta.tasks[0]; task names must be unique: rename one"], lines


def test_a_file_listed_twice_in_a_part_of_a_task_is_an_error(capsys):
    f = "../data/meta_tasks/math_2step/support.parquet"
    lines = user_error(capsys, "validate", str(EXPLICIT), "--set", f"meta.tasks[0].support=[{f}, ./{f}]")
    assert lines == [f"--set meta.tasks[0].support=[{f}, ./{f}]: meta.tasks[0].support[1]: ./{f} is already "
                     "listed as meta.tasks[0].support[0]; its rows would count twice: remove one"]


@FEW
@given(names=st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=2, max_size=6),
       picks=st.lists(st.tuples(st.sampled_from(["support", "query"]), st.lists(st.integers(0, 2), min_size=1,
                                                                                  max_size=4)), max_size=6))
def test_every_repeated_task_name_and_file_is_reported_once_at_its_repeat(tmp_path_factory, names, picks):
    tmp = tmp_path_factory.mktemp("meta")
    files = [f"{REPO}/data/meta_tasks/math_{k}step/support.parquet" for k in (2, 3, 4)]
    tasks = []
    for i, name in enumerate(names):
        part, idx = picks[i] if i < len(picks) else ("support", [i % 3])
        task = {"name": name, "support": [files[0]], "query": [files[1]]}
        task[part] = [files[j] for j in idx]
        tasks.append(task)
    import yaml
    r = write(tmp / "r.yaml", yaml.safe_dump({"recipe": "m", "model": {"base": "builtin:tiny"},
                                              "meta": {"tasks": tasks}}, default_flow_style=None))
    from runner.errors import ValidationError
    try:
        api.load(r)
        messages = []
    except ValidationError as e:
        messages = [p.message for p in e.problems]
    dup_names = sum(1 for i, n in enumerate(names) if n in names[:i])
    dup_files = sum(1 for t in tasks for part in ("support", "query", "test")
                    for j, f in enumerate(t.get(part, [])) if f in t[part][:j])
    assert sum("task names must be unique" in m for m in messages) == dup_names, messages
    assert sum("would count twice" in m for m in messages) == dup_files, messages



# --- D6: a recipe name from the environment ----------------------------------------------------------------

@settings(FEW, max_examples=6)     # four commands each; the name is all that varies
@given(secret=st.from_regex(r"[a-z][a-z0-9_]{5,20}", fullmatch=True))
def test_a_recipe_name_from_the_environment_is_never_shown(tmp_path_factory, monkeypatch, capsys, secret):
    tmp = tmp_path_factory.mktemp("d6")
    monkeypatch.setenv("RNAME", secret)
    r = write(tmp / "r.yaml", "recipe: ${oc.env:RNAME}\n" + MINIMAL)
    assert api.load(r).name == secret      # the run uses it
    code, out, err = cli(capsys, "validate", str(r))
    assert code == 0 and out == "ok: r.yaml (***: 1 source, 1 stage)\n".replace("r.yaml", str(r)), out
    seen = out + err
    for fmt in ("text", "json", "mermaid"):
        code, out, err = cli(capsys, "plan", str(r), "--cache-dir", str(tmp / "cache"), "--format", fmt)
        assert code == 0
        seen += out + err
    assert secret not in seen and "***  (cache: " in seen, seen
