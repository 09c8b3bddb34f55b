"""Lower typed expressions (`ksimdsl.frontend.typed`) to `vec.Val`s, for one phase.

`Lowerer.lower(expr)` maps every node kind to sympy: physics reads by name
(`qpos[3]`, `xpos[1, 2]`, `qvel[6:27]`), per-env memory through the
`MemLayout`, random draws through the phase's `Draws`. Along the way it
records where things come from, for the generated code's comments: which
task line each draw feeds, which definition each folded constant or gather
index belongs to (`origins`), and the task line of each `let` (`let_spans`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator

import sympy as sp

from ksimdsl.errors import InternalCompilerError, KsimError, Source, Span
from ksimdsl.frontend import typed as T
from ksimdsl.frontend.builtins import INFINITE_LIMITS_NOTE
from ksimdsl.ir import vec
from ksimdsl.ir.arrays import Draws, MemLayout, ident, num
from ksimdsl.ir.dag import power, unique_nodes
from ksimdsl.ir.formulas import angle, cross, norm2, quat_rotate, quat_rotate_inv, tolerance, where
from ksimdsl.ir.program import LEVEL, TIME, Origin
from ksimdsl.ir.reference import ReferenceReader
from ksimdsl.ir.vec import SMALL, Val

__all__ = ["Lowerer"]


_COMPARE = {"<": sp.Lt, "<=": sp.Le, ">": sp.Gt, ">=": sp.Ge, "==": sp.Eq, "!=": sp.Ne}
_ELEMENTWISE: dict[str, Callable[[sp.Basic], sp.Basic]] = {
    "abs": sp.Abs,
    "sqrt": sp.sqrt,
    "exp": sp.exp,
    "log": sp.log,
    "sin": sp.sin,
    "cos": sp.cos,
    "tanh": sp.tanh,
}


class Lowerer:
    """Lowers typed expressions to `Val`s for one phase.

    `mem` is the task's memory layout, `draws` the phase's draw allocator;
    `first` the first-step flag as a sympy boolean (None in reset).
    """

    def __init__(self, task: T.CheckedTask, mem: MemLayout, draws: Draws, first: sp.Basic | None) -> None:
        self.task = task
        self.mem = mem
        self.draws = draws
        self.first = first
        self.names: dict[sp.Basic, str] = {}  # built-in quantities: name a CSE temporary if one matches
        self.lets: dict[sp.Basic, str] = {}  # `let` definitions: always a named variable
        self.let_spans: dict[str, Span] = {}  # variable name of a `let` -> its definition
        self.origins: dict[object, Origin] = {}  # constant arrays / gather indices -> their definition
        self._memo: dict[int, tuple[T.Expr, Val]] = {}
        self._claimed: set[sp.Basic] = set()  # sympy nodes whose origins `claim` recorded
        self._sizes: dict[sp.Basic, int] = {}  # tree sizes (see `dag.tree_size`)
        self._source: Source | None = None
        self._owners: list[Origin] = [Origin("const", None)]
        self._let_defs = {d.name: d.span for d in task.lets}
        self.ref: ReferenceReader | None = None  # reads `ref.*` where this phase's reference is

    def read_reference_at(self, reader: "ReferenceReader") -> None:
        """Read `ref.*` with `reader` (at the phase's reference position) from now on."""
        self.ref = reader
        for expr, name in reader.names().items():
            self.names.setdefault(expr, name)

    # ------------------------------------------------------------ provenance

    @contextlib.contextmanager
    def at(self, owner: str, span: Span | None) -> Iterator[None]:
        """Lower inside the definition `owner` (a name for its constants) written at `span`."""
        self._owners.append(Origin(owner, span if span is not None else self._owners[-1].span))
        try:
            yield
        finally:
            self._owners.pop()

    @property
    def here(self) -> Origin:
        """The innermost definition being lowered."""
        return self._owners[-1]

    def claim(self, val: Val) -> Val:
        """Attribute the constant arrays and gather indices inside `val` to the current definition.

        (The first definition wins: an anonymous constant is named after it, a named one quotes its line.)
        """
        origin = self.here
        # A node claimed before had its whole subtree claimed then: its walk is skipped.
        for node in unique_nodes(val.items, self._claimed):
            if isinstance(node, vec.ConstArr):
                self.origins.setdefault(node, origin)
            elif isinstance(node, vec.ArrGather):
                self.origins.setdefault(node.indices, origin)
        return val

    def take(self, kind: str, size: int | None, span: Span | None = None) -> Val:
        """Fresh draws (see `Draws.take`) feeding `span` (default: the current definition)."""
        return self.draws.take(kind, size, span if span is not None else self.here.span)

    def _text(self, span: Span | None) -> str:
        """The task text of a one-line span ("" if unknown)."""
        lines = self.task.source_text.splitlines()
        if span is None or span.end_line != span.line or not 1 <= span.line <= len(lines):
            return ""
        return lines[span.line - 1][span.col - 1 : span.end_col - 1]

    # ------------------------------------------------------------ errors

    def error(self, span: Span | None, message: str, *notes: str) -> KsimError:
        if self._source is None:
            try:
                text = Path(self.task.source_path).read_text()
            except OSError:
                text = ""
            self._source = Source(self.task.source_path, text)
        return KsimError.at(self._source, span, message, *notes)

    # ------------------------------------------------------------ naming

    def _name(self, val: Val, name: str, is_let: bool) -> None:
        items = val.items
        if len(items) == 1:
            labels = [name]
        elif len(items) == 4 and "quat" in name:
            labels = [f"{name}_{c}" for c in "wxyz"]
        elif len(items) == 3:
            labels = [f"{name}_{c}" for c in "xyz"]
        else:
            labels = [f"{name}_{i}" for i in range(len(items))]
        for item, label in zip(items, labels):
            if item.is_Atom or isinstance(item, (sp.Indexed, vec.ArrSlice, vec.ArrGather, vec.ConstArr, vec.Fill)):
                continue
            if is_let:
                self.lets.setdefault(item, label)
                span = self._let_defs.get(name)
                if span is not None:
                    self.let_spans.setdefault(label, span)
            elif item not in self.names:
                self.names[item] = label

    # ------------------------------------------------------------ expressions

    def lower(self, node: T.Expr) -> Val:
        hit = self._memo.get(id(node))
        if hit is not None and hit[0] is node:
            return hit[1]
        if isinstance(node, (T.Let, T.Quantity)):
            with self.at(_describe_named(node), self._let_defs.get(node.name) if isinstance(node, T.Let) else None):
                val = self.claim(self._lower(node))
        else:
            val = self._lower(node)
        if val.packed and isinstance(val.items[0], vec.ConstArr) and val.items[0].name.startswith("_"):
            self.origins.setdefault(val.items[0], Origin(self.here.name, node.span or self.here.span))
        elif val.packed and isinstance(val.items[0], vec.ArrGather) and isinstance(node, (T.PhysRead, T.Gather)):
            # a selection such as joint_pos["*_y*"]: named after its own text when that is short
            text = self._text(node.span)
            if text and len(text) <= 40:
                self.origins.setdefault(val.items[0].indices, Origin(text, node.span))
        want = None if node.type.shape == () else node.type.shape[0]
        if val.size != want:
            raise InternalCompilerError(f"lowered {type(node).__name__} to size {val.size}, type says {want}")
        self._memo[id(node)] = (node, val)
        return val

    def number(self, node: T.Expr) -> Val:
        """`node` as a float value (bools become 1.0 / 0.0)."""
        return vec.as_number(self.lower(node))

    def _lower(self, node: T.Expr) -> Val:  # noqa: C901 - one case per node kind
        if isinstance(node, T.Const):
            return self._const(node, "_literal")
        if isinstance(node, T.PhysRead):
            return self._phys(node)
        if isinstance(node, T.Level):
            return vec.scalar(LEVEL)
        if isinstance(node, T.Action):
            return vec.from_array("action", range(node.type.size))
        if isinstance(node, T.StateRef):
            return self.mem.read(f"state.{node.name}")
        if isinstance(node, T.CommandRef):
            return self.mem.read(f"cmd.{node.name}")
        if isinstance(node, T.Prev):
            return self._prev(node)
        if isinstance(node, T.Let):
            val = vec.rename_const(self.lower(node.value), node.name.upper())
            self._name(val, node.name, is_let=True)
            return val
        if isinstance(node, T.Quantity):
            val = vec.rename_const(self.lower(node.value), node.name.upper())
            name = ident(node.name)  # `ref.joint_pos` -> ref_joint_pos
            self._name(val, name if node.arg is None else f"{name}_{ident(node.arg)}", is_let=False)
            return val
        if isinstance(node, T.Apply):
            return self._require_real(node, self._apply(node))
        if isinstance(node, T.Gather):
            base = self.lower(node.base)
            if node.type.shape == ():
                return vec.scalar(base.component(node.indices[0]), base.boolean)
            return vec.select(base, node.indices)
        if isinstance(node, T.Concat):
            return vec.concat([self.lower(i) for i in node.items])
        if isinstance(node, T.Unary):
            if node.op != "-":
                raise InternalCompilerError(f"unary {node.op}")
            return vec.elementwise(lambda a: -a, self.number(node.operand))
        if isinstance(node, T.Binary):
            return self._binary(node)
        if isinstance(node, T.Compare):
            fn = _COMPARE[node.op]
            return vec.elementwise(fn, self.number(node.left), self.number(node.right), boolean=True)
        if isinstance(node, T.Logic):
            ops = [vec.as_bool(self.lower(o)) for o in node.operands]
            if node.op == "not":
                return vec.elementwise(sp.Not, ops[0], boolean=True)
            fn = sp.And if node.op == "and" else sp.Or
            return vec.elementwise(fn, *ops, boolean=True)
        if isinstance(node, T.Where):
            return self._where_node(node)
        if isinstance(node, T.Cast):
            return vec.as_number(self.lower(node.operand))
        if isinstance(node, T.Dist):
            return self.dist(node)
        if isinstance(node, T.RefRead):
            if self.ref is None:
                raise InternalCompilerError("ref.* read without a reference position")
            return self.ref.read(node)
        raise InternalCompilerError(f"cannot lower {type(node).__name__}")

    def _const(self, node: T.Const, name: str) -> Val:
        vals = node.values
        boolean = node.type.kind == "bool"
        if node.type.shape == ():
            return vec.scalar(sp.true if vals[0] else sp.false) if boolean else vec.scalar(num(vals[0]))
        if boolean:
            return vec.vector([sp.true if v else sp.false for v in vals], boolean=True)
        return vec.const_vector(name, vals)

    def _phys(self, node: T.PhysRead) -> Val:
        if node.array == "time":
            return vec.scalar(TIME)
        elems = node.elements
        arr = vec.array(node.array)
        if node.type.shape == ():
            return vec.scalar(arr[elems[0]])
        if all(len(e) == 1 for e in elems):
            return vec.from_array(node.array, [e[0] for e in elems])
        cols = {e[1] for e in elems}
        if len(cols) == 1:
            return vec.from_array(node.array, [e[0] for e in elems], cols.pop())
        return vec.vector([arr[e] for e in elems])

    def _prev(self, node: T.Prev) -> Val:
        if self.first is None:
            raise InternalCompilerError("prev() in reset")
        old = self.mem.read(f"prev.{node.slot}")
        first = self.first
        if node.type.kind == "bool":
            # Stored as 1.0 / 0.0; read back as a truth value.
            cur = vec.as_bool(self.lower(node.expr))
            return vec.elementwise(
                lambda c, o: sp.Or(sp.And(first, c), sp.And(sp.Not(first), o > sp.Rational(1, 2))),
                cur,
                old,
                boolean=True,
            )
        cur = self.number(node.expr)
        return vec.elementwise(lambda c, o: where(first, c, o), cur, old)

    def _binary(self, node: T.Binary) -> Val:
        a, b = self.number(node.left), self.number(node.right)
        op = node.op
        if op == "+":
            return vec.elementwise(lambda x, y: x + y, a, b)
        if op == "-":
            return vec.elementwise(lambda x, y: x - y, a, b)
        if op == "*":
            return vec.elementwise(lambda x, y: x * y, a, b)
        if op == "/":
            return vec.elementwise(lambda x, y: x / y, a, b)
        if op == "^":
            return vec.elementwise(lambda x, y: power(x, y, self._sizes), a, b)
        raise InternalCompilerError(f"binary {op}")

    def _where_node(self, node: T.Where) -> Val:
        c = vec.as_bool(self.lower(node.cond))
        a, b = self.lower(node.a), self.lower(node.b)
        if node.type.kind == "bool":
            a, b = vec.as_bool(a), vec.as_bool(b)
            return vec.elementwise(lambda c_, x, y: sp.Or(sp.And(c_, x), sp.And(sp.Not(c_), y)), c, a, b, boolean=True)
        a, b = vec.as_number(a), vec.as_number(b)
        return vec.elementwise(where, c, a, b)

    # ------------------------------------------------------------ distributions

    def dist(self, node: T.Dist) -> Val:
        """A random draw: uniform(lo, hi) = lo + (hi - lo) u, gaussian(m, s) = m + s n."""
        size = None if node.type.shape == () else node.type.shape[0]
        p0, p1 = (self.number(p) for p in node.params)
        if node.kind == "uniform":
            u = self.take("uniform", size, node.span)
            return vec.elementwise(lambda lo, hi, r: lo + (hi - lo) * r, p0, p1, u)
        if node.kind == "gaussian":
            n = self.take("normal", size, node.span)
            return vec.elementwise(lambda m, s, r: m + s * r, p0, p1, n)
        raise InternalCompilerError(f"unknown distribution {node.kind!r}")

    # ------------------------------------------------------------ functions

    def _apply(self, node: T.Apply) -> Val:  # noqa: C901 - one case per function
        f = node.func
        if f in _ELEMENTWISE:
            return vec.elementwise(_ELEMENTWISE[f], self.number(node.args[0]))
        args = [self.number(a) for a in node.args]
        if f == "norm2":
            return norm2(args[0])
        if f == "norm":
            return vec.elementwise(sp.sqrt, norm2(args[0])) if args[0].size is not None else vec.elementwise(
                sp.Abs, args[0]
            )
        if f == "sum":
            return vec.reduce_sum(args[0])
        if f == "mean":
            return vec.elementwise(lambda s: s / args[0].n, vec.reduce_sum(args[0]))
        if f in ("min", "max"):
            if len(args) == 1 or (len(args) == 2 and node.args[1] is None):
                return vec.reduce_min(args[0]) if f == "min" else vec.reduce_max(args[0])
            fn = sp.Min if f == "min" else sp.Max
            return vec.elementwise(fn, args[0], args[1])
        if f in ("any", "all"):  # booleans are 1 / 0 here: any is the largest element, all the smallest
            return vec.as_bool(vec.reduce_max(args[0]) if f == "any" else vec.reduce_min(args[0]))
        if f == "reduce_min":
            return vec.reduce_min(args[0])
        if f == "reduce_max":
            return vec.reduce_max(args[0])
        if f == "clip":
            return vec.elementwise(lambda x, lo, hi: sp.Min(sp.Max(x, lo), hi), *args)
        if f == "exp_kernel":
            x, s = args
            return vec.elementwise(lambda n2, s_: sp.exp(-n2 / (2 * s_**2)), norm2(x), s)
        if f == "dot":
            return vec.reduce_sum(vec.elementwise(lambda a, b: a * b, args[0], args[1]))
        if f == "cross":
            return vec.vector(cross(args[0].components(), args[1].components()))
        if f == "angle":
            return vec.scalar(angle(args[0].components(), args[1].components()))
        if f == "quat_rotate":
            return vec.vector(quat_rotate(args[0].components(), args[1].components()))
        if f == "quat_rotate_inv":
            return vec.vector(quat_rotate_inv(args[0].components(), args[1].components()))
        if f == "one_hot":
            return self._one_hot(args[0], node.type.size)
        if f == "tolerance":
            return self._tolerance(node, args)
        raise InternalCompilerError(f"unknown function {f!r}")

    def _require_real(self, node: T.Apply, val: Val) -> Val:
        """`val`, the value of `node`, unless sympy folded it to a constant with no real value."""
        if val.boolean or not any(vec.has_no_real_value(item) for item in val.items):
            return val
        infinite = any(vec.has_infinity(item) for a in node.args for item in self.lower(a).items)
        notes = (INFINITE_LIMITS_NOTE,) if infinite else ()
        raise self.error(node.span, f"{node.func}() has no real value for these constants", *notes)

    def _one_hot(self, i: Val, n: int) -> Val:
        x = i.items[0]
        if n <= SMALL:
            return vec.vector([where(sp.Abs(x - k) < sp.Rational(1, 2), 1, 0) for k in range(n)])
        ks = vec.const_array(f"ARANGE_{n}", list(range(n)))
        return Val((where(sp.Abs(x - ks) < sp.Rational(1, 2), sp.Integer(1), sp.Integer(0)),), n)

    def _tolerance(self, node: T.Apply, args: list[Val]) -> Val:
        x, lo, hi, margin, vam = args
        kind = node.mode or "gaussian"
        consts = [v.items[0] if v.size is None and v.items[0].is_number else None for v in (lo, hi, margin, vam)]
        clo, chi, cmargin, cvam = consts
        if clo is not None and chi is not None and clo > chi:
            raise self.error(node.span, f"tolerance: lower bound {float(clo)} is above the upper bound {float(chi)}")
        if cmargin is not None and cmargin < 0:
            raise self.error(node.span, f"tolerance: margin must be non-negative, got {float(cmargin)}")
        if cvam is not None and not (cmargin is not None and cmargin == 0):
            if kind in ("cosine", "linear", "quadratic"):
                if not 0 <= cvam < 1:
                    raise self.error(
                        node.span, f"tolerance: value_at_margin must be in [0, 1) for sigmoid={kind}, got {float(cvam)}"
                    )
            elif not 0 < cvam < 1:
                raise self.error(
                    node.span, f"tolerance: value_at_margin must be in (0, 1) for sigmoid={kind}, got {float(cvam)}"
                )
        return vec.elementwise(lambda *a: tolerance(*a, kind), x, lo, hi, margin, vam)



def _describe_named(node: T.Let | T.Quantity) -> str:
    """The variable name of a let or built-in quantity (`joint_pos_knee` for `joint_pos["knee_*"]`)."""
    if isinstance(node, T.Quantity) and node.arg is not None:
        return f"{ident(node.name)}_{ident(node.arg).strip('_')}"
    return ident(node.name)
