"""Compile-time constants: units folded to numbers, durations, constant arithmetic."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from ksimdsl.errors import InternalCompilerError, Span
from ksimdsl.frontend import ast
from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.check.context import Context, Ctx, Part, fmt_num
from ksimdsl.frontend.check.folding import TIME_UNITS, StaticValues


#: Math functions of one argument whose constant calls are checked for a real value.
_REAL_FUNCTIONS: dict[str, Callable[[float], float]] = {
    "sqrt": math.sqrt,
    "log": math.log,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tanh": math.tanh,
}


def _has_real_value(fn: Callable[[float], float], x: float) -> bool:
    """False where `fn(x)` is not a real number (log(0), sqrt(-1), sin(inf), a NaN argument)."""
    if math.isnan(x):
        return False
    try:
        return not math.isnan(fn(x))
    except ValueError:
        return False
    except OverflowError:  # exp(1000): a real value too large for a float
        return True


class Consts(Part):
    """Constants written in the task: numbers with units, durations, settings' values, folding."""

    def __init__(self, cx: Context):
        super().__init__(cx)
        self.static_values = StaticValues()

    def const(self, node: ast.Expr, what: str) -> t.Const:
        """A compile-time constant: numbers (units folded), vectors and arithmetic on them."""
        self.require_literal(node, what)
        value = self.cx.exprs.expr(node, Ctx(what))
        if not isinstance(value, t.Const):
            self.fail(node.span, f"{what} must be a constant number")
        return value

    def require_literal(self, node: ast.Expr, what: str) -> None:
        if isinstance(node, ast.Num):
            if node.unit == "steps":
                self.fail(node.span, f"{what} must be a plain number, not a count of steps")
            return
        if isinstance(node, ast.Unary):
            self.require_literal(node.operand, what)
        elif isinstance(node, ast.Binary):
            self.require_literal(node.left, what)
            self.require_literal(node.right, what)
        elif isinstance(node, ast.Vector):
            for item in node.items:
                self.require_literal(item, what)
        else:
            self.fail(node.span, f"{what} must be a constant number")

    def const_float(self, node: ast.Expr, what: str) -> float:
        c = self.const(node, what)
        if not c.type.is_scalar or c.type.kind != "float":
            self.fail(node.span, f"{what} must be a number, got {c.type}")
        return float(c.value)  # type: ignore[arg-type]

    def const_int(self, node: ast.Expr, what: str, minimum: int | None = None) -> int:
        x = self.const_float(node, what)
        if not float(x).is_integer():
            self.fail(node.span, f"{what} must be a whole number, got {fmt_num(x)}")
        if minimum is not None and x < minimum:
            self.fail(node.span, f"{what} must be at least {minimum}, got {fmt_num(x)}")
        return int(x)

    def duration_seconds(self, node: ast.Expr, what: str, *, allow_steps: bool = False) -> float:
        """A duration written with a unit (`20ms`, `1s`; `5 steps` if allowed) in seconds."""
        if not isinstance(node, ast.Num):
            self.fail(node.span, f"{what} must be a duration such as 20ms or 1s")
        if node.unit in TIME_UNITS:
            return node.value * TIME_UNITS[node.unit]
        if node.unit == "steps" and allow_steps:
            return node.value * self.cx.ctrl_dt
        hint = f"{fmt_num(node.value)}s" + (f" or {fmt_num(node.value)} steps" if allow_steps else "")
        if node.unit is None:
            self.fail(node.span, f"{what} needs a unit: write {hint}")
        self.fail(node.span, f"{what} must be a duration, not a value in '{node.unit}'; write {hint}")

    def duration_steps(self, node: ast.Expr, what: str) -> int:
        """A duration (`20s`, `500ms`, `1000 steps`) as a whole number of control steps."""
        if isinstance(node, ast.Num) and node.unit == "steps":
            if not float(node.value).is_integer():
                self.fail(node.span, f"{what} must be a whole number of steps, got {fmt_num(node.value)}")
            return int(node.value)
        if isinstance(node, ast.Num) and node.unit is None:
            v = fmt_num(node.value)
            self.fail(node.span, f"{what} needs a unit: write {v}s or {v} steps")
        seconds = self.duration_seconds(node, what, allow_steps=True)
        return round(seconds / self.cx.ctrl_dt)

    def duration_or_dist_steps(self, node: ast.Expr, what: str) -> t.Expr:
        """A duration in control steps: a Const, or a scalar Dist of durations (event `every`)."""
        if isinstance(node, ast.Call) and node.func in bi.DISTRIBUTIONS:
            if node.kwargs or not 1 <= len(node.args) <= 2:
                self.fail(node.span, f"{node.func} takes one or two durations")
            params = [t.Const(float(self.duration_steps(a, what)), t.FLOAT, a.span) for a in node.args]
            return self.cx.calls.make_dist(node, params)
        steps = self.duration_steps(node, what)
        if steps < 1:
            self.fail(node.span, f"{what} must be at least one control step")
        return t.Const(float(steps), t.FLOAT, node.span)

    def step_count(self, node: ast.Expr, what: str) -> int:
        if isinstance(node, ast.Num) and node.unit == "steps":
            node = dataclasses.replace(node, unit=None)
        return self.const_int(node, what, minimum=0)

    def num(self, node: ast.Num) -> t.Const:
        if node.unit is None:
            return t.Const(float(node.value), t.FLOAT, node.span)
        if node.unit == "deg":
            return t.Const(math.radians(node.value), t.FLOAT, node.span)
        if node.unit in TIME_UNITS:
            return t.Const(node.value * TIME_UNITS[node.unit], t.FLOAT, node.span)
        if node.unit == "m":
            return t.Const(float(node.value), t.FLOAT, node.span)
        if node.unit == "steps":
            self.fail(node.span, "a count of steps is only allowed where a duration is due (episode, every, delay)")
        raise InternalCompilerError(f"unknown unit {node.unit!r}", node.span, self.cx.source)

    def require_defined(self, e: t.Binary) -> None:
        """Reject arithmetic on known constants that has no real value (`inf - inf`, `x / 0`).

        Known vector constants come from built-ins such as `joint_upper` (+inf
        for a joint without a range). The lowering folds them at compile time,
        so a NaN here would silently become a NaN in every step.
        """
        values = self.static_values(e)
        if values is None:
            return
        bad = [i for i, v in enumerate(values) if math.isnan(v)]
        if not bad:
            return
        where = self._where(e, bad)
        operands = (*(self.static_values(e.left) or ()), *(self.static_values(e.right) or ()))
        notes = [bi.INFINITE_LIMITS_NOTE] if any(math.isinf(v) for v in operands) else []
        self.fail(e.span, f"this constant expression has no real value{where}", *notes)

    def require_real(self, func: str, arg: t.Expr, span: Span) -> None:
        """Reject a math function of known constants outside its domain (`log(0)`, `sqrt(-4)`).

        The lowering folds such calls at compile time; `span` is the argument's.
        Infinite values (`joint_upper` of a joint without a range) are left to
        the lowering, which names the joint limits in its message.
        """
        fn = _REAL_FUNCTIONS.get(func)
        values = None if fn is None else self.static_values(arg)
        if values is None:
            return
        bad = [i for i, v in enumerate(values) if not (math.isinf(v) or _has_real_value(fn, v))]  # type: ignore[arg-type]
        if not bad:
            return
        if arg.type.is_scalar:
            self.fail(span, f"{func}() has no real value for {fmt_num(values[0])}")
        shown = [f"{i} ({fmt_num(values[i])})" for i in bad]
        self.fail(span, f"{func}() has no real value{self._where(arg, bad, shown)}")

    def _where(self, e: t.Expr, bad: list[int], shown: list[str] | None = None) -> str:
        """`` (scalar), ` for joints 'a', 'b'` or ` for elements 0, 2`: where a constant vector fails.

        `shown[k]` (default: the index) describes element `bad[k]`; a joint name replaces its index.
        """
        if e.type.is_scalar:
            return ""
        shown = shown or [str(i) for i in bad]
        labels = self.cx.select.labels(e)  # known constants with labels are per-joint built-ins
        plural = "s" if len(bad) > 1 else ""
        if labels:
            named = [f"'{labels[i]}'" + text[len(str(i)) :] for i, text in zip(bad, shown)]
            return f" for joint{plural} " + ", ".join(named)
        return f" for element{plural} " + ", ".join(shown)

    def fold(self, op: str, a: t.Const, b: t.Const, typ: t.Type, node: ast.Binary) -> t.Const:
        n = typ.size
        av = a.values * n if a.type.is_scalar else a.values
        bv = b.values * n if b.type.is_scalar else b.values
        out = []
        for x, y in zip(av, bv):
            if op == "/" and y == 0:
                self.fail(node.right.span, "division by zero")
            try:
                v = {"+": x + y, "-": x - y, "*": x * y}.get(op) if op in "+-*" else (x / y if op == "/" else x**y)
            except (OverflowError, ZeroDivisionError):
                self.fail(node.span, "this constant expression has no finite value")
            if isinstance(v, complex) or v is None or not math.isfinite(v):
                self.fail(node.span, "this constant expression has no finite real value")
            out.append(float(v))
        return t.Const(out[0] if typ.is_scalar else tuple(out), typ, node.span)
