"""A fuzzer for the recipe front end: hypothesis mutates the shipped recipes (values of every type,
NaN/inf/huge/empty/unicode, deleted, renamed, added and duplicated keys, `--set` paths) and checks what
a user would see. `recipe validate` either accepts, or exits 2 with one `file:line:col: message` line per
problem (or `--set ...: message` for an override); never a traceback. Nothing is written anywhere, and
`plan` on an accepted recipe writes nothing either (it is pure; its cache root is the only place it may).

CI runs a bounded, derandomized number of examples (seconds); `make fuzz` runs many more with fresh
randomness: RECIPE_FUZZ_EXAMPLES=N overrides the count."""
from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")   # in the `test` extra; a bare install still runs the rest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.cli import main

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.name for p in (REPO / "recipes").glob("*.yaml"))
EXAMPLES = int(os.environ.get("RECIPE_FUZZ_EXAMPLES", "0"))
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.register_profile("fuzz", max_examples=EXAMPLES or 2000, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
PROFILE = "fuzz" if EXAMPLES else "ci"

POSITIONED = re.compile(r"^(?P<file>[^\n]+?):\d+:\d+: \S")
OVERRIDE = re.compile(r"^--set .*: \S")
SUMMARY = re.compile(r"^.+: [\d,]+ errors?; nothing was run$")

NASTY = [float("nan"), float("inf"), float("-inf"), 10 ** 30, -(10 ** 30), 2 ** 63, 1e308, -1, 0, 0.0, 1.5,
         "", " ", ".", "..", "x\n", "a\0b", "../../../etc/passwd", "/dev/null", "${oc.env:HOME}", "${nope}",
         "${oc.env:}", "${evaluate}", "{{ x", "{% if %}", "名字", "🤖" * 3, "\u202e", "\ud7ff", "~", "null",
         True, False, None, [], {}, [None], {"": 1}, {"kind": "length"}, ["x"] * 3, "1e-4", "0x10"]
SCALARS = st.one_of(st.sampled_from(NASTY), st.text(max_size=12), st.integers(), st.floats(),
                    st.booleans(), st.none())
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=8), SCALARS, max_size=3))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A copy of the repo's recipes/ beside a link to data/, so relative paths and `extends` resolve."""
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(REPO / "recipes", root / "recipes", ignore=shutil.ignore_patterns(".recipe"))
    (root / "data").symlink_to(REPO / "data")
    (root / "work").mkdir()
    (root / "cache").mkdir()
    return root


def _places(node, path=()):
    """Every (path, container, key) in a document."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield path + (k,), node, k
        yield from _places(v, path + (k,))


@st.composite
def mutated(draw) -> tuple[str, str, list[str]]:
    """-> (recipe file name, YAML text, --set arguments)."""
    name = draw(st.sampled_from(SHIPPED))
    data = yaml.safe_load((REPO / "recipes" / name).read_text(encoding="utf-8"))
    for _ in range(draw(st.integers(1, 4))):
        places = list(_places(data))
        if not places:
            break
        path, node, key = draw(st.sampled_from(places))
        op = draw(st.sampled_from(["set", "set", "set", "delete", "rename", "add"]))
        if op == "set":
            node[key] = copy.deepcopy(draw(VALUES))   # NASTY holds mutable values: never share one
        elif op == "delete":
            del node[key]
        elif op == "rename" and isinstance(node, dict):
            node[draw(st.text(min_size=1, max_size=10))] = node.pop(key)
        elif op == "add" and isinstance(node, dict):
            node[draw(st.sampled_from([str(key) + "s", "x", "", "extends", "kind"]))] = copy.deepcopy(draw(VALUES))
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    lines = text.splitlines(keepends=True)
    if lines and draw(st.booleans()):      # duplicate a line: a duplicated key, or broken indentation
        i = draw(st.integers(0, len(lines) - 1))
        lines.insert(i, lines[i])
    overrides = []
    for _ in range(draw(st.integers(0, 2))):
        places = [p for p, _, _ in _places(data)] or [("seed",)]
        path = draw(st.sampled_from(places))
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        key = draw(st.sampled_from([key, key + ".x", key + "[3]", "." + key, key.replace(".", ".."), "...", ""]))
        value = copy.deepcopy(draw(VALUES))
        raw = draw(st.sampled_from([yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip()
                                    .removesuffix("\n...").removesuffix("..."), str(value)]))
        overrides += ["--set", f"{key}={raw}" if draw(st.booleans()) or not raw else key]
    return name, "".join(lines), overrides


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
        for f in filenames:
            p = Path(dirpath) / f
            st_ = p.lstat()
            out[str(p.relative_to(root))] = (st_.st_size, st_.st_mtime_ns)
    return out


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _check_errors(err: str, file: Path) -> None:
    lines = err.strip().split("\n")   # not splitlines(): \x1e is no line break on a terminal
    assert lines and SUMMARY.match(lines[-1]), err
    for line in lines[:-1]:
        if line.startswith("... and "):
            continue
        m = POSITIONED.match(line)
        assert (m and Path(m["file"]).name.endswith(".yaml")) or OVERRIDE.match(line), \
            f"an error without file:line:col: {line!r}\n{err}"


@settings(settings.get_profile(PROFILE))
@given(case=mutated())
def test_validate_accepts_or_reports_every_problem_with_a_place(tree, case):
    name, text, overrides = case
    file = tree / "recipes" / f"fuzz_{name}"
    file.write_text(text, encoding="utf-8")
    before = _snapshot(tree)
    cwd = os.getcwd()
    os.chdir(tree / "work")
    try:
        code, out, err = _cli("validate", str(file), *overrides)
        assert code in (0, 2), (code, out, err)
        if code == 2:
            _check_errors(err, file)
        else:
            assert out.startswith("ok: "), out
            code, out, err = _cli("plan", str(file), "--cache-dir", str(tree / "cache"), *overrides)
            assert code == 0 or (code == 2 and "Traceback" not in err and err.strip()), (code, err)
    finally:
        os.chdir(cwd)
    after = _snapshot(tree)
    written = {p for p in set(after) - set(before) if not p.startswith("cache/")}
    changed = {p for p in set(before) & set(after) if before[p] != after[p] and not p.startswith("cache/")}
    assert not written and not changed, (written, changed)


@settings(settings.get_profile(PROFILE))
@given(value=VALUES, key=st.sampled_from(["seed", "train.epochs", "mix.tang", "split.eval", "train.micro_batch_size",
                                          "template.max_length", "recipe", "sources.tang.path", "filters[0].min_chars",
                                          "evaluate.generate.temperature", "size"]))
def test_a_single_override_never_crashes(tree, value, key):
    """Every value type at the keys where numbers matter most: NaN, inf and huge values included."""
    raw = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip().removesuffix("...").strip()
    code, out, err = _cli("validate", str(tree / "recipes" / "poetry_lora.yaml"), "--set", f"{key}={raw}")
    assert code in (0, 2), (code, err)
    if code == 2:
        _check_errors(err, tree / "recipes" / "poetry_lora.yaml")
    if isinstance(value, float) and not math.isfinite(value) and key not in ("recipe", "sources.tang.path"):
        assert code == 2 and "NaN and infinity are not allowed" in err
