"""Common-subexpression elimination across all outputs of a phase, and op counting.

Constant folding and unit folding already happened while building the sympy
expressions (sympy evaluates numeric sub-expressions eagerly, and the checker
folded units); zero-weight reward terms were dropped by the lowering. What is
left here is CSE: `sympy.cse` over EVERY output expression of a phase at once
(observations, rewards, terminations, state updates together), so that e.g. a
frame rotation used by an observation and by a reward is computed once.

Op counts use `sympy.count_ops`: "before" counts every output expression in
full, "after" the CSE'd assignments plus the reduced outputs. A packed array
operation counts as one op, as in the printed code.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

import sympy as sp

from ksimdsl.ir import vec

__all__ = ["Eliminated", "eliminate", "count_ops"]


def count_ops(exprs: Iterable[sp.Basic]) -> int:
    """Total `sympy.count_ops` of `exprs` (numbers and symbols count 0)."""
    return int(sum(sp.count_ops(e) for e in exprs))


@dataclass(frozen=True)
class Eliminated:
    """The result of CSE on one phase.

    `temps` are (symbol, expression) assignments in dependency order; `outputs`
    the reduced output expressions (same order as the input); `shapes` the
    packed size of each temporary (0 for scalars).
    """

    temps: tuple[tuple[sp.Symbol, sp.Basic], ...]
    outputs: tuple[sp.Basic, ...]
    shapes: Mapping[sp.Symbol, int]
    ops_before: int
    ops_after: int


def _inline_constants(
    replacements: list[tuple[sp.Symbol, sp.Basic]], reduced: list[sp.Basic]
) -> tuple[list[tuple[sp.Symbol, sp.Basic]], list[sp.Basic]]:
    """Put constant arrays back in place: a temporary for a module-level constant is noise."""
    const: dict[sp.Symbol, sp.Basic] = {}
    kept: list[tuple[sp.Symbol, sp.Basic]] = []
    for sym, sub in replacements:
        sub = sub.xreplace(const) if const else sub
        if isinstance(sub, (vec.ConstArr, vec.Fill)) and not sub.free_symbols - {sub.args[0]}:
            const[sym] = sub
        else:
            kept.append((sym, sub))
    if not const:
        return replacements, reduced
    return kept, [e.xreplace(const) for e in reduced]


def _symbols(reserved: set[str]) -> Iterator[sp.Symbol]:
    for i in itertools.count():
        name = f"x{i}"
        if name not in reserved:
            yield sp.Symbol(name, real=True)


def eliminate(
    exprs: Sequence[sp.Basic],
    *,
    cse: bool = True,
    names: Mapping[sp.Basic, str] | None = None,
    reserved: Iterable[str] = (),
) -> Eliminated:
    """CSE over `exprs` (all outputs of a phase).

    Temporaries are named `x0, x1, ...`, except those equal to an expression in
    `names` (a `let` or built-in quantity), which take that name. Names in
    `reserved` are never used.
    """
    exprs = list(exprs)
    before = count_ops(exprs)
    if not cse:
        return Eliminated((), tuple(exprs), {}, before, before)
    reserved = set(reserved)
    taken_names = {n for n in (names or {}).values()}
    replacements, reduced = sp.cse(exprs, symbols=_symbols(reserved | taken_names), order="none", list=True)
    replacements, reduced = _inline_constants(replacements, reduced)

    # Rename temporaries that stand for a named sub-expression (let / quantity).
    full: dict[sp.Symbol, sp.Basic] = {}
    rename: dict[sp.Symbol, sp.Symbol] = {}
    used: set[str] = set(reserved)
    for sym, sub in replacements:
        full_expr = sub.xreplace(full)
        full[sym] = full_expr
        name = (names or {}).get(full_expr)
        if name and name not in used:
            used.add(name)
            rename[sym] = sp.Symbol(name, real=True)
    temps: list[tuple[sp.Symbol, sp.Basic]] = []
    shapes: dict[sp.Symbol, int] = {}
    for sym, sub in replacements:
        new_sym = rename.get(sym, sym)
        temps.append((new_sym, sub.xreplace(rename)))
        shapes[new_sym] = vec.shape_of(full[sym])
    outputs = tuple(e.xreplace(rename) for e in reduced)
    after = count_ops([t[1] for t in temps]) + count_ops(outputs)
    return Eliminated(tuple(temps), outputs, shapes, before, after)
