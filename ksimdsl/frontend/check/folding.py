"""Constant folding on typed expressions: the element values known at compile
time, and the small arithmetic helpers the checker folds constants with.

`StaticValues` visits every distinct node once (memoized by node identity,
iterative): a chain of lets that use each other twice stays linear, and no
depth of nesting reaches Python's recursion limit.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, TypeVar

from ksimdsl.frontend import ast
from ksimdsl.frontend import typed as t

__all__ = ["TIME_UNITS", "const_pairs", "arith", "fold_dag", "StaticValues", "range_units"]


#: Seconds per unit for durations.
TIME_UNITS = {"s": 1.0, "ms": 1e-3}

_Values = tuple[float, ...] | None
_V = TypeVar("_V")


def fold_dag(
    root: t.Expr,
    memo: dict[int, tuple[t.Expr, _V]],
    operands: Callable[[t.Expr], tuple[t.Expr, ...]],
    combine: Callable[[t.Expr, list[_V]], _V],
) -> _V:
    """`combine(node, values of its operands)` for `root`, bottom up, each distinct node once.

    `memo` maps id(node) to (node, value): the node is kept alive so that its
    id stays its own. Iterative: any depth of nesting is fine.
    """
    stack: list[tuple[t.Expr, bool]] = [(root, False)]
    while stack:
        node, ready = stack.pop()
        if id(node) in memo:
            continue
        ops = operands(node)
        if ready or not ops:
            memo[id(node)] = (node, combine(node, [memo[id(o)][1] for o in ops]))
        else:
            stack.append((node, True))
            stack.extend((o, False) for o in ops if id(o) not in memo)
    return memo[id(root)][1]


def const_pairs(a: t.Const, b: t.Const) -> list[tuple[float, float]]:
    """Elementwise pairs of two constants of broadcastable shapes (a scalar repeats)."""
    return _pairs(a.values, b.values)


def _pairs(av: tuple[float, ...], bv: tuple[float, ...]) -> list[tuple[float, float]]:
    n = max(len(av), len(bv))
    return list(zip(av * n if len(av) == 1 else av, bv * n if len(bv) == 1 else bv))


def arith(op: str, x: float, y: float) -> float:
    """`x op y` on floats; NaN where it has no real value (inf - inf, 0 * inf, x / 0, (-1) ^ 0.5)."""
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    if op == "/":
        return math.nan if y == 0 else x / y
    try:
        v = x**y
    except ZeroDivisionError:
        return math.nan
    except OverflowError:
        return math.inf
    return math.nan if isinstance(v, complex) else float(v)


def _operands(e: t.Expr) -> tuple[t.Expr, ...]:
    """The sub-expressions whose values `e`'s value is made of (none for a leaf or a dynamic node)."""
    if isinstance(e, t.Const):
        return ()
    if isinstance(e, (t.Let, t.Quantity)):
        return (e.value,)
    if isinstance(e, t.Gather):
        return (e.base,)
    if isinstance(e, t.Unary) and e.op == "-":
        return (e.operand,)
    if isinstance(e, t.Binary):
        return (e.left, e.right)
    return ()


def _combine(e: t.Expr, parts: list[_Values]) -> _Values:
    if isinstance(e, t.Const):
        return e.values
    if not parts or any(p is None for p in parts):
        return None  # not static, or made of something that is not
    if isinstance(e, (t.Let, t.Quantity)):
        return parts[0]
    if isinstance(e, t.Gather):
        base = parts[0]
        return tuple(base[i] for i in e.indices)  # type: ignore[index]
    if isinstance(e, t.Unary):
        return tuple(-v for v in parts[0])  # type: ignore[union-attr]
    assert isinstance(e, t.Binary)
    return tuple(arith(e.op, x, y) for x, y in _pairs(parts[0], parts[1]))  # type: ignore[arg-type]


class StaticValues:
    """The element values of expressions known at compile time, else None.

    Known: constants, constant built-ins (default_joint_pos, joint_lower,
    joint_upper), lets of them, selections, negation and `+ - * / ^` of those.
    """

    def __init__(self) -> None:
        self._memo: dict[int, tuple[t.Expr, _Values]] = {}  # id -> (node kept alive, values)

    def __call__(self, e: t.Expr) -> _Values:
        return fold_dag(e, self._memo, _operands, _combine)


def range_units(rng: ast.Range) -> ast.Range:
    """`0..10ms` means `0ms..10ms`: a bare number before `..` takes the unit after it."""
    lo, hi = rng.lo, rng.hi
    if isinstance(lo, ast.Num) and lo.unit is None and isinstance(hi, ast.Num) and hi.unit is not None:
        return dataclasses.replace(rng, lo=dataclasses.replace(lo, unit=hi.unit))
    return rng
