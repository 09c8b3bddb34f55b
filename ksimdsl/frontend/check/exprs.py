"""Typing expressions: names, vectors and operators (calls and selections have their own parts)."""

from __future__ import annotations

from typing import Any, Callable, NoReturn

from ksimdsl.errors import InternalCompilerError, did_you_mean
from ksimdsl.frontend import ast
from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.check.context import Context, Ctx, Part, Reported
from ksimdsl.frontend.check.folding import fold_dag

#: Deepest typed expression accepted, counting through the lets it uses. The
#: lowering and sympy's printers recurse over it; this keeps them far from
#: Python's recursion limit (a chain of lets can otherwise nest without bound).
MAX_DEPTH = 100


class Depths:
    """The depth of typed expressions (a leaf is 1), through let values; iterative, memoized."""

    def __init__(self) -> None:
        self._memo: dict[int, tuple[t.Expr, int]] = {}  # id -> (node kept alive, depth)

    def __call__(self, e: t.Expr) -> int:
        return fold_dag(e, self._memo, t.children, lambda _, kids: 1 + max(kids, default=0))


class Exprs(Part):
    """Types expressions: the dispatch on node kind, names, vectors and operators."""

    def __init__(self, cx: Context):
        super().__init__(cx)
        self.depth = Depths()
        self._typers: dict[type, Callable[[Any, Ctx], t.Expr]] = {
            ast.Num: lambda node, ctx: cx.consts.num(node),
            ast.Name: self.name,
            ast.Attr: cx.select.attr,
            ast.Index: cx.select.index,
            ast.Call: cx.calls.call,
            ast.Vector: self.vector,
            ast.Unary: self.unary,
            ast.Binary: self.binary,
        }

    def expr(self, node: ast.Expr, ctx: Ctx) -> t.Expr:
        """Type one expression (raises Reported after recording an error)."""
        typer = self._typers.get(type(node))
        if typer is None:
            self._not_a_value(node)
        typed = typer(node, ctx)
        if self.depth(typed) > MAX_DEPTH:
            self.fail(
                node.span,
                f"expression nested too deeply (more than {MAX_DEPTH} levels, counting the lets it uses)",
            )
        self.cx.units.of(node)
        return typed

    def float_expr(self, node: ast.Expr, ctx: Ctx) -> t.Expr:
        """`expr`, bools cast to float."""
        return self.cx.shapes.as_float(self.expr(node, ctx))

    def _not_a_value(self, node: ast.Expr) -> NoReturn:
        if isinstance(node, ast.Str):
            self.fail(
                node.span,
                'a string is not a value; strings name model objects, as in sensor("imu") or joint_pos["knee_*"]',
            )
        if isinstance(node, ast.Range):
            self.fail(node.span, "a range lo..hi is only allowed after `latency` and `delay`")
        raise InternalCompilerError(
            f"unknown expression node {type(node).__name__}", getattr(node, "span", None), self.cx.source
        )

    def name(self, node: ast.Name, ctx: Ctx) -> t.Expr:
        n = node.id
        here = (node.span.line, node.span.col)
        if n in self.cx.lets:
            entry = self.cx.lets[n]
            if entry.failed:
                raise Reported
            if (entry.span.line, entry.span.col) > here:
                self.fail(node.span, f"'{n}' is used before its `let` (line {entry.span.line})")
            if entry.value is None:
                self.fail(node.span, f"'{n}' is used in its own definition")
            return t.Let(n, entry.value, entry.value.type, node.span)
        if n in self.cx.states:
            st = self.cx.states[n]
            if not ctx.state_update and (st.span.line, st.span.col) > here:
                self.fail(node.span, f"state '{n}' is used before its declaration (line {st.span.line})")
            return t.StateRef(n, st.type, node.span)
        if n in bi.QUANTITIES:
            return self.cx.lookups.quantity(n, node.span)
        if n == "cmd":
            self.fail(node.span, "write cmd.NAME for a command", self.commands_note())
        if n == "ref":
            self.fail(
                node.span,
                "write ref.NAME for the reference motion (ref.joint_pos, ref.base_pos, ref.phase, ...)",
                "ref." + ", ref.".join(bi.REF_QUANTITIES),
            )
        if n in bi.FUNCTIONS or n in bi.LOOKUPS or n in bi.DISTRIBUTIONS or n == "prev":
            self.fail(node.span, f"'{n}' is a function; call it as {n}(...)")
        candidates = [*bi.QUANTITIES, *self.cx.lets, *self.cx.states, "cmd"]
        self.fail(node.span, f"unknown name '{n}'" + did_you_mean(n, candidates))

    def commands_note(self) -> str:
        return f"commands: {', '.join(self.cx.commands)}" if self.cx.commands else "the task declares no command"

    def vector(self, node: ast.Vector, ctx: Ctx) -> t.Expr:
        if not node.items:
            self.fail(node.span, "an empty vector has no use")
        items = [self.expr(i, ctx) for i in node.items]
        kinds = {i.type.kind for i in items}
        if kinds == {"bool"}:
            kind = "bool"
        else:
            kind = "float"
            items = [self.cx.shapes.as_float(i) for i in items]
        size = sum(i.type.size for i in items)
        typ = t.Type(kind, (size,))
        if all(isinstance(i, t.Const) for i in items):
            return t.Const(tuple(v for i in items for v in i.values), typ, node.span)  # type: ignore[union-attr]
        return t.Concat(tuple(items), typ, node.span)

    def unary(self, node: ast.Unary, ctx: Ctx) -> t.Expr:
        operand = self.expr(node.operand, ctx)
        if node.op == "not":
            if operand.type.kind != "bool":
                self.fail(node.operand.span, f"`not` needs a bool, got {operand.type}")
            if isinstance(operand, t.Const):
                return t.Const(self.map_const(operand, lambda x: 1.0 - x), operand.type, node.span)
            return t.Logic("not", (operand,), operand.type, node.span)
        if node.op == "-":
            if operand.type.kind == "bool":
                self.fail(node.operand.span, "cannot negate a bool; use `not`")
            if isinstance(operand, t.Const):
                return t.Const(self.map_const(operand, lambda x: -x), operand.type, node.span)
            return t.Unary("-", operand, operand.type, node.span)
        raise InternalCompilerError(f"unknown unary operator {node.op!r}", node.span, self.cx.source)

    @staticmethod
    def map_const(c: t.Const, f: Callable[[float], float]) -> float | tuple[float, ...]:
        return tuple(f(v) for v in c.value) if isinstance(c.value, tuple) else f(c.value)

    def binary(self, node: ast.Binary, ctx: Ctx) -> t.Expr:
        left = self.expr(node.left, ctx)
        right = self.expr(node.right, ctx)
        op = node.op
        if op in ("and", "or"):
            for side, e in ((node.left, left), (node.right, right)):
                if e.type.kind != "bool":
                    self.fail(side.span, f"`{op}` needs bools, got {e.type}; compare it first, e.g. x > 0")
            shape = self.cx.shapes.broadcast_shape(left.type, right.type, op, node.span)
            return t.Logic(op, (left, right), t.Type("bool", shape), node.span)
        if op in ("<", "<=", ">", ">=", "==", "!="):
            left, right = self.cx.shapes.as_float(left), self.cx.shapes.as_float(right)
            shape = self.cx.shapes.broadcast_shape(left.type, right.type, op, node.span)
            return t.Compare(op, left, right, t.Type("bool", shape), node.span)
        if op in ("+", "-", "*", "/", "^"):
            left, right = self.cx.shapes.as_float(left), self.cx.shapes.as_float(right)
            shape = self.cx.shapes.broadcast_shape(left.type, right.type, op, node.span)
            typ = t.Type("float", shape)
            if isinstance(left, t.Const) and isinstance(right, t.Const):
                return self.cx.consts.fold(op, left, right, typ, node)
            out = t.Binary(op, left, right, typ, node.span)
            self.cx.consts.require_defined(out)
            return out
        raise InternalCompilerError(f"unknown binary operator {op!r}", node.span, self.cx.source)
