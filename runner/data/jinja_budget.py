"""A budget for rendering a user's Jinja template (a source's `fields:`), so one row cannot hang the run:
nested `range(100000)` loops validate fine and would render for hours.

The budget counts work, not time, so the same rows are refused on any machine and the artifacts stay
deterministic: every loop iteration of one render costs a step (each `{% for %}`'s iterable is wrapped
at compile time), `*` may not build a string or list longer than MAX_ITEMS, and `**` may not raise an
integer past MAX_EXPONENT (10 ** 10000000000 would compute for hours in one C call, which no step count
can interrupt). Past any, the render raises RenderBudget, which the caller turns into the row's quarantine."""
from __future__ import annotations

from typing import Any, Iterable, Iterator

from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

LOOP_STEPS = 1_000_000     # loop iterations per render: a real template takes a few hundred
MAX_ITEMS = 100_000_000    # characters (or items) a `*` may produce
MAX_EXPONENT = 10_000      # `**` on integers (a float overflows at once)
_COUNTER = "__loop_budget__"


class RenderBudget(Exception):
    """The template did more work than one row may take."""


class BudgetedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**"])   # also keeps them from being folded at compile time

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.steps_left = LOOP_STEPS
        self.globals[_COUNTER] = self._count

    def reset(self) -> None:
        """Before each render: the budget is per render."""
        self.steps_left = LOOP_STEPS

    def _count(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            self.steps_left -= 1
            if self.steps_left < 0:
                raise RenderBudget(f"more than {LOOP_STEPS:,} loop steps for one row (a loop that does not end?)")
            yield item

    def _generate(self, source: nodes.Template, name, filename, defer_init: bool = False) -> str:
        for loop in source.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.Name(_COUNTER, "load"), [loop.iter], [], None, None,
                                   lineno=loop.lineno).set_environment(self)
        return super()._generate(source, name, filename, defer_init=defer_init)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            seq, n = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_ITEMS:
                raise RenderBudget(f"`*` would make {len(seq) * n:,} items, more than {MAX_ITEMS:,}")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 \
                and right > MAX_EXPONENT:
            raise RenderBudget(f"`**` with an exponent of {right:,}, more than {MAX_EXPONENT:,}")
        return super().call_binop(context, operator, left, right)
