"""Jinja chat templates (the tokenizer's own, or a .jinja file) -> segments. The answers are found by
`{% generation %}` markers when the template has them, else by rendering each conversation prefix:
the text before an assistant turn is the render of the turns before it plus the generation prompt."""
from __future__ import annotations

import re
import signal
import threading
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from ..errors import RecipeError
from .tokens import Segment, eos, special_tokens

_START, _END = "\ue000", "\ue001"  # private-use characters: never in real data
_GENERATION = re.compile(r"\{%(-?)\s*(end)?generation\s*(-?)%\}")


# A chat template is rendered by transformers' own sandbox, whose loops we cannot count, so one
# conversation gets a time budget instead (a real template takes milliseconds). Past it the run fails
# (TemplateBudget, naming the row and the template) rather than quarantining the row: a verdict that
# depends on the machine's speed must not decide what is in the data.
RENDER_SECONDS = 30.0


class TemplateBudget(RecipeError):
    """A chat template took longer than RENDER_SECONDS for one conversation; `index` is its place in the batch."""
    index: int | None = None


class _Overtime(BaseException):   # a BaseException: neither Jinja nor transformers may catch it on the way
    pass


@contextmanager
def _time_budget(seconds: float) -> Iterator[None]:
    """Raise TemplateBudget from the body after `seconds`; a timer signal, so only in the main thread
    (elsewhere, e.g. an executor's worker thread, the body runs unbounded)."""
    if threading.current_thread() is not threading.main_thread() or signal.getitimer(signal.ITIMER_REAL)[0]:
        yield
        return

    def overtime(signum, frame):
        raise _Overtime()
    previous = signal.signal(signal.SIGALRM, overtime)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Overtime:
        raise TemplateBudget(f"rendering one conversation took more than {seconds:g} s "
                             "(a loop that does not end?)") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def segments(messages, tokenizer: Any, source: str) -> list[Segment]:
    with _time_budget(RENDER_SECONDS):
        if _GENERATION.search(source):
            return _marked(messages, tokenizer, source)
        return _by_prefix(messages, tokenizer, source)


def _marked(messages, tokenizer: Any, source: str) -> list[Segment]:
    """Answers are what the template wraps in {% generation %} ... {% endgeneration %}.
    Each tag becomes a sentinel character in the output; empty if-blocks carry the tag's
    whitespace control (`{%-`, `-%}`) so the text around it renders unchanged."""
    def sentinel(m: re.Match) -> str:
        char = _END if m.group(2) else _START
        strip_left = f"{{%{m.group(1)} if true %}}{{% endif %}}"    # {%- if true %}{% endif %}
        strip_right = f"{{% if true %}}{{% endif {m.group(3)}%}}"  # {% if true %}{% endif -%}
        return f"{strip_left}{{{{ '{char}' }}}}{strip_right}"

    text = _apply(tokenizer, _GENERATION.sub(sentinel, source), messages, generation_prompt=False)
    out: list[Segment] = []
    answer = 0
    for part in re.split(f"([{_START}{_END}])", text):
        if part == _START:
            out.append(("", answer))
        elif part == _END:
            answer += 1
            out.append(("", None))
        elif out:
            out[-1] = (out[-1][0] + part, out[-1][1])
        else:
            out.append((part, None))
    return out


def _by_prefix(messages, tokenizer: Any, source: str) -> list[Segment]:
    """Answer k spans from the end of render(turns before it + generation prompt) to the
    end of render(turns up to it), cut after its end-of-turn token: text the template
    adds after that (a newline) is prompt, as in the built-in templates."""
    full = _apply(tokenizer, source, messages, generation_prompt=False)
    eot = eot_for_source(tokenizer, source)
    out: list[Segment] = []
    pos = answers = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        if i == 0:
            raise RecipeError("a Jinja chat template cannot render a conversation that starts "
                              "with an assistant turn; add a user turn or use chatml")
        before = _apply(tokenizer, source, messages[:i], generation_prompt=True)
        upto = _apply(tokenizer, source, messages[: i + 1], generation_prompt=False)
        if not (full.startswith(before) and full.startswith(upto) and len(before) <= len(upto)):
            raise RecipeError(
                "the chat template renders earlier turns differently as the conversation "
                "grows, so assistant turns cannot be located; add {% generation %} markers "
                "to it or use chatml/llama3/alpaca"
            )
        start, end = len(before), len(upto)
        cut = full.rfind(eot, start, end)
        if cut >= 0:
            end = cut + len(eot)
        out += [(full[pos:start], None), (full[start:end], answers)]
        answers += 1
        pos = end
    out.append((full[pos:], None))
    return out


def eot_for_source(tokenizer: Any, source: str) -> str:
    """A Jinja template's end-of-turn token: the first special token after the assistant's
    text in a probe conversation; templates that close a turn with plain text get EOS."""
    text = _apply(tokenizer, source, [
        {"role": "user", "content": "\ue002"}, {"role": "assistant", "content": "\ue003"},
    ], generation_prompt=False)
    after = text[text.rindex("\ue003") + 1:] if "\ue003" in text else ""
    found = [(after.find(t), t) for t in special_tokens(tokenizer) if t in after]
    return min(found)[1] if found else eos(tokenizer, "tokenizer")


def template_source(chat: str, tokenizer: Any) -> str:
    if chat == "tokenizer":
        source = tokenizer.chat_template
        if isinstance(source, dict):  # several named templates: the default one is for chat
            source = source.get("default")
        if not source:
            raise RecipeError("template.chat is `tokenizer`, but the tokenizer has no chat "
                              "template; use chatml, llama3, alpaca or a .jinja file")
        return source
    if chat.endswith(".jinja"):
        return _read_template(str(Path(chat).resolve()))
    raise RecipeError(f"unknown chat template {chat!r}; use chatml, llama3, alpaca, "
                      f"tokenizer or a path to a .jinja file")


@lru_cache(maxsize=16)
def _read_template(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise RecipeError(f"cannot read chat template {path}: {e.strerror}") from None


def _apply(tokenizer: Any, source: str, messages, *, generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(
            list(messages), chat_template=source, tokenize=False,
            add_generation_prompt=generation_prompt,
        )
    except Exception as e:  # the template's own raise_exception(), or a Jinja error
        raise RecipeError(f"the chat template failed: {e}") from e
