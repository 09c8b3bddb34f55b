"""Walks over sympy expressions as DAGs: every distinct node once.

A task's `let`s share sub-expressions (`let b = a * a + a`), so the sympy
expression of a deep chain is a DAG whose tree has exponentially many nodes.
sympy's own walks (`preorder_traversal`, `atoms`, `count_ops`, `xreplace`)
follow the tree, with multiplicity; the compiler uses these instead, which
cost time linear in the number of distinct nodes (nodes are told apart by
sympy equality, as `sympy.cse` does).

* `unique_nodes(exprs)`: the distinct nodes, in the order of their first
  occurrence in `preorder_traversal` (so "the first one wins" bookkeeping
  gives the same result as a tree walk);
* `symbols_in(expr, among)`: `expr.free_symbols & among`;
* `tree_size(expr, memo)`: the number of nodes of the tree, with multiplicity;
* `OpCounter`: `sympy.count_ops` (a tree count, with multiplicity) computed
  exactly for ordinary expressions and compositionally for huge trees;
* `power`, `rebuild`: build a node without sympy's whole-tree simplifications of powers;
* `xreplace(expr, rule, memo)`: `expr.xreplace(rule)`, each distinct node rebuilt once.
"""

from __future__ import annotations

from collections import ChainMap
from typing import Callable, Container, Iterable, Iterator, Mapping, MutableMapping

import sympy as sp

__all__ = ["unique_nodes", "node_args", "symbols_in", "tree_size", "OpCounter", "power", "rebuild", "xreplace", "EXACT_OPS_LIMIT"]

#: Trees up to this many nodes have their ops counted exactly by `sympy.count_ops`.
EXACT_OPS_LIMIT = 10_000  # (the largest expression of a shipped task has under 200 nodes)


def node_args(node: sp.Basic) -> tuple[sp.Basic, ...]:
    """The children of `node` in the order `sympy.preorder_traversal` visits them."""
    args = getattr(node, "_argset", None)  # a LatticeOp (Min, Max, And, Or) keeps its args as a set
    return tuple(args) if args is not None else node.args


def unique_nodes(exprs: Iterable[sp.Basic], seen: set[sp.Basic] | None = None) -> Iterator[sp.Basic]:
    """Every distinct node of `exprs` once, in preorder of first occurrence.

    Nodes already in `seen` (and so everything below them, for a `seen` filled
    by earlier walks) are skipped; `seen` is updated as the walk goes.
    """
    seen = set() if seen is None else seen
    stack = list(exprs)[::-1]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        yield node
        if isinstance(node, sp.Basic):
            stack.extend(node_args(node)[::-1])


def symbols_in(expr: sp.Basic, among: Container[sp.Basic]) -> set[sp.Basic]:
    """The symbols of `among` that occur free in `expr` (`expr.free_symbols & among`, each shared node once).

    (For symbols that no construct binds: the compiler's own let and temporary symbols.
    An array's name inside `qpos[3]` is not a free symbol, as in sympy.)
    """
    found: set[sp.Basic] = set()
    seen: set[sp.Basic] = set()
    stack = [expr]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node in among and isinstance(node, sp.Symbol):
            found.add(node)
        elif not isinstance(node, sp.IndexedBase):
            stack.extend(node.args)
    return found


def _postorder(
    expr: sp.Basic, done: Mapping[sp.Basic, object], descend: Callable[[sp.Basic], bool] | None = None
) -> Iterator[sp.Basic]:
    """Distinct nodes of `expr` not in `done`, children before parents (iteratively).

    The children of a node for which `descend` is false are not visited.
    """
    stack: list[tuple[sp.Basic, bool]] = [(expr, False)]
    while stack:
        node, expanded = stack.pop()
        if node in done:
            continue
        if expanded or (descend is not None and not descend(node)):
            yield node
            continue
        stack.append((node, True))
        stack.extend((a, False) for a in node.args if a not in done)


def tree_size(expr: sp.Basic, memo: MutableMapping[sp.Basic, int]) -> int:
    """Number of nodes of `expr` as a tree (shared sub-expressions counted each time)."""
    for node in _postorder(expr, memo):
        memo[node] = 1 + sum(memo[a] for a in node.args)
    return memo[expr]


class OpCounter:
    """`sympy.count_ops` of expressions, memoized per distinct node.

    A tree of at most `limit` nodes is counted by `sympy.count_ops` itself; a
    larger one (only a task whose lets share sub-expressions deeply has one)
    as the sum over its children plus the node's own ops (`count_ops` of the
    node with its compound children stood in for by symbols), which is close
    to the tree count without walking the tree.
    """

    def __init__(self, limit: int = EXACT_OPS_LIMIT) -> None:
        self.limit = limit
        self._sizes: dict[sp.Basic, int] = {}
        self._ops: dict[sp.Basic, int] = {}

    def __call__(self, expr: sp.Basic) -> int:
        hit = self._ops.get(expr)
        if hit is not None:
            return hit
        if tree_size(expr, self._sizes) <= self.limit:
            self._ops[expr] = int(sp.count_ops(expr))
            return self._ops[expr]
        for node in _postorder(expr, self._ops, lambda n: self._sizes[n] > self.limit):
            if self._sizes[node] <= self.limit:
                self._ops[node] = int(sp.count_ops(node))
            else:
                self._ops[node] = _own_ops(node) + sum(self._ops[a] for a in node.args)
        return self._ops[expr]

    def total(self, exprs: Iterable[sp.Basic]) -> int:
        return sum(self(e) for e in exprs)


def _own_ops(node: sp.Basic) -> int:
    """`count_ops` of `node` alone: its compound children replaced by fresh symbols."""
    stand_in = {a: sp.Dummy(real=True) for a in node.args if a.args and not isinstance(a, sp.IndexedBase)}
    try:
        return int(sp.count_ops(node.xreplace(stand_in)))
    except Exception:  # noqa: BLE001 - a node that does not take a symbol argument (Piecewise, ...)
        return 1


def power(base: sp.Basic, exp: sp.Basic, sizes: MutableMapping[sp.Basic, int]) -> sp.Basic:
    """`base**exp`, left unevaluated when either is a huge tree.

    (sympy's `Pow` walks its exponent whole to simplify it, and combines a
    power of a power into one, which walks that one's exponent: exponential
    time on a DAG. Ordinary expressions are evaluated as always.)
    """
    if tree_size(base, sizes) > EXACT_OPS_LIMIT or tree_size(exp, sizes) > EXACT_OPS_LIMIT:
        return sp.Pow(base, exp, evaluate=False)
    return base**exp


def rebuild(node: sp.Basic, args: Iterable[sp.Basic], sizes: MutableMapping[sp.Basic, int]) -> sp.Basic:
    """`node.func(*args)`, powers through `power`."""
    if isinstance(node, sp.Pow):
        return power(*args, sizes)
    return node.func(*args)


def xreplace(expr: sp.Basic, rule: Mapping[sp.Basic, sp.Basic], memo: dict[sp.Basic, sp.Basic] | None = None) -> sp.Basic:
    """`expr.xreplace(rule)`, rebuilding each distinct node once (through `rebuild`).

    `memo` (the rebuilt nodes) may be shared between calls with the same `rule`.
    """
    if not rule:
        return expr
    table = ChainMap({} if memo is None else memo, rule)  # (new entries go to the memo)
    sizes: dict[sp.Basic, int] = {}
    for node in _postorder(expr, table):
        args = node.args
        new = tuple(table.get(a, a) for a in args)
        table[node] = rebuild(node, new, sizes) if any(n is not a for n, a in zip(new, args)) else node
    return table[expr]
