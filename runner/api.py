"""What the CLI and the tests call. Stops before `execute` for validate/show/schema/plan/diff, so
those never import torch, transformers, datasets, trl, peft or deepspeed."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .recipe import model
from .recipe.load import load_document
from .recipe.validate import validate

_SECRET = re.compile(r"(token|secret|password|api_?key)", re.I)


def load(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> model.Recipe:
    """Read, merge, override, interpolate and validate a recipe -> frozen Recipe (or ValidationError)."""
    return validate(load_document(Path(path), tuple(overrides)))


def canonical(recipe: model.Recipe) -> dict[str, Any]:
    """The resolved document with secrets masked: what `show` prints and `diff` compares."""
    def mask(v: Any, key: str = "") -> Any:
        if isinstance(v, dict):
            return {k: mask(x, k) for k, x in v.items()}
        if isinstance(v, list):
            return [mask(x) for x in v]
        return "***" if (isinstance(v, str) and _SECRET.search(key) and v) else v
    return mask(dict(recipe.document))


def show(recipe: model.Recipe, fmt: str = "yaml") -> str:
    doc = canonical(recipe)
    if fmt == "json":
        import json
        return json.dumps(doc, ensure_ascii=False, indent=2)
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=100)


def schema_text() -> str:
    from .recipe.schema import schema_text as text
    return text()
