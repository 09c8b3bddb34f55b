"""A stable, readable text dump of a parsed `.ksim` file (for golden tests and debugging).

Statements and their items print one node per line, with spans and their
scalar fields; expressions print inline as S-expressions:

    LetStmt @16:1-24 name='height'@16:5-11 value=(. base_pos z)
    RewardStmt @40:1-46:88
      terms:
        RewardTerm @41:5-33 name='alive'@41:5-10 weight=1.0 value=1

Spans print as `@LINE:COL-END_COL` (same line) or `@LINE:COL-END_LINE:END_COL`;
a field's `<field>_span` prints right after the field's value.

Expression forms: `1`, `0.5`, `10ms`, `"glob"`, `name`, `[a b]` (vector),
`(.. lo hi)` (range), `(f a b key=v)` (call), `(. base name)` (attribute),
`([] base index)` (index), `(: lo hi)` (slice, `_` for a missing bound),
`(- x)` / `(not x)` (unary), `(op left right)` (binary).
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass

from ksimdsl.errors import Span
from ksimdsl.frontend import ast

__all__ = ["dump", "dump_expr", "format_span"]

_EXPR_TYPES = (
    ast.Num,
    ast.Str,
    ast.Name,
    ast.Vector,
    ast.Range,
    ast.Call,
    ast.Attr,
    ast.Index,
    ast.Slice,
    ast.Unary,
    ast.Binary,
)


def format_span(span: Span) -> str:
    """`@3:5-11` on one line, `@3:5-7:2` across lines."""
    if span.end_line == span.line:
        return f"@{span.line}:{span.col}-{span.end_col}"
    return f"@{span.line}:{span.col}-{span.end_line}:{span.end_col}"


def dump_expr(expr: ast.Expr | ast.Slice | None) -> str:
    """One expression as an S-expression (no spans)."""
    if expr is None:
        return "_"
    if isinstance(expr, ast.Num):
        number = str(int(expr.value)) if expr.is_int and expr.value.is_integer() else repr(expr.value)
        return number + (expr.unit or "")
    if isinstance(expr, ast.Str):
        return f'"{expr.value}"'
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Vector):
        return "[" + " ".join(dump_expr(item) for item in expr.items) + "]"
    if isinstance(expr, ast.Range):
        return f"(.. {dump_expr(expr.lo)} {dump_expr(expr.hi)})"
    if isinstance(expr, ast.Call):
        keywords = (f"{k.name}={dump_expr(k.value)}" for k in expr.kwargs)
        parts = [expr.func, *(dump_expr(a) for a in expr.args), *keywords]
        return "(" + " ".join(parts) + ")"
    if isinstance(expr, ast.Attr):
        return f"(. {dump_expr(expr.base)} {expr.name})"
    if isinstance(expr, ast.Index):
        return f"([] {dump_expr(expr.base)} {dump_expr(expr.index)})"
    if isinstance(expr, ast.Slice):
        return f"(: {dump_expr(expr.lo)} {dump_expr(expr.hi)})"
    if isinstance(expr, ast.Unary):
        return f"({expr.op} {dump_expr(expr.operand)})"
    if isinstance(expr, ast.Binary):
        return f"({expr.op} {dump_expr(expr.left)} {dump_expr(expr.right)})"
    raise TypeError(f"not an expression: {type(expr).__name__}")


def dump(module: ast.Module, spans: bool = True) -> str:
    """The whole module, one statement (and one item of a block) per line."""
    lines: list[str] = []
    for statement in module.statements:
        _dump_node(statement, 0, lines, spans)
    return "\n".join(lines)


def _dump_node(node: object, depth: int, lines: list[str], spans: bool) -> None:
    pad = "  " * depth
    head = [type(node).__name__]
    if spans and getattr(node, "span", None) is not None:
        head.append(format_span(node.span))
    children: list[tuple[str, object]] = []
    names = {f.name for f in fields(node)}
    for f in fields(node):
        if f.name == "span" or (f.name.endswith("_span") and f.name[: -len("_span")] in names):
            continue
        value = getattr(node, f.name)
        if isinstance(value, Span) or (value is None and f.name == "from_reference"):
            if value is not None:  # a line such as `from reference`, by its position
                head.append(f"{f.name}{format_span(value) if spans else ''}")
            continue
        if isinstance(value, tuple) and value and not isinstance(value[0], _EXPR_TYPES):
            children.append((f.name, value))
            continue
        if is_dataclass(value) and not isinstance(value, _EXPR_TYPES):
            children.append((f.name, (value,)))
            continue
        text = f"{f.name}={_scalar(value)}"
        own_span = getattr(node, f"{f.name}_span", None)
        if spans and own_span is not None:
            text += format_span(own_span)
        head.append(text)
    lines.append(pad + " ".join(head))
    for name, items in children:
        lines.append(f"{pad}  {name}:")
        for item in items:
            _dump_node(item, depth + 2, lines, spans)


def _scalar(value: object) -> str:
    if isinstance(value, _EXPR_TYPES):
        return dump_expr(value)
    if isinstance(value, tuple):
        return "(" + " ".join(_scalar(v) for v in value) + ")"
    return repr(value)
