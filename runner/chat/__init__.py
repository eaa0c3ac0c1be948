"""Chat rendering: a conversation becomes token ids plus the labels that say what is trained.

One home for what the data steps (the token-length filter, render), `recipe inspect` and training all
need: `templates` renders and checks; this module resolves a recipe's template name and tokenizer."""
from __future__ import annotations

from typing import Any, Callable

from ..recipe import model


def chat_name(recipe: model.Recipe) -> str:
    """template.chat as templates.render takes it: a built-in name, or the .jinja path resolved."""
    chat = recipe.template.chat
    return chat if chat in model.CHAT_TEMPLATES else str(recipe.path(chat))


def tokenizer_for(recipe: model.Recipe, trust: bool = False) -> Any:
    """The recipe's tokenizer; model code from the hub runs only when the recipe asks and --trust allows."""
    from ..builtin import load_tokenizer
    return load_tokenizer(recipe.model.base, trust_remote_code=recipe.model.trust_remote_code and trust,
                          recipe_dir=recipe.file.parent)


def token_counter(recipe: model.Recipe, trust: bool = False) -> Callable[[dict], int]:
    """Tokens of a record rendered exactly as training will see it (template + tokenizer)."""
    from .templates import render
    tok = tokenizer_for(recipe, trust)
    chat, t = chat_name(recipe), recipe.template

    def count(rec: dict) -> int:
        # no truncation here: the filter must see the full length to drop what would be cut
        return len(render(rec["messages"], tok, chat=chat, system=t.system, train_on=t.train_on,
                          max_length=10**9).input_ids)
    return count
