"""Units: what a number written with `s`, `ms`, `deg` or `m` stays through arithmetic.

Units fold to plain numbers (seconds, radians, meters) before typing, so the typed tree
does not carry them; this part follows them on the syntax tree alongside. A
unit is a tuple of (dimension, exponent) pairs: `(("time", 1),)` for `20ms`,
`(("angle", 1),)` for `30deg`, `()` for a plain number, and None where it is
not known (built-in quantities, states, commands, most function results).

The rules, lenient wherever a unit is not known:

- `+ -`, comparisons, `min`/`max`/`clip`/`where` and the parameters of a
  distribution need operands of one unit; a plain number takes the other's
  unit (`1 + 5ms` is a time), and an unknown unit goes with anything and
  makes the result unknown (`joint_pos[1] - 5deg`);
- `* /` multiply units (`2 * 5ms` is a time, `10ms / 1ms` a plain number);
  anything times an unknown unit is unknown;
- `ctrl_dt` and `time` are times; selections, `-x`, `abs`, `sum`, `mean`,
  `prev` keep the unit; other functions give an unknown unit;
- a reward term and its weight must be plain numbers (or of unknown unit).

Each syntax node's unit is computed once (memoized by node identity).
"""

from __future__ import annotations

from typing import Iterable

from ksimdsl.errors import Span
from ksimdsl.frontend import ast
from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend.check.context import Context, Part

__all__ = ["Unit", "Units", "describe_unit"]

Unit = tuple[tuple[str, int], ...] | None

_OF_SUFFIX: dict[str, Unit] = {
    "s": (("time", 1),),
    "ms": (("time", 1),),
    "deg": (("angle", 1),),
    "m": (("length", 1),),
}
_QUANTITY_UNITS: dict[str, Unit] = {"ctrl_dt": (("time", 1),), "time": (("time", 1),)}
_SYMBOLS = {"time": "s", "angle": "rad", "length": "m"}
#: Functions whose result has the unit of their (first) argument.
_KEEP = frozenset({"abs", "sum", "mean", "min", "max", "clip"})
#: Functions whose value arguments must agree in unit.
_AGREE = {"min": ("a", "b"), "max": ("a", "b"), "clip": ("x", "lo", "hi"), "where": ("a", "b")}
_VERBS = {"+": "add", "-": "subtract"}


def describe_unit(unit: Unit) -> str:
    """`a time`, `an angle`, `a value in s^2`."""
    if unit == (("time", 1),):
        return "a time"
    if unit == (("angle", 1),):
        return "an angle"
    if unit == (("length", 1),):
        return "a length"
    parts = [_SYMBOLS[d] + ("" if e == 1 else f"^{e}") for d, e in unit or ()]
    return "a value in " + "*".join(parts)


def _times(a: Unit, b: Unit, sign: int) -> Unit:
    if a is None or b is None:
        return None
    exps = dict(a)
    for dim, e in b:
        exps[dim] = exps.get(dim, 0) + sign * e
    return tuple(sorted((d, e) for d, e in exps.items() if e))


def _power(a: Unit, exponent: ast.Expr) -> Unit:
    if a == ():
        return ()
    if a is None or not (isinstance(exponent, ast.Num) and exponent.unit is None and exponent.value.is_integer()):
        return None
    n = int(exponent.value)
    return tuple((d, e * n) for d, e in a if e * n)


class Units(Part):
    """The unit of every expression node; unit mismatches are errors."""

    def __init__(self, cx: Context):
        super().__init__(cx)
        self._memo: dict[int, tuple[ast.Expr, Unit]] = {}  # id -> (node kept alive, unit)
        self._lets: dict[str, Unit] = {}

    def define_let(self, name: str, value: ast.Expr) -> None:
        """Record the unit of `let name = value` (its value was typed already)."""
        self._lets[name] = self.of(value)

    def require_plain(self, node: ast.Expr, what: str, must: str) -> None:
        """`node` must be a plain number (or of unknown unit)."""
        unit = self.of(node)
        if unit:
            self.fail(node.span, f"unit mismatch: {what} is {describe_unit(unit)}; {must}")

    def require_length(self, node: ast.Expr, label: str, length: bool = True) -> None:
        """`node` must be a length (`0.5m`, or a plain number of meters), or with `length=False` a plain number."""
        unit = self.of(node)
        if unit is None or unit == () or (length and unit == (("length", 1),)):
            return
        must = "a length in m (or a plain number of meters)" if length else "a plain number"
        self.fail(node.span, f"unit mismatch: {label} is {must}, got {describe_unit(unit)}")

    def of(self, node: ast.Expr) -> Unit:
        hit = self._memo.get(id(node))
        if hit is None:
            hit = self._memo[id(node)] = (node, self._compute(node))
        return hit[1]

    def agree(self, units: Iterable[Unit], span: Span, doing: str) -> Unit:
        """The common unit of `units`; an error when two known units differ.

        A plain number takes the other's unit; an unknown unit makes the result unknown.
        """
        known: Unit = None
        unknown = False
        for unit in units:
            unknown = unknown or unit is None
            if not unit:
                continue
            if known is not None and known != unit:
                self.fail(span, f"unit mismatch: cannot {doing} {describe_unit(known)} and {describe_unit(unit)}")
            known = unit
        if unknown:
            return None
        return known if known is not None else ()

    # ----------------------------------------------------------------- rules

    def _compute(self, node: ast.Expr) -> Unit:
        if isinstance(node, ast.Num):
            return _OF_SUFFIX.get(node.unit or "", ())
        if isinstance(node, ast.Name):
            if node.id in self._lets:
                return self._lets[node.id]
            return _QUANTITY_UNITS.get(node.id) if node.id not in self.cx.states else None
        if isinstance(node, (ast.Attr, ast.Index)):
            is_cmd = isinstance(node.base, ast.Name) and node.base.id == "cmd" and "cmd" not in self._lets
            return None if is_cmd else self.of(node.base)
        if isinstance(node, ast.Unary):
            return self.of(node.operand) if node.op == "-" else ()
        if isinstance(node, ast.Binary):
            return self._binary(node)
        if isinstance(node, ast.Vector):
            units = {self.of(i) for i in node.items}
            return units.pop() if len(units) == 1 else None
        if isinstance(node, ast.Call):
            return self._call(node)
        return None

    def _binary(self, node: ast.Binary) -> Unit:
        op = node.op
        if op in ("and", "or"):
            return ()
        a, b = self.of(node.left), self.of(node.right)
        if op in ("*", "/"):
            return _times(a, b, 1 if op == "*" else -1)
        if op == "^":
            return _power(a, node.right)
        unit = self.agree((a, b), node.span, _VERBS.get(op, "compare"))
        return unit if op in ("+", "-") else ()

    def _call(self, node: ast.Call) -> Unit:
        f = node.func
        if f in bi.DISTRIBUTIONS:
            doing = f"draw {f}() from"
            return self.agree((self.of(a) for a in node.args), node.span, doing)
        if f == "prev" and len(node.args) == 1:
            return self.of(node.args[0])
        if f not in _KEEP and f not in _AGREE:
            return None
        sig = bi.FUNCTIONS[f]
        bound = dict(zip(sig.param_names, node.args))
        bound.update((kw.name, kw.value) for kw in node.kwargs)
        names = _AGREE.get(f, sig.param_names[:1])
        return self.agree((self.of(bound[n]) for n in names if n in bound), node.span, f"take {f}() of")
