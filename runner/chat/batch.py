"""Rendering many conversations at once, for the render step and the token-length filter: the same
segments as templates.render, every distinct segment text tokenized once, in one batch call; where the
tokenizer allows it (encoder), every distinct line once, many lines to one backend input.
Identical to render() row by row: tests/test_render_batch.py compares them on every shipped recipe and
every template, and the encoder with encode() on generated text."""
from __future__ import annotations

import json
import re
from itertools import islice
from typing import Any, Callable, Sequence

from .jinja import TemplateBudget
from .templates import IGNORE, Rendered, _merge, _segments, _with_system, capped, char_budget

Encode = Callable[[list[str]], list[list[int]]]

# The backend costs a few microseconds per input besides its text: short texts (lines) are joined,
# this many to an input (much longer inputs get slower again).
GROUP = 64
# Split patterns (Qwen2's; Llama 3's reads up to 3 digits) under which no pretoken crosses a line
# start, a "\n" followed by a character that is not whitespace: the parts that can match a newline
# either end with it (`[\r\n]*`) or are whitespace only, and the lookahead `\s+(?!\S)` is tried only
# where `\s*[\r\n]+` failed, which it cannot on a run of whitespace that ends in "\n".
_LINE_SAFE = {r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
              r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"}
# Python's \S matches fewer characters than the tokenizer's (it calls \x1c-\x1f whitespace too), so it
# finds no cut the rule does not allow.
_LINE_START = re.compile(r"(?<=\n)(?=\S)")


def encoder(tokenizer: Any) -> Encode:
    """texts -> token ids, each exactly `tokenizer.encode(text, add_special_tokens=False)`."""
    def one_by_one(texts: list[str]) -> list[list[int]]:
        return [tokenizer.encode(t, add_special_tokens=False, verbose=False) for t in texts]

    backend = getattr(tokenizer, "_tokenizer", None)
    if not getattr(tokenizer, "is_fast", False) or backend is None:
        return one_by_one
    # A fast tokenizer's encode() is one backend call with truncation and padding switched off and
    # special tokens split or not as split_special_tokens says: with the same settings a batch call
    # gives the same ids. A backend we cannot put in that state gets encode() after all.
    tokenizer.encode("", add_special_tokens=False)      # switches the backend's truncation/padding off
    if backend.truncation is not None or backend.padding is not None:
        return one_by_one
    split = bool(getattr(tokenizer, "split_special_tokens", False))
    batch = getattr(backend, "encode_batch_fast", None) or backend.encode_batch   # _fast: no offsets

    def batched(texts: list[str]) -> list[list[int]]:
        backend.encode_special_tokens = split
        return [e.ids for e in batch(texts, add_special_tokens=False)]

    # Added tokens are cut out of the text before it is normalized and pretokenized, so a text holding
    # one is tokenized as the parts on either side of it, each on its own: many texts joined by such a
    # separator are one backend call. Only for tokens that take nothing from their neighbours.
    added = backend.get_added_tokens_decoder()
    plain = not any(t.lstrip or t.rstrip or t.single_word for t in added.values())
    seps = [] if split or not plain else list(islice(    # the last added tokens: often reserved ones
        ((t.content, i) for i, t in sorted(added.items(), reverse=True)
         if not t.normalized and not _overlaps(t.content, added.values())), 4))

    def joined(texts: list[str]) -> list[list[int]]:
        everything = "\0".join(texts)
        sep, sep_id = next(((s, i) for s, i in seps if s not in everything), (None, None))
        if sep is None or len(texts) < 2:
            return batched(texts)
        groups = [texts[i:i + GROUP] for i in range(0, len(texts), GROUP)]
        out: list[list[int]] = []
        for group, ids in zip(groups, batched([sep.join(g) for g in groups])):
            out += _cut_at(ids, sep_id, len(group)) or batched(group)
        return out

    whole = joined if seps else batched

    def by_lines(texts: list[str]) -> list[list[int]]:
        index: dict[str, int] = {}
        parts = [[index.setdefault(line, len(index)) for line in _LINE_START.split(t)] if "\n" in t
                 else [index.setdefault(t, len(index))] for t in texts]
        ids = whole(list(index))
        out = []
        for p in parts:
            if len(p) == 1:
                out.append(ids[p[0]])
            else:
                out.append([])
                for i in p:
                    out[-1] += ids[i]
        return out

    # Lines tokenize on their own where no pretoken crosses a line start and no added token holds a
    # newline or eats whitespace next to it: text that rows share (an instruction, the system prompt) is
    # then tokenized once per call.
    lines = plain and _line_safe(backend) and not any("\n" in t.content for t in added.values())
    encode = by_lines if lines else whole
    # Belt and braces for tokenizers we have not met: a probe must match encode() exactly.
    probe = ["<|im_start|>user\nHello, wörld 你好。\n\n", " x", "\n", "", "a\nb\n\n c\r\nd \n\te\nf",
             "\u0301\n\u0301x\n<|im_end|>\n<|im_start|>"]
    return encode if encode(probe) == one_by_one(probe) else one_by_one


def _overlaps(sep: str, added) -> bool:
    """Whether an added token could be found across an edge of `sep` and the text next to it (one that
    starts with sep and is longer, or that ends with a start of sep), so that sep would not cut there."""
    return any(t.content != sep and t.content.startswith(sep)
               or any(sep.startswith(t.content[k:]) for k in range(1, len(t.content))) for t in added)


def _cut_at(ids: list[int], sep: int, n: int) -> list[list[int]] | None:
    """ids of n texts joined by the separator token -> each text's ids; None if sep is not there
    exactly n - 1 times (a text that tokenizes to it)."""
    if ids.count(sep) != n - 1:
        return None
    out, start = [], 0
    for _ in range(n - 1):
        end = ids.index(sep, start)
        out.append(ids[start:end])
        start = end + 1
    out.append(ids[start:])
    return out


def _line_safe(backend: Any) -> bool:
    """Whether text cut at a line start (_LINE_START) tokenizes as its two sides on their own: no
    normalizer or NFC (a newline composes with nothing), a split by a _LINE_SAFE pattern, then bytes."""
    def state(part: Any) -> Any:
        return json.loads(part.__getstate__()) if part is not None else None
    norm, pre = state(backend.normalizer), state(backend.pre_tokenizer)
    if norm not in (None, {"type": "NFC"}) or not pre or pre.get("type") != "Sequence":
        return False
    steps = pre["pretokenizers"]
    return (len(steps) == 2 and steps[0].get("type") == "Split"
            and steps[0].get("pattern", {}).get("Regex") in _LINE_SAFE
            and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert")
            and steps[1].get("type") == "ByteLevel" and not steps[1].get("add_prefix_space")
            and not steps[1].get("use_regex"))


def render_many(conversations: Sequence[list[dict]], tokenizer: Any, *, chat: str, system: str | None,
                train_on: str, max_length: int, encode: Encode | None = None) -> list[Rendered]:
    """`[templates.render(c, ...) for c in conversations]`, tokenized in one call."""
    pieces, rows = render_pieces(conversations, tokenizer, chat=chat, system=system, train_on=train_on,
                                 max_length=max_length, encode=encode)
    return [assembled(pieces, row, max_length) for row in rows]


Row = list[tuple[int, bool]]   # (index into pieces, trained) in order: one rendered conversation


def render_pieces(conversations: Sequence[list[dict]], tokenizer: Any, *, chat: str, system: str | None,
                  train_on: str, max_length: int, encode: Encode | None = None
                  ) -> tuple[list[list[int]], list[Row]]:
    """render_many before its rows are put together: the token ids of every distinct segment text, and per
    row its segments as (piece, trained). A caller that writes rows as text formats each piece once."""
    if train_on not in ("assistant", "last", "all"):
        raise ValueError(f"train_on must be assistant, last or all, not {train_on!r}")
    encode = encode or encoder(tokenizer)
    budget = char_budget(tokenizer, max_length)
    convs = []
    for k, m in enumerate(conversations):
        try:
            convs.append(_merge(_segments(_with_system(m, system), tokenizer, chat)))
        except TemplateBudget as e:
            e.index = k        # which row: the caller knows its id
            raise
    # trained() of templates.render: the last answer of the whole conversation, also when it is cut off
    lasts = [max((k for _, k in segs if k is not None), default=None) for segs in convs]
    convs = [capped(segs, budget) for segs in convs]
    index: dict[str, int] = {}
    rows = [[(index.setdefault(text, len(index)),
              train_on == "all" or (answer is not None and (train_on == "assistant" or answer == last)))
             for text, answer in segs] for segs, last in zip(convs, lasts)]
    return encode(list(index)), rows


def assembled(pieces: list[list[int]], row: Row, max_length: int) -> Rendered:
    """One row of render_pieces as templates.render gives it: ids, labels, cut at max_length."""
    ids: list[int] = []
    labels: list[int] = []
    for i, trained in row:
        piece = pieces[i]
        ids += piece
        labels += piece if trained else [IGNORE] * len(piece)
    if len(ids) > max_length:
        return Rendered(ids[:max_length], labels[:max_length], truncated=True)
    return Rendered(ids, labels, truncated=False)
