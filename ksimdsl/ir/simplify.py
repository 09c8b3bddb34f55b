"""Common-subexpression elimination across all outputs of a phase, and op counting.

Constant folding and unit folding already happened while building the sympy
expressions (sympy evaluates numeric sub-expressions eagerly, and the checker
folded units); zero-weight reward terms were dropped by the lowering. What is
left here is CSE: `sympy.cse` over EVERY output expression of a phase at once
(observations, rewards, terminations, state updates together), so that e.g. a
frame rotation used by an observation and by a reward is computed once.

Op counts use `sympy.count_ops`: "before" counts every output expression in
full, "after" the CSE'd assignments plus the reduced outputs. A packed array
operation counts as one op, as in the printed code. Lets sharing
sub-expressions make exponentially large trees of small DAGs: every walk here
visits each distinct node once (`ksimdsl.ir.dag`), and a tree of more than
`dag.EXACT_OPS_LIMIT` nodes has its ops counted compositionally.
"""

from __future__ import annotations

import builtins
import itertools
import keyword
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

import sympy as sp

from ksimdsl.errors import InternalCompilerError
from ksimdsl.ir import vec
from ksimdsl.ir.dag import OpCounter, symbols_in, xreplace

__all__ = ["Eliminated", "eliminate", "count_ops"]


def count_ops(exprs: Iterable[sp.Basic], counter: OpCounter | None = None) -> int:
    """Total `sympy.count_ops` of `exprs` (numbers and symbols count 0; see `dag.OpCounter` for huge trees)."""
    return (counter or OpCounter()).total(exprs)


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


def _usable(name: str) -> bool:
    """Whether a `let`/quantity name can be a local variable of generated code.

    Python keywords and builtins (numba code calls `range`, `abs`, `max`) and
    upper-case names (module-level constants) are left to `x0, x1, ...`.
    """
    return name.isidentifier() and not keyword.iskeyword(name) and name not in _BUILTINS and not name.isupper()


_BUILTINS = frozenset(dir(builtins))


def _symbols(reserved: set[str]) -> Iterator[sp.Symbol]:
    for i in itertools.count():
        name = f"x{i}"
        if name not in reserved:
            yield sp.Symbol(name, real=True)


def _bind_lets(
    exprs: list[sp.Basic], lets: Mapping[sp.Basic, str], taken: set[str], ops: OpCounter
) -> tuple[list[sp.Basic], list[tuple[sp.Symbol, sp.Basic]], dict[sp.Symbol, sp.Basic]]:
    """Replace every `let` sub-expression by a symbol named after it.

    Returns the outputs in terms of those symbols, the bindings (symbol, body in
    terms of inner let symbols) that are used, and each symbol's full expression.
    """
    mapping: dict[sp.Basic, sp.Symbol] = {}
    bodies: dict[sp.Symbol, sp.Basic] = {}
    full: dict[sp.Symbol, sp.Basic] = {}
    for expr, name in sorted(lets.items(), key=lambda kv: ops(kv[0])):  # inner lets first
        if name in taken or not _usable(name):
            continue
        sym = sp.Symbol(name, real=True)
        taken.add(name)
        bodies[sym] = xreplace(expr, mapping)
        full[sym] = expr
        mapping[expr] = sym
    if not mapping:
        return exprs, [], {}
    memo: dict[sp.Basic, sp.Basic] = {}
    out = [xreplace(e, mapping, memo) for e in exprs]
    needed: set[sp.Symbol] = set()
    stack = [s for e in out for s in symbols_in(e, bodies)]
    while stack:
        sym = stack.pop()
        if sym not in needed:
            needed.add(sym)
            stack.extend(symbols_in(bodies[sym], bodies))
    bindings = [(sym, body) for sym, body in bodies.items() if sym in needed]
    return out, bindings, {sym: full[sym] for sym, _ in bindings}


def _topological(temps: list[tuple[sp.Symbol, sp.Basic]]) -> list[tuple[sp.Symbol, sp.Basic]]:
    """Order assignments so that each comes after the temporaries it reads (stable otherwise)."""
    defined = {sym for sym, _ in temps}
    done: set[sp.Symbol] = set()
    out: list[tuple[sp.Symbol, sp.Basic]] = []
    pending = list(temps)
    while pending:
        rest = []
        for sym, e in pending:
            if all(s in done or s not in defined for s in e.free_symbols):
                out.append((sym, e))
                done.add(sym)
            else:
                rest.append((sym, e))
        if len(rest) == len(pending):
            raise InternalCompilerError("cyclic temporaries after CSE")
        pending = rest
    return out


def eliminate(
    exprs: Sequence[sp.Basic],
    *,
    cse: bool = True,
    names: Mapping[sp.Basic, str] | None = None,
    lets: Mapping[sp.Basic, str] | None = None,
    reserved: Iterable[str] = (),
) -> Eliminated:
    """CSE over `exprs` (all outputs of a phase).

    Every `lets` sub-expression (a `let` definition) becomes a variable named
    after the let, even when used once; other temporaries are named `x0, x1,
    ...`, except those equal to an expression in `names` (e.g. a built-in
    quantity), which take that name. Names in `reserved` are never used.
    With `cse=False` the outputs are returned unchanged (no temporaries).
    """
    exprs = list(exprs)
    ops = OpCounter()
    before = count_ops(exprs, ops)
    if not cse:
        return Eliminated((), tuple(exprs), {}, before, before)
    reserved = set(reserved)
    taken = set(reserved)
    exprs, bindings, full = _bind_lets(exprs, lets or {}, taken, ops)
    used = set(taken)  # reserved and let names
    taken |= {n for n in (names or {}).values()}  # x0, x1, ... never collide with a name given below
    work = [body for _, body in bindings] + exprs
    replacements, reduced = sp.cse(work, symbols=_symbols(taken), order="none", list=True)
    replacements, reduced = _inline_constants(replacements, reduced)
    replacements = replacements + [(sym, body) for (sym, _), body in zip(bindings, reduced[: len(bindings)])]
    reduced = reduced[len(bindings) :]

    # Rename temporaries that stand for a named sub-expression (e.g. a built-in quantity).
    rename: dict[sp.Symbol, sp.Symbol] = {}
    for sym, sub in _topological(replacements):
        if sym in full:
            continue
        full_expr = xreplace(sub, full)
        full[sym] = full_expr
        name = (names or {}).get(full_expr)
        if name and name not in used and _usable(name):
            used.add(name)
            rename[sym] = sp.Symbol(name, real=True)
    temps: list[tuple[sp.Symbol, sp.Basic]] = []
    shapes: dict[sp.Symbol, int] = {}
    for sym, sub in _topological(replacements):
        new_sym = rename.get(sym, sym)
        temps.append((new_sym, sub.xreplace(rename)))
        shapes[new_sym] = vec.shape_of(full[sym])
    outputs = tuple(e.xreplace(rename) for e in reduced)
    after = count_ops([t[1] for t in temps]) + count_ops(outputs)
    return Eliminated(tuple(temps), outputs, shapes, before, after)
