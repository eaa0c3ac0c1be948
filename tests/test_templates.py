"""Chat templates and label masks, on real rows of the demo data and the tiny tokenizer."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from runner.builtin import tiny_path
from runner.errors import RecipeError
from runner.chat.templates import (
    IGNORE, Rendered, check_rendered, end_of_turn_token, highlight, render, render_prompt,
    stop_token_ids,
)

DATA = Path(__file__).resolve().parents[1] / "data"
SHAREGPT_ROLES = {"system": "system", "human": "user", "gpt": "assistant",
                  "function_call": "assistant", "observation": "tool"}
EOT = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>", "alpaca": "<|endoftext|>"}

# Plain chatml, no {% generation %} markers: assistant turns are found by prefixes.
CHATML_JINJA = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# chatml again, with markers whose whitespace control strips the template's own layout.
CHATML_MARKED_WS = """
{%- for m in messages %}
    {{- '<|im_start|>' + m['role'] + '\\n' }}
    {%- if m['role'] == 'assistant' %}
        {%- generation -%}
            {{ m['content'] + '<|im_end|>' }}
        {%- endgeneration -%}
        {{ '\\n' }}
    {%- else %}
        {{- m['content'] + '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}
"""


def _glaive(n: int) -> list[list[dict]]:
    rows = json.loads((DATA / "glaive_toolcall_en_demo.json").read_text())[:n]
    return [[{"role": SHAREGPT_ROLES[t["from"]], "content": t["value"]} for t in r["conversations"]]
            for r in rows]


def _alpaca_zh(n: int) -> list[list[dict]]:
    rows = json.loads((DATA / "alpaca_zh_demo.json").read_text())[:n]
    return [[{"role": "user", "content": (r["instruction"] + "\n" + r["input"]).strip()},
             {"role": "assistant", "content": r["output"]}] for r in rows]


@pytest.fixture(scope="module")
def tool_chat() -> list[dict]:
    """A multi-turn glaive conversation with a tool call and a tool result."""
    convo = next(c for c in _glaive(20) if any(m["role"] == "tool" for m in c))
    assert sum(m["role"] == "assistant" for m in convo) >= 3
    return convo


def _trained_texts(r: Rendered, tok) -> list[str]:
    return [text for text, trained in highlight(r, tok) if trained]


def _render(messages, tok, chat, train_on="assistant", system=None, max_length=4096):
    return render(messages, tok, chat=chat, system=system, train_on=train_on, max_length=max_length)


@pytest.mark.parametrize("chat", ["chatml", "llama3", "alpaca"])
def test_assistant_labels_are_exactly_the_answers(chat, tok, tool_chat):
    r = _render(tool_chat, tok, chat)
    answers = [m["content"] + EOT[chat] for m in tool_chat if m["role"] == "assistant"]
    assert _trained_texts(r, tok) == answers
    assert all(label in (IGNORE, token) for token, label in zip(r.input_ids, r.labels))
    trained = tok.decode([t for t, label in zip(r.input_ids, r.labels) if label != IGNORE])
    for marker in ("<|im_start|>", "<|start_header_id|>", "<|end_header_id|>", "assistant\n",
                   "### Response", "### Instruction", tool_chat[0]["content"]):
        assert marker not in trained
    check_rendered([("glaive-0", r)], tok, chat=chat)


@pytest.mark.parametrize("chat", ["chatml", "llama3", "alpaca"])
def test_last_trains_only_the_last_answer(chat, tok, tool_chat):
    r = _render(tool_chat, tok, chat, train_on="last")
    last = [m for m in tool_chat if m["role"] == "assistant"][-1]
    assert _trained_texts(r, tok) == [last["content"] + EOT[chat]]
    assert r.input_ids == _render(tool_chat, tok, chat).input_ids


def test_all_trains_every_token(tok, tool_chat):
    r = _render(tool_chat, tok, "chatml", train_on="all")
    assert r.labels == r.input_ids
    check_rendered([("x", r)], tok, chat="chatml", train_on="all")  # role markers are intended


def test_tool_turns(tok, tool_chat):
    tool = next(m["content"] for m in tool_chat if m["role"] == "tool")
    texts = {chat: highlight(_render(tool_chat, tok, chat), tok) for chat in EOT}
    assert "<|im_start|>tool\n" + tool + "<|im_end|>" in "".join(t for t, _ in texts["chatml"])
    assert "<|start_header_id|>ipython<|end_header_id|>\n\n" + tool in "".join(t for t, _ in texts["llama3"])
    assert "### Observation:\n" + tool in "".join(t for t, _ in texts["alpaca"])
    for chat, pieces in texts.items():  # a tool result is read, never trained
        assert not any(tool in text for text, trained in pieces if trained), chat


def test_chinese_rows(tok):
    for convo in _alpaca_zh(5):
        for chat in EOT:
            r = _render(convo, tok, chat)
            assert _trained_texts(r, tok) == [convo[1]["content"] + EOT[chat]]


def test_system_prompt_added_only_when_missing(tok, tool_chat):
    text = tok.decode(_render(tool_chat, tok, "chatml", system="你是助手。").input_ids)
    assert text.startswith("<|im_start|>system\n你是助手。<|im_end|>\n<|im_start|>user\n")
    own = [{"role": "system", "content": "Own."}, *tool_chat]
    text = tok.decode(_render(own, tok, "chatml", system="你是助手。").input_ids)
    assert text.startswith("<|im_start|>system\nOwn.<|im_end|>") and "你是助手" not in text
    assert tok.decode(_render(tool_chat, tok, "alpaca", system="Be brief.").input_ids).startswith(
        "Be brief.\n\n### Instruction:\n")


@pytest.mark.parametrize("template", ["tokenizer", "plain.jinja", "marked.jinja"])
def test_jinja_templates_match_builtin_chatml(template, tok, tool_chat, tmp_path):
    (tmp_path / "plain.jinja").write_text(CHATML_JINJA)
    (tmp_path / "marked.jinja").write_text(CHATML_MARKED_WS)
    chat = template if template == "tokenizer" else str(tmp_path / template)
    assert end_of_turn_token(chat, tok) == "<|im_end|>"
    assert stop_token_ids(chat, tok) == stop_token_ids("chatml", tok)
    for convo in [tool_chat, *_alpaca_zh(3)]:
        for train_on in ("assistant", "last", "all"):
            expected = _render(convo, tok, "chatml", train_on, system="Be kind.")
            assert _render(convo, tok, chat, train_on, system="Be kind.") == expected
        assert render_prompt(convo[:-1], tok, chat=chat, system=None) == \
            render_prompt(convo[:-1], tok, chat="chatml", system=None)


def test_prefix_unstable_template_is_refused(tok, tool_chat, tmp_path):
    path = tmp_path / "counting.jinja"  # the header changes as turns are added
    path.write_text("{{ messages | length }}" + CHATML_JINJA)
    with pytest.raises(RecipeError, match="generation"):
        _render(tool_chat, tok, str(path))


def test_unknown_template_and_missing_file(tok, tool_chat, tmp_path):
    with pytest.raises(RecipeError, match="unknown chat template"):
        _render(tool_chat, tok, "vicuna")
    with pytest.raises(RecipeError, match="cannot read chat template"):
        _render(tool_chat, tok, str(tmp_path / "nope.jinja"))


def test_truncation_keeps_the_left(tok, tool_chat):
    full = _render(tool_chat, tok, "chatml")
    cut = _render(tool_chat, tok, "chatml", max_length=50)
    assert not full.truncated and cut.truncated
    assert cut.input_ids == full.input_ids[:50] and cut.labels == full.labels[:50]


def test_render_prompt_ends_with_the_assistant_header(tok, tool_chat):
    prompt = tool_chat[:-1]
    for chat, header in [("chatml", "<|im_start|>assistant\n"),
                         ("llama3", "<|start_header_id|>assistant<|end_header_id|>\n\n"),
                         ("alpaca", "### Response:\n")]:
        ids = render_prompt(prompt, tok, chat=chat, system=None)
        assert tok.decode(ids).endswith(header)
        # The training render starts with exactly these tokens.
        assert _render(tool_chat, tok, chat).input_ids[: len(ids)] == ids


def test_stop_tokens(tok):
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>")}
    assert stop_token_ids("chatml", tok) == [ids["<|im_end|>"], ids["<|endoftext|>"]]
    assert stop_token_ids("llama3", tok) == [ids["<|eot_id|>"], ids["<|endoftext|>"]]
    assert stop_token_ids("alpaca", tok) == [ids["<|endoftext|>"]]


def test_highlight_covers_the_whole_text(tok, tool_chat):
    r = _render(tool_chat, tok, "llama3", system="S")
    pieces = highlight(r, tok)
    assert "".join(t for t, _ in pieces) == tok.decode(r.input_ids)
    assert [trained for _, trained in pieces] == [i % 2 == 1 for i in range(len(pieces))]


# ---------------------------------------------------------------- check_rendered failures

def _tiny_tokenizer(**kwargs):
    return AutoTokenizer.from_pretrained(tiny_path(), **kwargs)


@pytest.mark.parametrize("chat, pad", [("chatml", "<|im_end|>"), ("alpaca", "<|endoftext|>"),
                                       ("llama3", "<|eot_id|>")])
def test_check_pad_equal_to_end_of_turn(chat, pad, tool_chat):
    tok = _tiny_tokenizer(pad_token=pad)
    with pytest.raises(RecipeError, match="pad token"):
        check_rendered([("a", _render(tool_chat, tok, chat))], tok, chat=chat)


def test_check_pad_equal_to_eos_only_matters_when_eos_is_trained(tool_chat):
    tok = _tiny_tokenizer(pad_token="<|endoftext|>")  # e.g. Qwen2 base models
    check_rendered([("a", _render(tool_chat, tok, "chatml"))], tok, chat="chatml")
    convo = [*tool_chat[:-1], {"role": "assistant", "content": "done<|endoftext|>"}]
    with pytest.raises(RecipeError, match="example 'b'.*pad token"):
        check_rendered([("b", _render(convo, tok, "chatml"))], tok, chat="chatml")


def test_check_no_pad_token_means_padding_with_eos(tool_chat):
    tok = _tiny_tokenizer()
    tok.pad_token = None
    check_rendered([("a", _render(tool_chat, tok, "chatml"))], tok, chat="chatml")  # EOS untrained
    with pytest.raises(RecipeError, match="pad token .none, so EOS"):
        check_rendered([("a", _render(tool_chat, tok, "alpaca"))], tok, chat="alpaca")


def test_check_empty_mask_after_truncation(tok, tool_chat):
    short = _render(tool_chat, tok, "chatml", system="A long system prompt. " * 5, max_length=16)
    assert short.truncated
    with pytest.raises(RecipeError, match=r"example 'glaive-7'.*truncation to 16 tokens"):
        check_rendered([("ok", _render(tool_chat, tok, "chatml")), ("glaive-7", short)], tok, chat="chatml")


def test_check_no_assistant_turn(tok):
    r = _render([{"role": "user", "content": "hi"}], tok, "chatml")
    with pytest.raises(RecipeError, match="example 'u1': no token is trained"):
        check_rendered([("u1", r)], tok, chat="chatml")


def test_check_trained_role_marker(tok, tool_chat):
    good = _render(tool_chat, tok, "chatml")
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    labels = [t if t == im_start else label for t, label in zip(good.input_ids, good.labels)]
    bad = Rendered(good.input_ids, labels, False)
    with pytest.raises(RecipeError, match=r"example 'hand-made'.*<\|im_start\|>"):
        check_rendered([("hand-made", bad)], tok, chat="chatml")


def test_check_trained_role_header_text(tok, tool_chat):
    """`assistant\\n` after <|im_start|> is no special token, but is still a header."""
    good = _render(tool_chat, tok, "chatml")
    header = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
    at = next(i for i in range(len(good.input_ids)) if good.input_ids[i: i + len(header)] == header)
    labels = list(good.labels)
    labels[at + 1: at + len(header)] = header[1:]
    with pytest.raises(RecipeError, match=r"example 'hdr'.*role header '<\|im_start\|>assistant"):
        check_rendered([("hdr", Rendered(good.input_ids, labels, False))], tok, chat="chatml")


def test_check_alpaca_header_trained(tok):
    convo = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "### Response:\n2"}]
    with pytest.raises(RecipeError, match="role header '### Response:'"):
        check_rendered([("x", _render(convo, tok, "alpaca"))], tok, chat="alpaca")


def test_check_end_of_turn_never_trained(tok, tool_chat):
    good = _render(tool_chat, tok, "chatml")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    labels = [IGNORE if t == im_end else label for t, label in zip(good.input_ids, good.labels)]
    with pytest.raises(RecipeError, match="never learn to stop"):
        check_rendered([("a", Rendered(good.input_ids, labels, False))], tok, chat="chatml")


def test_check_template_tokens_missing_from_tokenizer(tok, tool_chat):
    """The llama3 template on a tokenizer that only knows chatml's tokens."""
    vocab = {t: i for i, t in enumerate(["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>", "a"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="a"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    chatml_only = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>",
                                          pad_token="<|pad|>")
    with pytest.raises(RecipeError, match=r"template 'llama3' needs the token '<\|eot_id\|>'"):
        check_rendered([("a", _render(tool_chat, tok, "llama3"))], chatml_only, chat="llama3")


# --- text: plain documents for continued pretraining --------------------------------------------------

def test_text_template_is_the_document_and_eos(tok):
    msgs = [{"role": "user", "content": "白日依山盡，黃河入海流。"},
            {"role": "assistant", "content": "欲窮千里目，更上一層樓。"}]
    r = render(msgs, tok, chat="text", system=None, train_on="all", max_length=256)
    assert tok.decode(r.input_ids) == "白日依山盡，黃河入海流。\n欲窮千里目，更上一層樓。<|endoftext|>"
    assert r.labels == r.input_ids                     # every token trained, EOS included
    check_rendered([("x", r)], tok, chat="text", train_on="all")
    assert end_of_turn_token("text", tok) == "<|endoftext|>" and stop_token_ids("text", tok) == [tok.eos_token_id]
    # generation continues the document after the first line; no role marker anywhere
    assert tok.decode(render_prompt(msgs[:1], tok, chat="text", system=None)) == "白日依山盡，黃河入海流。\n"
    # with assistant-only labels the answer and the closing EOS are trained, the first line is not
    a = render(msgs, tok, chat="text", system=None, train_on="assistant", max_length=256)
    trained = [i for i, y in zip(a.input_ids, a.labels) if y != IGNORE]
    assert tok.decode(trained) == "欲窮千里目，更上一層樓。<|endoftext|>"


def test_text_template_on_multi_turn_rows(tok):
    for msgs in _glaive(5):
        r = render(msgs, tok, chat="text", system="sys", train_on="all", max_length=4096)
        text = tok.decode(r.input_ids)
        assert text == "\n".join(m["content"] for m in [{"content": "sys"}, *msgs]) + "<|endoftext|>"
        assert "<|im_start|>" not in text and text.count("<|endoftext|>") == 1
