"""Shape plumbing (casts, broadcasting, distributions drawn per element) and the
restrictions of static contexts (constants, level and distributions only)."""

from __future__ import annotations

import dataclasses

from ksimdsl.errors import Span
from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.check.context import Part


class Shapes(Part):
    """Casts, broadcasting and what static contexts may read."""

    def as_float(self, e: t.Expr) -> t.Expr:
        """`e` as float (bools are cast)."""
        if e.type.kind == "bool":
            if isinstance(e, t.Const):
                return t.Const(e.value, e.type.with_kind("float"), e.span)
            return t.Cast(e, e.type.with_kind("float"), e.span)
        return e

    def fit_shape(self, value: t.Expr, shape: tuple[int, ...], span: Span, what: str) -> t.Expr:
        """`value` (scalar or of `shape`) with scalar distributions drawn per element of `shape`."""
        if value.type.shape not in ((), shape):
            want = "a scalar" if shape == () else f"a scalar or vector[{shape[0]}]"
            self.fail(span, f"{what} needs {want}, got {value.type}")
        return self.broadcast_dists(value, shape)

    def broadcast_dists(self, e: t.Expr, shape: tuple[int, ...]) -> t.Expr:
        """Give scalar Dists (outside reductions) the context `shape`, re-typing elementwise parents."""
        if shape == ():
            return e
        if isinstance(e, t.Dist):
            return dataclasses.replace(e, type=e.type.with_shape(shape)) if e.type.is_scalar else e
        if isinstance(e, t.Unary):
            op = self.broadcast_dists(e.operand, shape)
            return dataclasses.replace(e, operand=op, type=e.type.with_shape(op.type.shape))
        if isinstance(e, t.Cast):
            op = self.broadcast_dists(e.operand, shape)
            return dataclasses.replace(e, operand=op, type=e.type.with_shape(op.type.shape))
        if isinstance(e, (t.Binary, t.Compare)):
            left = self.broadcast_dists(e.left, shape)
            right = self.broadcast_dists(e.right, shape)
            out_shape = left.type.shape or right.type.shape
            return dataclasses.replace(e, left=left, right=right, type=e.type.with_shape(out_shape))
        if isinstance(e, t.Apply) and bi.FUNCTIONS.get(e.func, None) is not None:
            if bi.FUNCTIONS[e.func].rule in ("elementwise", "minmax") and e.func not in ("reduce_min", "reduce_max"):
                args = tuple(self.broadcast_dists(a, shape) for a in e.args)
                out_shape = next((a.type.shape for a in args if a.type.shape), ())
                return dataclasses.replace(e, args=args, type=e.type.with_shape(out_shape))
        return e

    def broadcast_shape(self, a: t.Type, b: t.Type, op: str, span: Span) -> tuple[int, ...]:
        if a.shape == b.shape or b.is_scalar:
            return a.shape
        if a.is_scalar:
            return b.shape
        self.fail(span, f"elementwise '{op}' needs equal lengths or a scalar, got {a} and {b}")

    def first_dynamic(self, e: t.Expr, allowed_arrays: frozenset[str]) -> t.Expr | None:
        """The outermost named node (let, quantity) or leaf that reads what `allowed_arrays` does not allow."""

        def bad(n: t.Expr) -> bool:
            if isinstance(n, t.PhysRead):
                return n.array not in allowed_arrays
            if isinstance(n, t.RefRead):
                return "ref" not in allowed_arrays
            return isinstance(n, (t.Action, t.StateRef, t.CommandRef, t.Prev))

        clean: set[int] = set()  # nodes already searched in vain (a let used twice is searched once)

        def find(n: t.Expr) -> t.Expr | None:
            if bad(n):
                return n
            if id(n) in clean:
                return None
            for c in t.children(n):
                hit = find(c)
                if hit is not None:
                    return n if isinstance(n, (t.Let, t.Quantity)) else hit
            clean.add(id(n))
            return None

        return find(e)

    def describe(self, n: t.Expr) -> str:
        if isinstance(n, t.Let):
            return f"'{n.name}'"
        if isinstance(n, t.Quantity):
            if n.arg is None:
                return f"'{n.name}'"
            return f"{n.name}({n.arg})" if n.name in ("contact", "contact_force") else f'{n.name}("{n.arg}")'
        if isinstance(n, t.StateRef):
            return f"state '{n.name}'"
        if isinstance(n, t.CommandRef):
            return f"cmd.{n.name}"
        if isinstance(n, t.Prev):
            return "prev(...)"
        if isinstance(n, t.Action):
            return "'action'"
        return "the simulation state"

    def require_static(self, e: t.Expr, what: str, *, dists: bool = True) -> None:
        """`e` may use only constants, `level` (and distributions where `dists`)."""
        hit = self.first_dynamic(e, frozenset())
        if hit is not None:
            allowed = "numbers, `level` and distributions" if dists else "numbers and `level`"
            self.fail(hit.span, f"{what} may use only {allowed}; {self.describe(hit)} changes during an episode")

    def require_reset(self, e: t.Expr) -> None:
        hit = self.first_dynamic(e, frozenset({"qpos", "qvel", "ref"}))
        if hit is not None:
            ref = " and the reference (ref.*)" if self.cx.reference.clip is not None else ""
            self.fail(
                hit.span,
                f"{self.describe(hit)} is not available in reset; reset values may use numbers, level, "
                f"distributions{',' if ref else ' and'} the default pose (qpos, qvel, joint_pos, base_pos, ...){ref}",
            )
