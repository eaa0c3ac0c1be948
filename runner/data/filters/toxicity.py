"""toxicity: drop rows whose text a detoxify checkpoint scores at or above `threshold`. Weights are
read from a local file only (nothing can be downloaded here): `model_path`, relative to the recipe."""
from __future__ import annotations

from ...errors import RecipeError
from ...recipe.model import ToxicityFilter
from ..text import text
from .context import FilterContext, RowFilter


def make(f: ToxicityFilter, ctx: FilterContext) -> RowFilter:
    path = (ctx.base_dir / f.model_path).resolve()
    if not path.is_file():
        raise RecipeError(f"toxicity filter: no detoxify checkpoint at {path}; weights cannot be downloaded "
                          "here: fetch one (e.g. toxic_original-c1212f89.ckpt) elsewhere and set model_path to it")
    try:
        from detoxify import Detoxify
    except ImportError:
        raise RecipeError(f"toxicity filter: the `detoxify` package is not installed (pip install detoxify), "
                          f"needed to run the checkpoint at {path}; or remove the toxicity filter") from None
    try:
        model = Detoxify(checkpoint=str(path), device="cpu")
    except Exception as e:   # a damaged or foreign checkpoint, or a tokenizer it cannot find offline
        raise RecipeError(f"toxicity filter: cannot load the detoxify checkpoint at {path}: {e}") from None

    def check(record):
        s = text(record, f.field)
        if s and float(model.predict(s)["toxicity"]) >= f.threshold:
            return "toxicity", record
        return None, record
    return check
