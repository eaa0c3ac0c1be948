"""format: fields: a source's `fields:` templates (sandboxed Jinja) over each raw row, and how a null in the
row behaves inside them (runner/data/formats.py maps every other format)."""
from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined

from ..errors import RecipeError
from ..recipe import model
from .mapped import MapError, Messages, msg


class Fields:
    """format: fields. Each key of `fields:` is a Jinja template over the raw row, rendered in an
    ImmutableSandboxedEnvironment (no attribute tricks, no mutation) with StrictUndefined (a missing
    field is an error, not an empty string). All templates of a source are also compiled into one,
    each part in its own {% with %} scope, and rendered once per row: a quarter of the cost of four
    renders. When that fails, or the separator turns up in the data, the parts are rendered one by
    one, which names the field that failed and gives the same output."""

    SEP = "\x00\ufdd0\x00"   # NUL and a Unicode noncharacter: not in real text, and checked anyway

    def __init__(self, name: str, fields: model.Fields):
        from jinja2 import StrictUndefined, TemplateSyntaxError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
        srcs = {"system": fields.system, "user": fields.user, "assistant": fields.assistant, "id": fields.id}
        srcs.update({f"meta.{k}": v for k, v in fields.meta.items()})
        self.names = [k for k, v in srcs.items() if v is not None]
        self.parts = []
        for key in self.names:
            try:
                self.parts.append(env.from_string(srcs[key]))
            except TemplateSyntaxError as e:
                raise RecipeError(f"sources.{name}.fields.{key}: invalid template: {e.message} "
                                  f"(line {e.lineno} of the template)") from None
        self.combined = env.from_string(self.SEP.join(
            "{% with %}" + srcs[k] + "{% endwith %}" for k in self.names))

    def render(self, row: dict[str, Any]) -> dict[str, str]:
        if _has_null(row):
            row = {k: _nulls(v, k) for k, v in row.items()}
        try:
            out = self.combined.render(row).split(self.SEP)
            if len(out) == len(self.names):
                return dict(zip(self.names, out))
        except Exception:   # any template failure: find which field failed below
            pass
        return {k: self._one(k, t, row) for k, t in zip(self.names, self.parts)}

    @staticmethod
    def _one(key: str, template: Any, row: dict[str, Any]) -> str:
        from jinja2 import UndefinedError

        try:
            return template.render(row)
        except MapError:
            raise
        except UndefinedError as e:
            raise MapError("missing_field", f"fields.{key}: {e.message}") from None
        except Exception as e:   # the user's template raised: TypeError, SecurityError, ZeroDivisionError...
            raise MapError("template_error", f"fields.{key}: {type(e).__name__}: {e}") from None

    def __call__(self, row: dict[str, Any]) -> tuple[Messages, dict[str, Any], str | None]:
        out = self.render(row)
        msgs = [msg("system", out["system"])] if out.get("system", "").strip() else []
        msgs += [msg("user", out["user"]), msg("assistant", out["assistant"])]
        meta = {k[5:]: v for k, v in out.items() if k.startswith("meta.")}
        rid = out.get("id")
        if rid is not None and not rid.strip():
            raise MapError("template_error", "fields.id rendered an empty id")
        return msgs, meta, rid


def _has_null(v: Any) -> bool:
    if v is None:
        return True
    if type(v) is dict:
        return any(_has_null(x) for x in v.values())
    if type(v) is list:
        return any(_has_null(x) for x in v)
    return False


class _NullError(MapError):
    def __init__(self, message: str):
        super().__init__("null_field", message)


class _Null(StrictUndefined):
    """A null of the raw row inside a `fields` template. Jinja would write a null as the text "None"
    (`{{ author }}`, `paragraphs | join`) straight into the training data; this refuses to print
    (the row is quarantined as null_field) but is falsy, so `{% if x %}`, `x or '...'` and
    `x | default('...')` still choose what to write."""
    __slots__ = ()

    def __bool__(self) -> bool:
        return False


def _nulls(v: Any, where: str) -> Any:
    if v is None:
        return _Null(hint=f"'{where}' is null", name=where, exc=_NullError)
    if type(v) is dict:
        return {k: _nulls(x, f"{where}.{k}") for k, x in v.items()}
    if type(v) is list:
        return [_nulls(x, f"{where}[{i}]") for i, x in enumerate(v)]
    return v
