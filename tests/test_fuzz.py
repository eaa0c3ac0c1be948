"""A fuzzer for the recipe front end: hypothesis mutates the shipped recipes (values of every type,
NaN/inf/huge/empty/unicode, deleted, renamed, added and duplicated keys, `--set` paths) and checks what
a user would see. `recipe validate` either accepts, or exits 2 with one `file:line:col: message` line per
problem (or `--set ...: message` for an override); never a traceback. Nothing is written anywhere, and
`plan` on an accepted recipe writes nothing either (it is pure; its cache root is the only place it may).

The same for data files and `fields` templates (the section at the end): a generated file read through
generated templates loads, is refused with a place, or is one RecipeError line; never a traceback.

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



# --- data files and templates (issue 26 item 2) ---------------------------------------------------------
# A generated data file (rows nested deep, integers of thousands of digits, long strings, nulls, floats
# past the double range) read through a `fields` source whose templates are generated too (loops, filters,
# slices, missing names, broken syntax). What a user may see: `validate` refuses a template with a place, or
# loading gives records and quarantine entries that account for every row, or one RecipeError line
# ("none of its rows could be used"). Never a traceback.
#
# Rows past the readers' bounds (nested deeper than MAX_DEPTH, an integer past Python's 4,300 digits; issue 26
# D10/D11) are generated in `make test` too: each is one invalid_json quarantine entry, its neighbours load.
# A loop that would not end (D23) is quarantined by the render budget (runner/data/jinja_budget.py): it costs
# a second or two a row, so only `make fuzz` generates it.
DEPTH_OK, DIGITS_OK = 1_200, 6_000      # past readers.MAX_DEPTH (500) and the 4,300-digit limit
DEPTH_FUZZ, DIGITS_FUZZ = 2_000, 20_000


def _nested(depth: int, leaf):
    v = leaf
    for i in range(depth):
        v = [v] if i % 2 else {"k": v}
    return v


@st.composite
def data_rows(draw) -> list:
    """JSON rows: mostly objects with the fields the templates name, some with nasty values."""
    deep, digits = (DEPTH_FUZZ, DIGITS_FUZZ) if EXAMPLES else (DEPTH_OK, DIGITS_OK)
    leaf = st.one_of(SCALARS.filter(lambda v: not isinstance(v, float) or math.isfinite(v)),
                     st.integers(1, digits).map(lambda n: 10 ** n - 1),
                     st.integers(0, 200_000).map(lambda n: "長" * n))
    value = st.one_of(leaf, st.lists(leaf, max_size=4), st.builds(_nested, st.integers(0, deep), leaf))
    text = st.text(min_size=1, max_size=20).filter(str.strip)
    usable = st.fixed_dictionaries({"q": text, "a": text}, optional={"xs": st.lists(value, max_size=3),
                                                                     "n": value, "deep": value})
    odd = st.fixed_dictionaries({}, optional={"q": value, "a": value, "xs": st.lists(value, max_size=3), "n": value})
    pick = st.integers(0, 9).flatmap(lambda k: usable if k < 6 else odd if k < 8 else value)   # mostly usable rows
    return draw(st.lists(pick, min_size=1, max_size=6))


TEMPLATE_PARTS = ["{{ q }}", "{{ a }}", "{{ n }}", "{{ deep }}", "{{ xs | join(', ') }}", "{{ xs | list }}",
                  "{{ q | tojson }}", "{{ deep | tojson }}", "{{ q[0] }}", "{{ q[:3] }}", "{{ q | length }}",
                  "{{ n * 2 }}", "{{ n / 0 }}", "{{ nope }}", "{% for x in xs %}[{{ x }}]{% endfor %}",
                  "{% for i in range(300) %}{{ i }}{% endfor %}",
                  "{% for i in range(200) %}{% for j in range(200) %}.{% endfor %}{% endfor %}",
                  "{% for x in q %}{{ loop.index }}{% endfor %}", "{% if n is none %}none{% endif %}",
                  "{{ ''.__class__ }}", "{{ 'x' * 100000 }}", "{{ 'x' * 10 ** 12 }}", "plain", ""]
if EXAMPLES:
    TEMPLATE_PARTS.append("{% for i in range(100000) %}{% for j in range(100000) %}.{% endfor %}{% endfor %}")
BROKEN = ["{{ q", "{% for %}", "{% endfor %}", "{{ }}"]


@st.composite
def data_case(draw) -> tuple[str, list, dict]:
    """-> (file name, rows, the `fields:` mapping): a usable field first, then anything (rarely broken)."""
    suffix = draw(st.sampled_from(["jsonl", "json"]))
    extra = st.sampled_from(TEMPLATE_PARTS)
    fields = {role: draw(st.sampled_from([first, "{{ q }} {{ a }}"])) + "".join(draw(st.lists(extra, max_size=2)))
              for role, first in (("user", "{{ q }}"), ("assistant", "{{ a }}"))}
    if draw(st.booleans()):
        fields["meta"] = {"m": draw(extra)}
    if draw(st.integers(0, 9)) == 9:     # now and then a template that does not parse
        role = draw(st.sampled_from(["user", "assistant"]))
        fields[role] += draw(st.sampled_from(BROKEN))
    return f"rows.{suffix}", draw(data_rows()), fields


def _write_rows(path: Path, rows: list) -> None:
    """The rows as a .jsonl or .json file, whatever their depth and size (the writer has no limits)."""
    import json
    import sys
    old, limit = sys.get_int_max_str_digits(), sys.getrecursionlimit()
    sys.set_int_max_str_digits(0)
    sys.setrecursionlimit(max(limit, 3 * DEPTH_FUZZ + 1000))
    try:
        if path.suffix == ".jsonl":
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        else:
            text = json.dumps(rows, ensure_ascii=False, indent=1)
    finally:
        sys.set_int_max_str_digits(old)
        sys.setrecursionlimit(limit)
    path.write_text(text, encoding="utf-8")


def _load_or_refuse(recipe_file: Path):
    """What a user gets from this recipe's source: ("refused", lines) from validate, ("unusable", message),
    or ("loaded", records, quarantine, stats)."""
    from runner import api
    from runner.data.formats import load_source
    from runner.errors import RecipeError, ValidationError
    try:
        r = api.load(recipe_file)
    except ValidationError as e:
        return ("refused", str(e))
    try:
        return ("loaded", *load_source("s", r.sources["s"], recipe_file.parent))
    except RecipeError as e:
        return ("unusable", str(e))


@settings(settings.get_profile(PROFILE), max_examples=EXAMPLES or 30)
@given(case=data_case())
def test_a_data_file_and_its_templates_load_or_are_refused_never_a_traceback(tmp_path_factory, case):
    name, rows, fields = case
    tmp = tmp_path_factory.mktemp("data")
    _write_rows(tmp / name, rows)
    r = tmp / "r.yaml"
    r.write_text(yaml.safe_dump({"recipe": "r", "model": {"base": "builtin:tiny"},
                                 "sources": {"s": {"path": name, "format": "fields", "fields": fields}}},
                                allow_unicode=True, sort_keys=False), encoding="utf-8")
    got = _load_or_refuse(r)
    if got[0] == "refused":
        lines = got[1].split("\n")
        assert SUMMARY.match(lines[-1]) and all(POSITIONED.match(l) for l in lines[:-1]), got[1]
    elif got[0] == "unusable":
        assert "\n" not in got[1].strip() and "none of its" in got[1], got[1]
    else:
        records, quarantine, stats = got[1:]
        assert stats["rows_in"] == len(rows) == len(records) + len(quarantine), (stats, len(records), quarantine)
        for q in quarantine:
            assert q["code"] and q["reason"] and "Traceback" not in q["reason"], q


def _nested_text(depth: int) -> str:
    """`{"k": [{"k": [... 1 ...]}]}` as text: json.dumps cannot write 100,000 levels."""
    opens = "".join('{"k": ' if i % 2 else "[" for i in range(depth))
    closes = "".join("}" if i % 2 else "]" for i in reversed(range(depth)))
    return opens + "1" + closes


@pytest.mark.parametrize("suffix", ["jsonl", "json"])
@pytest.mark.parametrize("finding,value,quarantined", [
    ("D10", _nested_text(400), False),         # inside readers.MAX_DEPTH: an ordinary row
    ("D10", _nested_text(501), True),
    ("D10", _nested_text(2_000), True),        # past json's own recursion limit
    ("D10", _nested_text(100_000), True),
    ("D11", "9" * 5_000, True),
    ("D11", "-" + "9" * 100_000, True),
])
def test_a_deep_or_huge_row_is_one_invalid_json_entry_with_its_place(tmp_path, suffix, finding, value, quarantined):
    rows = ['{"q": "a", "a": "b"}', '{"q": "a", "a": "b", "x": %s}' % value, '{"q": "c", "a": "d"}']
    text = "\n".join(rows) + "\n" if suffix == "jsonl" else "[\n" + ",\n".join(rows) + "\n]\n"
    (tmp_path / f"rows.{suffix}").write_text(text, encoding="utf-8")
    r = tmp_path / "r.yaml"
    r.write_text(f"recipe: r\nmodel: {{base: builtin:tiny}}\nsources:\n  s:\n    path: rows.{suffix}\n"
                 "    format: fields\n    fields: {user: '{{ q }}', assistant: '{{ a }}'}\n", encoding="utf-8")
    got = _load_or_refuse(r)
    assert got[0] == "loaded", got
    records, quarantine = got[1], got[2]
    if not quarantined:
        assert len(records) == 3 and quarantine == [], quarantine
        return
    assert [m["messages"][0]["content"] for m in records] == ["a", "c"], records
    line = 2 if suffix == "jsonl" else 3       # the .json file opens with "[" on a line of its own
    got = [(q["code"], q["file"], q["line"]) for q in quarantine]
    assert got == [("invalid_json", f"rows.{suffix}", line)], quarantine
    assert ("nested deeper than 500" if finding == "D10" else "4300 digits") in quarantine[0]["reason"]
