"""Chat rendering: a conversation becomes token ids plus the labels that say what is trained.

One home for what the data steps (the token-length filter, render), `recipe inspect` and training all
need: `templates` renders and checks; this module resolves a template name and loads a tokenizer. Both
take plain values (not a recipe), so each caller passes exactly the settings it declared."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..recipe.model import CHAT_TEMPLATES


def chat_name(chat: str, base_dir: Path) -> str:
    """template.chat as templates.render takes it: a built-in name, or the .jinja path resolved."""
    return chat if chat in CHAT_TEMPLATES else str((Path(base_dir) / chat).resolve())


def tokenizer_for(base: str, base_dir: Path, *, trust_remote_code: bool = False) -> Any:
    """model.base's tokenizer. trust_remote_code: the recipe asks for it AND --trust allows it."""
    from ..builtin import load_tokenizer
    return load_tokenizer(base, trust_remote_code=trust_remote_code, recipe_dir=Path(base_dir))


def token_counter(tokenizer: Any, chat: str, system: str | None) -> Callable[[dict], int]:
    """Tokens of a record rendered exactly as training will see it (template + tokenizer)."""
    from .templates import render

    def count(rec: dict) -> int:
        # no truncation here: the filter must see the full length to drop what would be cut
        return len(render(rec["messages"], tokenizer, chat=chat, system=system, train_on="assistant",
                          max_length=10**9).input_ids)
    return count
