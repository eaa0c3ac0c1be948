"""Document -> Recipe, or every problem at once. Two passes: the JSON Schema (shape, types, closed
objects; shape.py), then the checks a schema cannot express (names that refer to each other, ratios,
files), one module per section of the recipe. Every problem carries its file:line; they are
reported together, sorted by place, one message per place."""
from __future__ import annotations

from ...errors import ValidationError
from .. import model, schema as sch
from ..document import Document, display, gc_paused
from .chat_model import check_template_and_model
from .filters import check_filters
from .gates import check_gates
from .meta import check_meta
from .problems import MAX_SHOWN, Problems, did_you_mean, dotted
from .shape import nonfinite, schema_errors
from .sources import check_sources
from .stages import check_stages

__all__ = ["validate", "did_you_mean", "dotted", "MAX_SHOWN"]


def validate(doc: Document) -> model.Recipe:
    with gc_paused():
        return _validate(doc)


def _validate(doc: Document) -> model.Recipe:
    out = Problems(doc)
    nonfinite(doc, out)
    schema_errors(doc, out)
    full = sch.apply_defaults(doc.data)
    if not out:
        _semantic(full, doc, out)
    else:
        # Report what we can of the meaning too, so one run shows as much as possible; a shape error
        # may make these checks trip, and then the schema's messages are the ones that matter.
        try:
            _semantic(full, doc, out)
        except (KeyError, TypeError, AttributeError, ValueError, ArithmeticError, IndexError):
            pass
    if out:
        unique = {(str(e.where), e.message): e for e in out}   # one message per place, however many rules hit it
        problems = sorted(unique.values(), key=lambda e: (e.where.file if e.where else "", e.where.line or 0 if e.where
                                                          else 0, e.where.col or 0 if e.where else 0))
        raise ValidationError(problems[:MAX_SHOWN], display(doc.files[0]), hidden=max(0, len(problems) - MAX_SHOWN))
    return model.build(_canonical(full), doc.files[0], frozenset(doc.secrets))


def _semantic(d: dict, doc: Document, out: Problems) -> None:
    """Pass 2, section by section, in this order (problems at the same place keep it)."""
    doc_dir = doc.files[0].parent
    check_sources(d, doc_dir, out)
    check_filters(d, doc_dir, out)
    check_stages(d, doc_dir, out)
    check_template_and_model(d, doc_dir, out)
    check_meta(d, doc_dir, out)
    check_gates(d, out)


def _canonical(full: dict) -> dict:
    """Stage settings resolved: a stage without `size` takes the recipe's. `extends` was consumed by
    the loader: the canonical document is the merged result, not how it was assembled."""
    full.pop("extends", None)
    if full["stages"]:
        for st in full["stages"].values():
            if st["size"] is None:
                st["size"] = full["size"]
    return full
