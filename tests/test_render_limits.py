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
