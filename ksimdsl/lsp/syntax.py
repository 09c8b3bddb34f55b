"""Walking the untyped AST (`ksimdsl.frontend.ast`) for the language server.

The checker already walks the tree to type it; the server only needs to know
where things are: every expression node of a statement, the node under a
position, and the names a statement declares. Nothing here knows the
language's rules beyond the shape of the tree.
"""

from __future__ import annotations

from typing import Iterator

from ksimdsl.errors import Span
from ksimdsl.frontend import ast

__all__ = ["Pos", "contains", "statement_exprs", "walk_expr", "nodes_at", "span_size"]

#: A 1-based (line, column) position, the convention of `ksimdsl.errors.Span`.
Pos = tuple[int, int]


def contains(span: Span | None, pos: Pos, *, end_inclusive: bool = False) -> bool:
    """True if `pos` lies in `span` (end exclusive unless `end_inclusive`)."""
    if span is None:
        return False
    start, end = (span.line, span.col), (span.end_line, span.end_col)
    return start <= pos < end or (end_inclusive and pos == end)


def span_size(span: Span) -> tuple[int, int]:
    """A sort key: smaller spans first (lines, then columns)."""
    return (span.end_line - span.line, span.end_col - span.col)


def _opt(*nodes: object) -> Iterator[ast.Expr]:
    for n in nodes:
        if n is not None:
            yield n  # type: ignore[misc]


def _setting_values(settings: tuple[ast.Setting, ...]) -> Iterator[ast.Expr]:
    for s in settings:
        yield s.value


def _assign_exprs(assigns: tuple[ast.Assign, ...]) -> Iterator[ast.Expr]:
    for a in assigns:
        yield a.target
        yield a.value


def statement_exprs(stmt: ast.Statement) -> Iterator[ast.Expr]:
    """The top-level expressions of a statement (targets of assignments included)."""
    if isinstance(stmt, (ast.SettingsStmt, ast.PolicyStmt)):
        yield from _setting_values(stmt.settings)
    elif isinstance(stmt, ast.EpisodeStmt):
        yield stmt.length
    elif isinstance(stmt, ast.ModelStmt):
        for part in stmt.parts:
            yield from _setting_values(getattr(part, "settings", ()))
            if isinstance(part, ast.ModelPose):
                yield from (j.value for j in part.joints)
            elif isinstance(part, ast.ModelCollide):
                yield part.geoms
            elif isinstance(part, ast.ModelTerrain):
                for tile in part.tiles:
                    yield from _setting_values(tile.settings)
    elif isinstance(stmt, ast.ActuatorsStmt):
        yield from _setting_values(stmt.settings)
        yield from _assign_exprs(stmt.overrides)
        if stmt.latency is not None:
            yield stmt.latency.range
        if stmt.zero_offset is not None:
            yield stmt.zero_offset.dist
    elif isinstance(stmt, ast.LetStmt):
        yield stmt.value
    elif isinstance(stmt, ast.StateStmt):
        yield from _opt(stmt.size, stmt.init, stmt.update)
    elif isinstance(stmt, ast.CommandStmt):
        yield from _opt(stmt.resample_every)
        yield from _setting_values(stmt.settings)
        for f in stmt.fields:
            yield f.dist
    elif isinstance(stmt, ast.ObserveStmt):
        for item in stmt.items:
            if isinstance(item, ast.ObsItem):
                yield item.value
                yield from _opt(item.noise.dist if item.noise else None, item.bias, item.delay, item.history)
    elif isinstance(stmt, ast.RewardStmt):
        for r in stmt.terms:
            yield r.weight
            yield r.value
    elif isinstance(stmt, ast.TerminateStmt):
        for term in stmt.terms:
            yield term.cond
    elif isinstance(stmt, ast.MetricStmt):
        for item in stmt.items:
            yield item.value
    elif isinstance(stmt, (ast.RandomizeStmt, ast.ResetStmt)):
        yield from _assign_exprs(stmt.assigns)
    elif isinstance(stmt, ast.EventStmt):
        yield stmt.every
        yield from _assign_exprs(stmt.assigns)
    elif isinstance(stmt, ast.CurriculumStmt):
        yield from stmt.args
        yield from _setting_values(stmt.settings)


def _children(node: object) -> tuple[object, ...]:
    if isinstance(node, ast.Vector):
        return node.items
    if isinstance(node, ast.Range):
        return (node.lo, node.hi)
    if isinstance(node, ast.Call):
        return (*node.args, *(k.value for k in node.kwargs))
    if isinstance(node, ast.Attr):
        return (node.base,)
    if isinstance(node, ast.Index):
        return (node.base, node.index)
    if isinstance(node, ast.Slice):
        return tuple(x for x in (node.lo, node.hi) if x is not None)
    if isinstance(node, ast.Unary):
        return (node.operand,)
    if isinstance(node, ast.Binary):
        return (node.left, node.right)
    return ()


def walk_expr(node: object) -> Iterator[object]:
    """`node` and every sub-expression (pre-order, iterative)."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(_children(n)))


def nodes_at(module: ast.Module, pos: Pos, *, end_inclusive: bool = False) -> list[object]:
    """The expression nodes containing `pos`, outermost first (with their parents' order kept)."""
    out: list[object] = []
    for stmt in module.statements:
        if not contains(stmt.span, pos, end_inclusive=True):
            continue
        for root in statement_exprs(stmt):
            stack = [root]
            while stack:
                n = stack.pop()
                if contains(getattr(n, "span", None), pos, end_inclusive=end_inclusive):
                    out.append(n)
                    stack.extend(_children(n))
    return out
