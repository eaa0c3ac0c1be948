"""Rendering many conversations at once, for the render step and the token-length filter: the same
segments as templates.render, every distinct segment text tokenized once, in one batch call.
Identical to render() row by row: tests/test_render_batch.py compares them on every shipped recipe and
every template."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from .templates import IGNORE, Rendered, _merge, _segments, _with_system

Encode = Callable[[list[str]], list[list[int]]]


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

    # Belt and braces for tokenizers we have not met: a probe must match encode() exactly.
    probe = ["<|im_start|>user\nHello, wörld 你好。\n\n", " x", "\n", ""]
    return batched if batched(probe) == one_by_one(probe) else one_by_one


def render_many(conversations: Sequence[list[dict]], tokenizer: Any, *, chat: str, system: str | None,
                train_on: str, max_length: int, encode: Encode | None = None) -> list[Rendered]:
    """`[templates.render(c, ...) for c in conversations]`, tokenized in one call."""
    if train_on not in ("assistant", "last", "all"):
        raise ValueError(f"train_on must be assistant, last or all, not {train_on!r}")
    encode = encode or encoder(tokenizer)
    convs = [_merge(_segments(_with_system(m, system), tokenizer, chat)) for m in conversations]
    index: dict[str, int] = {}
    for segs in convs:
        for text, _ in segs:
            index.setdefault(text, len(index))
    pieces = encode(list(index))
    out = []
    for segs in convs:
        last = max((k for _, k in segs if k is not None), default=None)
        ids: list[int] = []
        labels: list[int] = []
        for text, answer in segs:
            piece = pieces[index[text]]
            ids += piece
            # trained() of templates.render
            if train_on == "all" or (answer is not None and (train_on == "assistant" or answer == last)):
                labels += piece
            else:
                labels += [IGNORE] * len(piece)
        out.append(Rendered(ids[:max_length], labels[:max_length], truncated=len(ids) > max_length))
    return out
