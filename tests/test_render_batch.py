"""Batched rendering (runner.chat.batch) gives exactly the input_ids/labels of rendering row by row
(templates.render) on real rows of every shipped recipe's sources, with every template; and the render
step writes the same bytes whatever the number of worker processes, with the render check streaming."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
from tokenizers import AddedToken, Tokenizer
from transformers import PreTrainedTokenizerFast

from runner import api
from runner.builtin import load_tokenizer, tiny_path
from runner.chat import chat_name
from runner.chat.batch import _cut_at, _line_safe, _overlaps, encoder, render_many
from runner.chat.templates import RenderCheck, render
from runner.data.formats import load_source
from runner.errors import RecipeError
from runner.recipe import model
from runner.steps import render as render_step

from helpers.data import record, recipe as make_recipe, run_data_steps

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [p for p in sorted((ROOT / "recipes").glob("*.yaml")) if p.name != "base_lora.yaml"]
# Prefix-located Jinja chatml (no {% generation %} markers): the slow path of chat/jinja.py (_by_prefix).
PREFIX_JINJA = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _templates(tmp: Path) -> list[str]:
    (tmp / "prefix.jinja").write_text(PREFIX_JINJA, encoding="utf-8")
    return [*model.CHAT_TEMPLATES, str(tiny_path() / "chat_template.jinja"), str(tmp / "prefix.jinja")]


def _shipped_sources() -> dict[str, tuple]:
    """Every distinct (path, format) source of the shipped recipes -> (recipe, source name)."""
    out: dict[str, tuple] = {}
    for path in SHIPPED:
        r = api.load(path, ["model.base=builtin:tiny"])
        for name, src in r.sources.items():
            if src.path is None:         # a hub dataset: not readable offline
                continue
            out.setdefault(f"{Path(src.path).name}:{src.format}", (r, name))
    return out


SOURCES = _shipped_sources()


def test_every_shipped_recipe_contributes_sources():
    assert len(SHIPPED) >= 4 and len(SOURCES) >= 4, (SHIPPED, sorted(SOURCES))


@pytest.mark.parametrize("key", sorted(SOURCES))
def test_batch_equals_row_by_row_on_shipped_data(key, tok, tmp_path):
    r, name = SOURCES[key]
    records, _, _ = load_source(name, r.sources[name], r.file.parent)
    convs = [rec["messages"] for rec in records[:240]]
    assert len(convs) >= 90
    encode = encoder(tok)
    for i, chat in enumerate([chat_name(r.template.chat, r.file.parent), *_templates(tmp_path)]):
        jinja = chat == "tokenizer" or chat.endswith(".jinja")
        rows = convs[:60] if jinja else convs          # Jinja templates render every prefix: slow
        train_on = ("assistant", "last", "all")[i % 3]
        for system, max_length in ((r.template.system, r.template.max_length), ("You are terse.", 48)):
            kw = dict(chat=chat, system=system, train_on=train_on, max_length=max_length)
            want = [render(m, tok, **kw) for m in rows]
            got = render_many(rows, tok, encode=encode, **kw)
            assert got == want, (key, chat, train_on)
            assert max_length != 48 or any(w.truncated for w in want)     # truncation exercised


@pytest.mark.parametrize("train_on", ["assistant", "last", "all"])
def test_the_render_step_writes_json_dumps_of_each_rendered_row(tok, train_on):
    """RenderBatch formats each token piece once and joins the texts; the lines must be json.dumps of the
    row's render(), truncated rows (max_length 48) and a one-character answer included, on real rows."""
    r, name = SOURCES[sorted(SOURCES)[0]]
    records, _, _ = load_source(name, r.sources[name], r.file.parent)
    records = records[:200] + [{**records[0], "id": "empty", "messages": [{"role": "user", "content": "q"},
                                                                          {"role": "assistant", "content": "."}]}]
    for max_length in (48, 4096):
        t = model.Template(**{**r.template.__dict__, "train_on": train_on, "max_length": max_length,
                              "system": "You are terse."})
        chat = chat_name(t.chat, r.file.parent)
        text, n, _ = render_step.RenderBatch(tok, t, chat)((0, [json.dumps(x) for x in records]))
        want = []
        for x in records:
            got = render(x["messages"], tok, chat=chat, system=t.system, train_on=train_on, max_length=max_length)
            want.append(json.dumps({"id": x["id"], "source": x["source"], "input_ids": got.input_ids,
                                    "labels": got.labels}, separators=(",", ":")) + "\n")
        assert text == "".join(want), (train_on, max_length)
        assert (n["truncated"] > 0) == (max_length == 48) and n["rows"] == len(records)


def test_encoder_falls_back_for_a_slow_tokenizer(tok):
    class Slow:
        is_fast = False

        def encode(self, text, add_special_tokens=False, verbose=False):
            return tok.encode(text, add_special_tokens=False)
    texts = ["<|im_start|>user\n你好<|im_end|>", "plain text", ""]
    assert encoder(Slow())(texts) == encoder(tok)(texts) == [tok.encode(t, add_special_tokens=False) for t in texts]


# ---------------------------------------------------------------- the encoder's shortcuts

def _variant(tok, **changes):
    """builtin:tiny's tokenizer with parts of its pipeline (normalizer, pre_tokenizer) replaced."""
    config = json.loads(tok._tokenizer.to_str())
    config.update(changes)
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(config)))


@pytest.fixture(scope="module")
def variants(tok):
    """Tokenizers the encoder treats differently: builtin:tiny (Qwen2's pipeline: NFC, then Qwen2's split
    pattern), Llama 3's (no normalizer, digits in threes), GPT-2's (byte-level pattern: no cuts at line
    starts) and one that splits special tokens (no separator)."""
    pre = json.loads(tok._tokenizer.to_str())["pre_tokenizer"]
    split = pre["pretokenizers"][0]
    llama3 = {**pre, "pretokenizers": [{**split, "pattern": {"Regex": split["pattern"]["Regex"].replace(
        r"\p{N}|", r"\p{N}{1,3}|")}}, pre["pretokenizers"][1]]}
    gpt2 = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    split_special = load_tokenizer("builtin:tiny")
    split_special.split_special_tokens = True
    return {"qwen2": tok, "llama3": _variant(tok, normalizer=None, pre_tokenizer=llama3),
            "gpt2": _variant(tok, pre_tokenizer=gpt2), "split_special": split_special}


# What tokenizers treat specially near a line start: runs of newlines and other whitespace (Unicode
# spaces, \x1c which Python calls whitespace), a combining mark, digits, contractions, CJK, punctuation,
# special tokens and a piece of one.
PIECES = [*"\n\n\r\t  \u3000\u00a0\x85\x1c\u0301aZé9'", "'s", "'LL", "1234", "你好", "。", "，", "!?",
          "\r\n", " \n", "\n ", "<|im_start|>", "<|im_end|>", "<|eot_id|>", "<|pad|>", "<|endoftext|>", "<|im_"]
TEXTS = st.lists(st.lists(st.sampled_from(PIECES), max_size=24).map("".join), min_size=1, max_size=8)


@pytest.mark.parametrize("name", ["qwen2", "llama3", "gpt2", "split_special"])
def test_encoder_equals_encode_on_any_text(variants, name):
    tok = variants[name]
    encode = encoder(tok)

    @settings(max_examples=300, deadline=None)
    @given(TEXTS)
    def same(texts):
        assert encode(texts) == [tok.encode(t, add_special_tokens=False) for t in texts]
    same()


def test_encoder_cuts_at_line_starts_only_where_no_pretoken_crosses_them(variants):
    assert [_line_safe(variants[n]._tokenizer) for n in ("qwen2", "llama3", "gpt2")] == [True, True, False]
    assert [encoder(v).__name__ for v in variants.values()] == ["by_lines", "by_lines", "joined", "by_lines"]
    for name, crossed in (("qwen2", False), ("llama3", False), ("gpt2", True)):   # GPT-2: \s+(?!\S) backs off
        tok = variants[name]
        ids = [tok.encode(t, add_special_tokens=False) for t in ("a\n\n", "b", "a\n\nb")]
        assert (ids[0] + ids[1] != ids[2]) == crossed, name


def test_encoder_without_a_free_separator(tok):
    """Texts holding every added token leave no separator to join them with: one backend input each."""
    every = "".join(t.content for t in tok._tokenizer.get_added_tokens_decoder().values())
    texts = [every + "\nx", "y\n" + every, "\n".join(["line"] * 200)]
    assert encoder(tok)(texts) == [tok.encode(t, add_special_tokens=False) for t in texts]
    assert _cut_at([5, 9, 6, 9], 9, 2) is None and _cut_at([5, 9, 9, 6], 9, 3) == [[5], [], [6]]
    assert not _overlaps("<|pad|>", [AddedToken("<|pad|>"), AddedToken("<|im_end|>"), AddedToken("|>")])
    assert all(_overlaps("<|pad|>", [AddedToken(t)]) for t in ("<|pad|>!", "x<|p", "><"))


# ---------------------------------------------------------------- the render step

BODY = """
sources:
  tang:
    path: {data}/tang_poems.jsonl
    format: fields
    limit: 1500
    fields:
      user: "{{ paragraphs[0] }}"
      assistant: "{{ paragraphs[1:] | join('\\n') }}"
  tools: {path: {data}/glaive_toolcall_en_demo.json, format: sharegpt, limit: 600}
filters: [{kind: length, max_tokens: max_length, sources: [tools]}]
mix: {tang: 0.7, tools: 0.3}
split: {strategy: random, eval: 0.1}
template: {chat: chatml, system: "你是一位精通唐詩的助手。", max_length: 512}
"""


def _reference(src: Path, tok, r) -> bytes:
    """The render step's file as it was written row by row before batching."""
    t = r.template
    lines = []
    for line in src.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        x = render(row["messages"], tok, chat="chatml", system=t.system, train_on=t.train_on,
                   max_length=t.max_length)
        lines.append(json.dumps({"id": row["id"], "source": row.get("source"), "input_ids": x.input_ids,
                                 "labels": x.labels}, separators=(",", ":")) + "\n")
    return "".join(lines).encode()


def test_render_step_bytes_same_for_any_workers_and_as_row_by_row(tmp_path, tok, monkeypatch):
    r = make_recipe(tmp_path, BODY)
    monkeypatch.setattr(render_step, "CHUNK", 97)          # many chunks, a short last one
    outs = {}
    for workers in ("1", "2"):
        monkeypatch.setenv("RECIPE_WORKERS", workers)
        monkeypatch.setattr(render_step, "_SMALL", 0 if workers == "2" else 10**9)
        done = run_data_steps(r, tmp_path / f"w{workers}", kinds=("load", "filter", "dedup", "split", "mix",
                                                                   "render"))
        out, stats = done["render.main"]
        outs[workers] = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*.jsonl"))}
        assert stats["rows"]["train"] > 500              # several chunks of 97
    assert outs["1"] == outs["2"] and len(outs["1"]) == 3        # train + 2 eval files
    mix = tmp_path / "w1" / "mix.main" / "train.jsonl"
    assert outs["1"][Path("train.jsonl")] == _reference(mix, tok, r)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("workers", [1, 2])
def test_render_check_names_a_bad_row_far_past_the_sample(tmp_path, tok, monkeypatch, workers):
    r = make_recipe(tmp_path, BODY)
    monkeypatch.setenv("RECIPE_WORKERS", str(workers))
    monkeypatch.setattr(render_step, "CHUNK", 100)
    monkeypatch.setattr(render_step, "_SMALL", 0)
    rows = [record(f"答案 {i}", f"r{i}") for i in range(3000)]
    rows[2345]["messages"] = [{"role": "user", "content": "only a question"}]    # nothing to train
    src = _write(tmp_path / "train.jsonl", rows)
    check = RenderCheck(tok, chat="chatml", train_on="assistant")
    with pytest.raises(RecipeError, match="example 'r2345': no token is trained"):
        render_step._render_file(src, tmp_path / "out.jsonl", tok, r.template, "chatml", check=check)


def test_render_check_counts_end_of_turn_over_all_rows(tmp_path, tok, monkeypatch):
    """A template that never trains its end-of-turn token is refused, counted over every row."""
    r = make_recipe(tmp_path, BODY)
    monkeypatch.setattr(render_step, "CHUNK", 100)
    src = _write(tmp_path / "train.jsonl", [record(f"答案 {i}", f"r{i}") for i in range(500)])
    check = RenderCheck(tok, chat="chatml", train_on="assistant")
    check.eot_id = tok.convert_tokens_to_ids("<|eot_id|>")      # as if chatml's <|im_end|> were not it
    with pytest.raises(RecipeError, match="none of the 500 checked examples trains the end-of-turn"):
        render_step._render_file(src, tmp_path / "out.jsonl", tok, r.template, "chatml", check=check)
    stats = render_step._render_file(src, tmp_path / "out.jsonl", tok, r.template, "chatml",
                                     check=RenderCheck(tok, chat="chatml", train_on="assistant"))
    assert stats["rows"] == 500 and stats["checked"] == render_step.SAMPLE_HEAD      # the head is the sample
