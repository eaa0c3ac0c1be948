"""What every chat template shares: the segment a conversation is rendered into, and the tokenizer's
special tokens (EOS, the one a template needs, every token flagged special)."""
from __future__ import annotations

from typing import Any

from ..errors import RecipeError

Segment = tuple[str, int | None]  # (text, index of the answer it belongs to or None)


def eos(tokenizer: Any, chat: str) -> str:
    if not tokenizer.eos_token:
        raise RecipeError(f"template {chat!r} ends answers with EOS, but the tokenizer has none")
    return tokenizer.eos_token


def special_tokens(tokenizer: Any) -> list[str]:
    """Every special token: the named ones and the added tokens flagged special."""
    names = set(tokenizer.all_special_tokens)
    names.update(t.content for t in tokenizer.added_tokens_decoder.values() if t.special)
    return sorted(names)


def token_id(vocab: dict[str, int], token: str, chat: str) -> int:
    # The vocabulary, not convert_tokens_to_ids: that maps an unknown token to unk,
    # which for Qwen2 tokenizers is EOS.
    token_id = vocab.get(token)
    if token_id is None:
        raise RecipeError(f"template {chat!r} needs the token {token!r}, which the tokenizer "
                          f"does not have; use the template the model was trained with, "
                          f"or `tokenizer`")
    return token_id
