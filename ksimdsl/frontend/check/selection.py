"""Selection: swizzles, `v[i]`, `v[i:j]`, `v["glob"]`, `cmd.NAME.field` and element labels."""

from __future__ import annotations

from ksimdsl.errors import Span, did_you_mean
from ksimdsl.frontend import ast
from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.check.context import Context, Ctx, Part
from ksimdsl.frontend.check.names import no_match_message
from ksimdsl.frontend.model_info import is_glob, match_names


#: What the elements of a labelled quantity are called in messages.
_LABEL_KINDS = {
    "qpos": "joint",
    "qvel": "joint",
    "qacc": "joint",
    "joint_pos": "joint",
    "joint_vel": "joint",
    "joint_acc": "joint",
    "default_joint_pos": "joint",
    "joint_lower": "joint",
    "joint_upper": "joint",
    "actuator_force": "actuator",
    "action": "actuator",
    "ref.joint_pos": "joint",
    "ref.joint_vel": "joint",
    "ref.qpos": "joint",
    "ref.qvel": "joint",
}


class Selection(Part):
    """Selections from vectors (swizzles, indices, slices, globs) and element labels."""

    def __init__(self, cx: Context):
        super().__init__(cx)
        self._labels: dict[int, tuple[t.Expr, tuple[str, ...]]] = {}  # id -> (node kept alive, labels)

    def labels(self, e: t.Expr) -> tuple[str, ...]:
        """MJCF names of the elements of `e`, or () when unknown (memoized: lets are shared)."""
        hit = self._labels.get(id(e))
        if hit is None:
            hit = self._labels[id(e)] = (e, self._find_labels(e))
        return hit[1]

    def _find_labels(self, e: t.Expr) -> tuple[str, ...]:
        if isinstance(e, t.Quantity):
            return e.labels
        if isinstance(e, (t.Let,)):
            return self.labels(e.value)
        if isinstance(e, (t.Prev,)):
            return self.labels(e.expr)
        if isinstance(e, t.Cast):
            return self.labels(e.operand)
        if isinstance(e, t.Action):
            return tuple(self.m.actuator_names)
        if isinstance(e, t.CommandRef):
            return self.cx.commands.get(e.name, ())
        if isinstance(e, t.Gather):
            base = self.labels(e.base)
            return tuple(base[i] for i in e.indices) if base else ()
        if isinstance(e, (t.Binary, t.Compare, t.Unary)):
            parts = (e.operand,) if isinstance(e, t.Unary) else (e.left, e.right)
            for p in parts:
                if p.type.shape == e.type.shape and e.type.shape:
                    labels = self.labels(p)
                    if labels:
                        return labels
        return ()

    def label_kind(self, e: t.Expr) -> str:
        """What the labels of `e` name ("joint", "actuator", "field"), for messages."""
        while True:
            if isinstance(e, t.Let):
                e = e.value
            elif isinstance(e, t.Prev):
                e = e.expr
            elif isinstance(e, t.Cast):
                e = e.operand
            elif isinstance(e, t.Gather):
                e = e.base
            else:
                break
        if isinstance(e, t.Quantity):
            return _LABEL_KINDS.get(e.name, "element")
        if isinstance(e, t.CommandRef):
            return "field"
        if isinstance(e, t.Action):
            return "actuator"
        return "element"

    def swizzle(self, length: int, letters: str, span: Span, what: str) -> tuple[tuple[int, ...], bool]:
        if not letters or any(c not in bi.SWIZZLE for c in letters) or len(letters) > 4:
            self.fail(span, f"unknown field '.{letters}' of {what}; swizzles are made of x, y, z, w")
        positions = tuple(bi.SWIZZLE[c] for c in letters)
        need = max(positions) + 1
        if length == 0:
            self.fail(span, f"'.{letters}' selects from a vector, but {what} is a scalar")
        if need > length:
            self.fail(span, f"'.{letters}' needs a vector of at least {need} elements, got vector[{length}]")
        return positions, len(letters) == 1

    def select_positions(
        self, length: int, labels: tuple[str, ...], sel: ast.Expr | ast.Slice, what: str, kind: str
    ) -> tuple[tuple[int, ...], bool]:
        """Positions selected by `["glob"]`, `[i]` or `[i:j]` in a vector of `length`; (positions, scalar)."""
        if isinstance(sel, ast.Str):
            if not labels:
                self.fail(
                    sel.span,
                    f"cannot select from {what} by name; name selection works on joint_pos, joint_vel, qpos, qvel, "
                    "actuator_force, action, default_joint_pos, joint_lower, joint_upper and commands",
                )
            positions = match_names(sel.value, labels)
            if not positions:
                self.fail(sel.span, no_match_message(sel.value, labels, kind))
            single = not is_glob(sel.value) and len(positions) == 1
            return positions, single
        if isinstance(sel, ast.Slice):
            lo = 0 if sel.lo is None else self.cx.consts.const_int(sel.lo, "a slice bound")
            hi = length if sel.hi is None else self.cx.consts.const_int(sel.hi, "a slice bound")
            lo2 = lo + length if lo < 0 else lo
            hi2 = hi + length if hi < 0 else hi
            if not (0 <= lo2 < hi2 <= length):
                self.fail(sel.span, f"slice {lo}:{hi} is empty or out of range for {what} (vector[{length}])")
            return tuple(range(lo2, hi2)), False
        i = self.cx.consts.const_int(sel, "an index")
        j = i + length if i < 0 else i
        if not 0 <= j < length:
            self.fail(sel.span, f"index {i} is out of range for {what} (vector[{length}])")
        return (j,), True

    def select(
        self, indices: tuple[int, ...], labels: tuple[str, ...], sel: ast.Expr | ast.Slice, what: str, kind: str
    ) -> tuple[tuple[int, ...], bool]:
        positions, scalar = self.select_positions(len(indices), labels, sel, what, kind)
        return tuple(indices[p] for p in positions), scalar

    def gather(self, base: t.Expr, positions: tuple[int, ...], scalar: bool, span: Span) -> t.Expr:
        typ = base.type.with_shape(() if scalar else (len(positions),))
        if isinstance(base, t.Const):
            vals = tuple(base.values[p] for p in positions)
            return t.Const(vals[0] if scalar else vals, typ, span)
        return t.Gather(base, positions, typ, span)

    def attr(self, node: ast.Attr, ctx: Ctx) -> t.Expr:
        if isinstance(node.base, ast.Name) and node.base.id == "ref":
            return self.cx.reference.quantity(node)
        if isinstance(node.base, ast.Name) and node.base.id == "cmd" and "cmd" not in self.cx.lets:
            if node.name not in self.cx.commands:
                self.fail(
                    node.name_span,
                    f"unknown command '{node.name}'" + did_you_mean(node.name, self.cx.commands),
                    self.cx.exprs.commands_note(),
                )
            size = len(self.cx.commands[node.name])
            return t.CommandRef(node.name, t.Type("float", (size,)), node.span)
        base = self.cx.exprs.expr(node.base, ctx)
        fields = self.labels(base) if isinstance(base, t.CommandRef) else ()
        if node.name in fields:
            return self.gather(base, (fields.index(node.name),), True, node.span)
        length = base.type.shape[0] if base.type.shape else 0
        positions, scalar = self.swizzle(length, node.name, node.name_span, self.what(node.base))
        return self.gather(base, positions, scalar, node.span)

    def what(self, node: ast.Expr) -> str:
        if isinstance(node, ast.Name):
            return f"'{node.id}'"
        if isinstance(node, ast.Attr):
            return f"'{self.what(node.base).strip(chr(39))}.{node.name}'"
        return "this expression"

    def index(self, node: ast.Index, ctx: Ctx) -> t.Expr:
        base = self.cx.exprs.expr(node.base, ctx)
        if base.type.is_scalar:
            self.fail(node.span, f"cannot index {self.what(node.base)}: it is a {base.type}")
        positions, scalar = self.select_positions(
            base.type.shape[0], self.labels(base), node.index, self.what(node.base), self.label_kind(base)
        )
        return self.gather(base, positions, scalar, node.span)
