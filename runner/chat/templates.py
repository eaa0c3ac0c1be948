"""Chat templates: a conversation becomes token ids plus labels that say what is trained.

A conversation is rendered as a list of segments, each either prompt text (never trained
unless train_on="all") or one assistant answer: its content and the end-of-turn token
that closes it, but not the role header before it. Each segment is tokenized on its own,
so the label mask follows the segment boundaries exactly, and the answer is tokenized
just as it is at generation time, where the prompt ends with the assistant header and the
model starts a fresh token.

Templates:
  chatml     <|im_start|>role\\ncontent<|im_end|>\\n
  llama3     <|begin_of_text|><|start_header_id|>role<|end_header_id|>\\n\\ncontent<|eot_id|>
  alpaca     ### Instruction: / ### Response: sections; EOS ends an answer
  text       plain text, no role markers: turns joined by newlines, EOS ends the document
             (continued pretraining on raw text, with train_on="all")
  tokenizer  the tokenizer's own Jinja chat_template
  x.jinja    a Jinja chat template file
For Jinja templates (jinja.py) the answers are found with `{% generation %}` markers when the
template has them, else by rendering each conversation prefix: the text before an
assistant turn is the render of the turns before it plus the generation prompt.
"""
from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from typing import Any

from ..errors import RecipeError
from ..recipe.model import ROLES
from .jinja import TemplateBudget, eot_for_source, segments as jinja_segments, template_source
from .tokens import Segment, eos, special_tokens, token_id

IGNORE = -100  # the label value the loss skips

# Opening token of a role header, for the check that no header token is trained.
_HEADER_OPEN = {"chatml": "<|im_start|>", "llama3": "<|start_header_id|>"}
_ALPACA_HEADERS = ("### Instruction:", "### Response:", "### Observation:")


@dataclass(frozen=True)
class Rendered:
    input_ids: list[int]
    labels: list[int]   # IGNORE where the token is not trained
    truncated: bool     # the conversation was longer than max_length and was cut


def render(
    messages: list[dict[str, str]],
    tokenizer: Any,
    *,
    chat: str,
    system: str | None,
    train_on: str,
    max_length: int,
) -> Rendered:
    """Token ids and labels for one conversation, cut to max_length from the right."""
    if train_on not in ("assistant", "last", "all"):
        raise ValueError(f"train_on must be assistant, last or all, not {train_on!r}")
    segments = _segments(_with_system(messages, system), tokenizer, chat)
    last = max((k for _, k in segments if k is not None), default=None)

    def trained(answer: int | None) -> bool:
        if train_on == "all":
            return True
        return answer is not None and (train_on == "assistant" or answer == last)

    ids, labels = _encode(capped(_merge(segments), char_budget(tokenizer, max_length)), tokenizer, trained)
    return Rendered(ids[:max_length], labels[:max_length], truncated=len(ids) > max_length)


def render_prompt(
    messages: list[dict[str, str]], tokenizer: Any, *, chat: str, system: str | None
) -> list[int]:
    """Token ids of a conversation followed by the assistant header, for generation: the
    same tokens that precede an answer in training."""
    # Render an empty assistant answer and stop where it starts: the prompt is then cut
    # and tokenized exactly as in training.
    messages = [*_with_system(messages, system), {"role": "assistant", "content": ""}]
    segments = _segments(messages, tokenizer, chat)
    cut = max(i for i, (_, k) in enumerate(segments) if k is not None)
    ids, _ = _encode(segments[:cut], tokenizer, lambda answer: False)
    return ids


def end_of_turn_token(chat: str, tokenizer: Any) -> str:
    """The token that closes an assistant turn (and is trained with it)."""
    if chat == "chatml":
        return "<|im_end|>"
    if chat == "llama3":
        return "<|eot_id|>"
    if chat in ("alpaca", "text"):
        return eos(tokenizer, chat)
    return eot_for_source(tokenizer, template_source(chat, tokenizer))


def stop_token_ids(chat: str, tokenizer: Any) -> list[int]:
    """Token ids that end generation: the end-of-turn token, then EOS if different."""
    ids = [token_id(tokenizer.get_vocab(), end_of_turn_token(chat, tokenizer), chat)]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def check_rendered(
    examples: list[tuple[str, Rendered]],
    tokenizer: Any,
    *,
    chat: str,
    train_on: str = "assistant",
) -> None:
    """The render check run before any training: raise a RecipeError naming the example
    when the labels would teach the model the wrong thing or nothing at all.
    (train_on="all" trains role headers on purpose, so they are only checked otherwise.)"""
    check = RenderCheck(tokenizer, chat=chat, train_on=train_on)
    eot_rows = 0
    for ex_id, r in examples:
        check.example(ex_id, r)
        eot_rows += check.trains_eot(r)
    check.finish(len(examples), eot_rows)


class RenderCheck:
    """check_rendered in three parts, for a check that streams: the tokenizer and template once
    (here), `cheap(r)` on every row (set operations only), `example(id, r)` in full on a sample and on
    every row `cheap` flags, and `finish` with the number of rows that train the end-of-turn token
    (`cheap` says that too, from the same set)."""

    def __init__(self, tokenizer: Any, *, chat: str, train_on: str = "assistant") -> None:
        self.tokenizer, self.chat, self.train_on = tokenizer, chat, train_on
        self.vocab = vocab = tokenizer.get_vocab()
        self.eot = end_of_turn_token(chat, tokenizer)
        self.eot_id = token_id(vocab, self.eot, chat)
        for marker in (_HEADER_OPEN.get(chat), "<|begin_of_text|>" if chat == "llama3" else None):
            if marker:  # a template whose markers are not single tokens is the wrong template
                token_id(vocab, marker, chat)

        # Collators mask the loss wherever the pad id is, so the pad id must never be a token
        # we train. Without a pad token, trainers pad with EOS.
        self.pad_id, self.pad = tokenizer.pad_token_id, repr(tokenizer.pad_token)
        if self.pad_id is None:
            self.pad_id, self.pad = tokenizer.eos_token_id, f"(none, so EOS {tokenizer.eos_token!r})"
        if self.pad_id == self.eot_id:
            raise RecipeError(
                f"the tokenizer's pad token {self.pad} is the end-of-turn token {self.eot!r}: masking the "
                f"padding would mask every {self.eot!r} too, and the model would never learn to stop; "
                f"give the tokenizer a distinct pad token"
            )
        allowed = {self.eot_id, tokenizer.eos_token_id}
        self.markers = {vocab[t] for t in special_tokens(tokenizer) if t in vocab} - allowed

    def trains_eot(self, r: Rendered) -> bool:
        return self.eot_id in r.labels

    def cheap(self, r: Rendered) -> tuple[bool, bool]:
        """(ok, trains_eot(r)); ok is False when `example` would object for a reason other than a trained
        header: a trained label is the token itself, so the set of labels is the set of trained ids
        (plus IGNORE)."""
        trained = set(r.labels)
        trained.discard(IGNORE)
        ok = bool(trained) and self.pad_id not in trained and (
            self.train_on == "all" or trained.isdisjoint(self.markers))
        return ok, self.eot_id in trained

    def example(self, ex_id: str, r: Rendered) -> None:
        tokenizer, chat, pad = self.tokenizer, self.chat, self.pad
        trained = [i for i, label in enumerate(r.labels) if label != IGNORE]
        if not trained:
            if r.truncated:
                raise RecipeError(
                    f"example {ex_id!r}: nothing left to train after truncation to "
                    f"{len(r.input_ids)} tokens; raise template.max_length, or drop such rows before training with the filter {{kind: length, max_tokens: max_length}}"
                )
            raise RecipeError(f"example {ex_id!r}: no token is trained (no assistant turn?)")
        trained_ids = {r.input_ids[i] for i in trained}
        if self.pad_id in trained_ids:
            raise RecipeError(
                f"example {ex_id!r}: the pad token {pad} is trained, and "
                f"padding masks would hide it; give the tokenizer a distinct pad token"
            )
        if self.train_on == "all":
            return
        for i in trained:
            if r.input_ids[i] in self.markers:
                raise RecipeError(
                    f"example {ex_id!r}: token {i} {tokenizer.convert_ids_to_tokens(r.input_ids[i])!r} "
                    f"is a role marker or special token, but is trained"
                )
        header = _trained_header(r, tokenizer, chat, self.vocab)
        if header is not None:
            raise RecipeError(f"example {ex_id!r}: the role header {header!r} is trained")

    def finish(self, n_examples: int, eot_rows: int) -> None:
        if n_examples and not eot_rows:
            raise RecipeError(
                f"none of the {n_examples} checked examples trains the end-of-turn token "
                f"{self.eot!r}, so the model would never learn to stop; check template.chat"
            )


def highlight(rendered: Rendered, tokenizer: Any) -> list[tuple[str, bool]]:
    """The rendered text as (text, trained) runs, for `recipe inspect`."""
    runs: list[tuple[list[int], bool]] = []
    for token, label in zip(rendered.input_ids, rendered.labels):
        trained = label != IGNORE
        if runs and runs[-1][1] == trained:
            runs[-1][0].append(token)
        else:
            runs.append(([token], trained))
    # Decoding run by run keeps multi-byte characters whole: segments never split one,
    # and a run only ends at a segment boundary.
    return [(tokenizer.decode(ids, skip_special_tokens=False), t) for ids, t in runs]


# ---------------------------------------------------------------- built-in templates

def _with_system(messages: list[dict[str, str]], system: str | None) -> list[dict[str, str]]:
    """The recipe's system prompt goes first, unless the conversation brings its own."""
    if system and not any(m["role"] == "system" for m in messages):
        return [{"role": "system", "content": system}, *messages]
    return messages


def _segments(messages: list[dict[str, str]], tokenizer: Any, chat: str) -> list[Segment]:
    for m in messages:
        if m["role"] not in ROLES:
            raise ValueError(f"unknown role {m['role']!r}; expected one of {ROLES}")
    if chat == "chatml":
        return _chatml(messages)
    if chat == "llama3":
        return _llama3(messages)
    if chat == "alpaca":
        return _alpaca(messages, eos(tokenizer, chat))
    if chat == "text":
        return _text(messages, eos(tokenizer, chat))
    try:
        return jinja_segments(messages, tokenizer, template_source(chat, tokenizer))
    except TemplateBudget as e:
        raise TemplateBudget(f"template.chat {chat}: {e}") from None


def _chatml(messages) -> list[Segment]:
    out: list[Segment] = []
    answers = 0
    for m in messages:
        header = f"<|im_start|>{m['role']}\n"
        if m["role"] == "assistant":
            out += [(header, None), (m["content"] + "<|im_end|>", answers), ("\n", None)]
            answers += 1
        else:
            out.append((header + m["content"] + "<|im_end|>\n", None))
    return out


def _llama3(messages) -> list[Segment]:
    out: list[Segment] = [("<|begin_of_text|>", None)]
    answers = 0
    for m in messages:
        role = "ipython" if m["role"] == "tool" else m["role"]  # Llama 3's tool-result role
        header = f"<|start_header_id|>{role}<|end_header_id|>\n\n"
        if m["role"] == "assistant":
            out += [(header, None), (m["content"] + "<|eot_id|>", answers)]
            answers += 1
        else:
            out.append((header + m["content"] + "<|eot_id|>", None))
    return out


def _alpaca(messages, eos: str) -> list[Segment]:
    out: list[Segment] = []
    answers = 0
    for i, m in enumerate(messages):
        sep = "\n\n" if i else ""
        if m["role"] == "system":
            out.append((sep + m["content"], None))
        elif m["role"] == "user":
            out.append((f"{sep}### Instruction:\n{m['content']}", None))
        elif m["role"] == "tool":  # a tool result is input the model reads, not writes
            out.append((f"{sep}### Observation:\n{m['content']}", None))
        else:
            out += [(f"{sep}### Response:\n", None), (m["content"] + eos, answers)]
            answers += 1
    return out


def _text(messages, eos: str) -> list[Segment]:
    """Turns' contents joined by newlines, EOS after the last: a document, so the model learns
    where documents end. Only the last turn ends with EOS, so a multi-turn text reads on."""
    out: list[Segment] = []
    answers = 0
    for i, m in enumerate(messages):
        end = eos if i == len(messages) - 1 else "\n"
        if m["role"] == "assistant":
            out.append((m["content"] + end, answers))
            answers += 1
        else:
            out.append((m["content"] + end, None))
    return out


def _encode(segments: list[Segment], tokenizer: Any, trained) -> tuple[list[int], list[int]]:
    """Token ids and labels, one tokenizer call per merged segment."""
    ids: list[int] = []
    labels: list[int] = []
    for text, answer in _merge(segments):
        # verbose=False: no "longer than the model's maximum" warning; we truncate ourselves.
        piece = tokenizer.encode(text, add_special_tokens=False, verbose=False)
        ids += piece
        labels += piece if trained(answer) else [IGNORE] * len(piece)
    return ids, labels


# Only max_length tokens are kept, so the text past what they can cover is never tokenized: a 20 MB row
# would take ~100x its size in the tokenizer (ids, offsets, token strings) and a 50 MB one can make its
# regex engine panic. A token covers at most as many characters as the longest vocabulary entry has
# (byte-level vocabularies spell a byte per character, and a character is at least one byte), so the
# kept tokens lie within max_length x that; the budget is twice it plus a margin, so the cut is far
# past them and they come out the same (tests/test_render_limits.py checks that property). Text cut
# off would have made more than max_length tokens anyway, so `truncated` is unchanged too.
_KEEPS_CHARS = {"NFC", "NFKC", "NFD", "NFKD", "Lowercase", "Prepend"}   # normalizers that delete no character
_LONGEST: "weakref.WeakKeyDictionary[Any, int | None]" = weakref.WeakKeyDictionary()


def char_budget(tokenizer: Any, max_length: int) -> int | None:
    """Characters of a conversation's text worth tokenizing for max_length tokens; None: all of it
    (a tokenizer whose normalizer may delete characters, or a slow one we cannot inspect)."""
    try:
        longest = _LONGEST[tokenizer]
    except (KeyError, TypeError):
        longest = _longest_token(tokenizer)
        try:
            _LONGEST[tokenizer] = longest
        except TypeError:
            pass
    return None if longest is None else 2 * max_length * longest + 4096


def _longest_token(tokenizer: Any) -> int | None:
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None or not getattr(tokenizer, "is_fast", False):
        return None
    norm = json.loads(backend.normalizer.__getstate__()) if backend.normalizer is not None else None
    stack = [norm] if norm else []
    while stack:
        n = stack.pop()
        if n.get("type") == "Sequence":
            stack.extend(n["normalizers"])
        elif n.get("type") not in _KEEPS_CHARS and not (n.get("type") == "Replace" and n.get("content")):
            return None
    return max(map(len, tokenizer.get_vocab()), default=1)


def capped(segments: list[Segment], budget: int | None) -> list[Segment]:
    """The merged segments cut after `budget` characters in all (char_budget)."""
    if budget is None or sum(len(t) for t, _ in segments) <= budget:
        return segments
    out: list[Segment] = []
    for text, k in segments:
        if len(text) >= budget:
            out.append((text[:budget], k))
            break
        out.append((text, k))
        budget -= len(text)
    return out


def _merge(segments: list[Segment]) -> list[Segment]:
    """Join neighbouring pieces of the same kind, so a template's text is tokenized the
    same whichever way it was cut (chatml and its Jinja twin give identical ids)."""
    out: list[Segment] = []
    for text, k in segments:
        if not text:
            continue
        if out and out[-1][1] == k:
            out[-1] = (out[-1][0] + text, k)
        else:
            out.append((text, k))
    return out


def _trained_header(r: Rendered, tokenizer: Any, chat: str, vocab: dict[str, int]) -> str | None:
    """Text of a role header with a trained token in it, or None. A header runs from its
    opening token through the first token holding a newline (chatml `assistant\\n`,
    llama3 `...<|end_header_id|>\\n\\n`); alpaca headers are plain text."""
    if chat == "alpaca":
        for text, trained in highlight(r, tokenizer):
            hit = next((h for h in _ALPACA_HEADERS if trained and h in text), None)
            if hit:
                return hit
        return None
    opener = _HEADER_OPEN.get(chat)
    if opener is None:
        return None
    opener_id = vocab[opener]
    start, trained = None, False
    for i, token in enumerate(r.input_ids):
        if token == opener_id:
            start, trained = i, False
        elif start is not None:
            trained = trained or r.labels[i] != IGNORE
            if "\n" in tokenizer.decode([token]):
                if trained:
                    return tokenizer.decode(r.input_ids[start: i + 1])
                start = None
    return tokenizer.decode(r.input_ids[start:]) if start is not None and trained else None
