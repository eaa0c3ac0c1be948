"""The resolved recipe as people see it: `recipe show` prints it, `recipe diff` compares it, a run saves it,
with the values from secret environment variables masked (runner.recipe.secrets)."""
from __future__ import annotations

from typing import Any

from .model import Recipe
from .secrets import mask


def canonical(recipe: Recipe) -> dict[str, Any]:
    """The resolved document with secrets masked: what `show` prints and `diff` compares."""
    return mask(recipe.document, recipe.secrets)
