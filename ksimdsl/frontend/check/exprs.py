"""Typing expressions: names, vectors and operators (calls and selections have their own parts)."""

from __future__ import annotations

from typing import Callable

from ksimdsl.errors import InternalCompilerError, did_you_mean
from ksimdsl.frontend import ast
from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.check.context import Ctx, Part, Reported


class Exprs(Part):
    """Types expressions: the dispatch on node kind, names, vectors and operators."""

    def expr(self, node: ast.Expr, ctx: Ctx) -> t.Expr:
        """Type one expression (raises Reported after recording an error)."""
        if isinstance(node, ast.Num):
            return self.cx.consts.num(node)
        if isinstance(node, ast.Name):
            return self.name(node, ctx)
        if isinstance(node, ast.Attr):
            return self.cx.select.attr(node, ctx)
        if isinstance(node, ast.Index):
            return self.cx.select.index(node, ctx)
        if isinstance(node, ast.Call):
            return self.cx.calls.call(node, ctx)
        if isinstance(node, ast.Vector):
            return self.vector(node, ctx)
        if isinstance(node, ast.Unary):
            return self.unary(node, ctx)
        if isinstance(node, ast.Binary):
            return self.binary(node, ctx)
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
