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
    field is an error, not an empty string) and a budget of work per row (jinja_budget: a row whose
    render would loop without end is quarantined as template_budget). All templates of a source are
    also compiled into one, each part in its own {% with %} scope, and rendered once per row: a quarter
    of the cost of four renders. When that fails, or the separator turns up in the data, the parts are rendered one by
    one, which names the field that failed and gives the same output."""

    SEP = "\x00\ufdd0\x00"   # NUL and a Unicode noncharacter: not in real text, and checked anyway

    def __init__(self, name: str, fields: model.Fields):
        from jinja2 import StrictUndefined, TemplateSyntaxError

        from .jinja_budget import BudgetedEnvironment

        self.env = env = BudgetedEnvironment(undefined=StrictUndefined)   # sandboxed, with a budget per row
        # a null of the row is null to `is none` and `tojson` (_Null below); Jinja's own would say False / fail
        env.tests["none"] = _is_none
        env.policies["json.dumps_kwargs"] = {**env.policies["json.dumps_kwargs"], "default": _json_null}
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
            self.env.reset()
            out = self.combined.render(row).split(self.SEP)
            if len(out) == len(self.names):
                return dict(zip(self.names, out))
        except Exception:   # any template failure: find which field failed below
            pass
        return {k: self._one(k, t, row) for k, t in zip(self.names, self.parts)}

    def _one(self, key: str, template: Any, row: dict[str, Any]) -> str:
        from jinja2 import UndefinedError

        from .jinja_budget import RenderBudget

        try:
            self.env.reset()
            return template.render(row)
        except MapError:
            raise
        except RenderBudget as e:
            raise MapError("template_budget", f"fields.{key}: {e}") from None
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
    """Whether a null is anywhere in v; a loop, not recursion: a row may nest as deep as readers allow."""
    stack = [v]
    while stack:
        x = stack.pop()
        if x is None:
            return True
        if type(x) is dict:
            stack.extend(x.values())
        elif type(x) is list:
            stack.extend(x)
    return False


class _NullError(MapError):
    def __init__(self, message: str):
        super().__init__("null_field", message)


class _Null(StrictUndefined):
    """A null of the raw row inside a `fields` template. Jinja would write a null as the text "None"
    (`{{ author }}`, `paragraphs | join`) straight into the training data; this refuses to print, alone
    or inside a list or dict (the row is quarantined as null_field), but is falsy, so `{% if x %}`,
    `x or '...'` and `x | default('...')` still choose what to write; `x is none` is true and `tojson`
    writes null."""
    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        # a container prints its items' repr: `{{ xs }}`, `xs | list`, `pprint`, `string`, `dictsort` would
        # write "Undefined" into the text, so a null inside one is the row's null_field too
        self._fail_with_undefined_error()


def _is_none(v: Any) -> bool:
    return v is None or isinstance(v, _Null)


def _json_null(o: Any) -> None:
    if isinstance(o, _Null):
        return None
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def _nulls(v: Any, where: str) -> Any:
    """v with each null replaced by a _Null that names its place ("xs[2].author"); a loop, like _has_null."""
    root = [None]
    stack: list[tuple[Any, Any, Any, str]] = [(v, root, 0, where)]
    while stack:
        x, into, key, at = stack.pop()
        if x is None:
            into[key] = _Null(hint=f"'{at}' is null", name=at, exc=_NullError)
        elif type(x) is dict:
            into[key] = copy = dict.fromkeys(x)
            stack.extend((y, copy, k, f"{at}.{k}") for k, y in x.items())
        elif type(x) is list:
            into[key] = copy = [None] * len(x)
            stack.extend((y, copy, i, f"{at}[{i}]") for i, y in enumerate(x))
        else:
            into[key] = x
    return root[0]
