"""Rendering has limits: only the text max_length tokens can cover is tokenized (a 30 MB row costs
megabytes, not gigabytes, and the kept tokens are the same as without the cap), and a template that
loops without end is stopped, naming the row and the template."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from helpers.data import raw_lines
from runner.builtin import load_tokenizer, tiny_path
from runner.chat import templates
from runner.chat.batch import render_many
from runner.chat.templates import char_budget, render

ROOT = Path(__file__).resolve().parent.parent
TOK = load_tokenizer("builtin:tiny")
GSM8K = raw_lines("gsm8k_train.jsonl")
CHATS = ["chatml", "text", "alpaca", str(tiny_path() / "chat_template.jinja")]


def test_budget_covers_max_length_of_the_longest_tokens():
    longest = max(map(len, TOK.get_vocab()))
    assert char_budget(TOK, 512) >= 2 * 512 * longest
    assert char_budget(TOK, 512) < char_budget(TOK, 1024)


# pieces that tokenize in unusual ways near a cut: long runs without a split point, CJK, digits, newlines
PIECE = st.lists(st.sampled_from(list("ab \n\t0123456789.,明月光é\u0301") + ["<|im_end|>", "  ", "aaaa"]),
                 min_size=1, max_size=60).map("".join)


@settings(max_examples=25, deadline=None)
@given(piece=PIECE, real=st.integers(0, len(GSM8K) - 1), max_length=st.integers(4, 40),
       chat=st.sampled_from(CHATS), train_on=st.sampled_from(["assistant", "last", "all"]))
def test_the_cap_keeps_exactly_the_tokens_of_the_whole_text(piece, real, max_length, chat, train_on):
    """A row longer than the budget renders to the same ids and labels with and without the cap."""
    budget = char_budget(TOK, max_length)
    row = GSM8K[real]
    body = (row["answer"] + piece) * (budget // (len(row["answer"]) + len(piece)) + 2)
    msgs = [{"role": "user", "content": row["question"] + piece}, {"role": "assistant", "content": body},
            {"role": "user", "content": "more?"}, {"role": "assistant", "content": "no"}]
    kw = dict(chat=chat, system=None, train_on=train_on, max_length=max_length)
    got, batched = render(msgs, TOK, **kw), render_many([msgs], TOK, **kw)[0]
    with pytest.MonkeyPatch.context() as m:
        m.setattr(templates, "capped", lambda segments, budget: segments)
        want = render(msgs, TOK, **kw)
    assert got == want == batched and got.truncated and len(got.input_ids) == max_length


MEASURE = """
import json, resource, sys
from runner.builtin import load_tokenizer, tiny_path
from runner.chat.batch import render_many
tok = load_tokenizer("builtin:tiny")
base = " ".join(json.loads(x)["answer"] for x in open(sys.argv[1], encoding="utf-8"))
text = (base * (30_000_000 // len(base) + 1))[:30_000_000]          # a 30 MB row of real text
msgs = [{"role": "user", "content": "Summarise this."}, {"role": "assistant", "content": text}]
out = {}
for chat in ("chatml", str(tiny_path() / "chat_template.jinja")):
    kw = dict(chat=chat, system=None, train_on="assistant", max_length=512)
    render_many([[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]], tok, **kw)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = render_many([msgs], tok, **kw)[0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out[chat[-5:]] = {"rise_mb": (peak - before) / 1024, "tokens": len(r.input_ids), "truncated": r.truncated}
print(json.dumps(out))
"""


def test_a_30_mb_row_renders_in_bounded_memory():
    """Measured in a child process (peak RSS, which sees the tokenizer's native memory too), with a
    built-in template and a Jinja one: the whole text took ~100x its size in the tokenizer (2.1 GB for
    20 MB); now the peak rises by a few copies of the row at most."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(ROOT / "data" / "gsm8k_train.jsonl")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for chat, got in json.loads(proc.stdout).items():
        assert got["tokens"] == 512 and got["truncated"], chat
        assert got["rise_mb"] < 250, (chat, got)


# --- a budget for rendering: nested loops stop, naming the row and the template ---------------------------

LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}"


def test_a_fields_template_that_loops_quarantines_its_row_in_bounded_time(tmp_path, monkeypatch):
    """The budget counts loop steps (deterministic): the looping row is quarantined as template_budget
    with its file and line; the other rows load; `validate` does not render, so it returns at once."""
    import time

    from runner import api
    from runner.data import jinja_budget
    from helpers.data import run_data_steps

    monkeypatch.setattr(jinja_budget, "LOOP_STEPS", 20_000)     # the same check, sooner

    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"q": f"q{i}", "a": f"a{i}", "big": i == 1}) + "\n"
                                                 for i in range(3)), encoding="utf-8")
    user = "{% if big %}" + LOOPS + "{% endif %}{{ q }}"
    (tmp_path / "r.yaml").write_text(f"""recipe: loops
model: {{base: builtin:tiny-random}}
sources:
  s:
    path: rows.jsonl
    format: fields
    fields: {{user: "{user}", assistant: "{{{{ a }}}}"}}
""", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "runner", "validate", str(tmp_path / "r.yaml")], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    t0 = time.perf_counter()
    done = run_data_steps(api.load(tmp_path / "r.yaml"), tmp_path / "run", kinds=("load",))
    assert time.perf_counter() - t0 < 60
    out, stats = done["load.s"]
    assert stats["rows_out"] == 2
    (q,) = [json.loads(x) for x in (out / "quarantine.jsonl").read_text(encoding="utf-8").splitlines()]
    assert q["code"] == "template_budget" and "fields.user" in q["reason"] and "loop steps" in q["reason"], q
    assert "rows.jsonl" in json.dumps(q) and q.get("line") == 2, q


def test_string_repetition_past_the_budget_is_refused():
    from runner.data.fields import Fields
    from runner.data.mapped import MapError
    from runner.recipe.model import Fields as F

    fields = Fields("s", F(system=None, user="{{ 'x' * n }}", assistant="{{ a }}", id=None, meta={}))
    assert fields({"n": 3, "a": "y"})[0][0]["content"] == "xxx"
    with pytest.raises(MapError, match="more than"):
        fields({"n": 10**12, "a": "y"})
    power = Fields("s", F(system=None, user="{{ 10 ** 10000000000 }}", assistant="{{ a }}", id=None, meta={}))
    with pytest.raises(MapError, match="exponent"):      # not computed, not even when compiling
        power({"a": "y"})


def test_a_chat_template_that_loops_fails_the_run_naming_row_and_template(tmp_path, monkeypatch):
    """transformers renders chat templates, so the budget there is time (the run fails: no verdict that
    depends on the machine's speed decides what is in the data)."""
    import time

    from runner.chat import jinja
    from runner.errors import RecipeError
    from runner.steps.render import RenderBatch
    from runner.recipe.model import Template

    monkeypatch.setattr(jinja, "RENDER_SECONDS", 1.0)
    path = tmp_path / "loops.jinja"
    path.write_text("{% for m in messages %}{% if 'LOOP' in m['content'] %}" + LOOPS + "{% endif %}"
                    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
                    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}", encoding="utf-8")
    rows = [{"id": f"r{i}", "source": "s", "messages": [{"role": "user", "content": "LOOP" if i == 2 else "hi"},
                                                        {"role": "assistant", "content": "yo"}]} for i in range(4)]
    t = Template(chat=str(path), system=None, train_on="assistant", max_length=64)
    batch = RenderBatch(TOK, t, str(path))
    t0 = time.perf_counter()
    with pytest.raises(RecipeError, match=r"row 'r2' of source 's': template.chat .*loops.jinja: rendering one "
                                          r"conversation took more than 1 s"):
        batch((0, [json.dumps(r) for r in rows]))
    assert time.perf_counter() - t0 < 30
    # and without the loop the same template renders
    assert batch((0, [json.dumps(r) for r in rows[:2]]))[1]["rows"] == 2

