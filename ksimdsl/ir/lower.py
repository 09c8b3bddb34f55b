"""Lower a `CheckedTask` to sympy: one `PhaseIR` per kernel (reset, observe, step).

Every typed expression (`ksimdsl.frontend.typed`) becomes a `vec.Val`: scalars
and small vectors as scalar sympy expressions, long vectors packed (see
`ksimdsl.ir.vec`). Physics inputs are read by name (`qpos[3]`, `xpos[1, 2]`,
`qvel[6:27]`); per-env memory is the input `mem`; random numbers are slices of
the standard draws `rand_n` ~ N(0, 1) and `rand_u` ~ U[0, 1) that the runtime
passes in, allocated in a fixed order per phase.

Semantics (docs/architecture.md, "Semantics decisions"):

* every expression of `step` sees the state before this step's updates; all
  mem updates are computed from pre-update values;
* `prev(e)` reads its mem slot, or `e` itself while the first-step flag is set;
* commands are sampled in `reset` and resampled in `step` when their timer
  (in control steps) runs out; with probability `zero_prob` a sample is zero;
* an observation `delay lo..hi` keeps the `hi` previous clean values in mem
  (newest first) and a per-episode delay d; the observation reads the value d
  steps old (on the first step every old value equals the current one); noise
  is added after the delay, then the per-episode bias. Multiplicative noise
  `~ D *` scales by (1 + D);
* events count down control steps and, when their timer runs out, apply their
  writes to qpos/qvel (returned by `step`) and redraw the interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import sympy as sp

from ksimdsl.errors import InternalCompilerError, KsimError, Source, Span
from ksimdsl.frontend import typed as T
from ksimdsl.frontend.builtins import INFINITE_LIMITS_NOTE
from ksimdsl.ir import vec
from ksimdsl.ir.program import LEVEL, TIME, MemSlot, Output, PhaseIR, Segment, TaskIR
from ksimdsl.ir.vec import SMALL, Val

__all__ = ["lower_task", "Lowerer", "Draws", "MemLayout", "quat_rotate", "quat_rotate_inv", "tolerance"]


# --------------------------------------------------------------------------- math helpers


def _sq(x: sp.Basic) -> sp.Basic:
    return x**2


def quat_rotate(q: Sequence[sp.Basic], v: Sequence[sp.Basic]) -> list[sp.Basic]:
    """Rotate the 3-vector v by the unit quaternion q = (w, x, y, z).

    v' = v + 2 w (u x v) + 2 u x (u x v) with u = (x, y, z).
    """
    w, x, y, z = q
    t = _cross((x, y, z), v)
    t = [2 * c for c in t]
    s = _cross((x, y, z), t)
    return [v[i] + w * t[i] + s[i] for i in range(3)]


def quat_rotate_inv(q: Sequence[sp.Basic], v: Sequence[sp.Basic]) -> list[sp.Basic]:
    """Rotate v by the inverse (conjugate) of the unit quaternion q = (w, x, y, z)."""
    w, x, y, z = q
    return quat_rotate((w, -x, -y, -z), v)


def _cross(a: Sequence[sp.Basic], b: Sequence[sp.Basic]) -> list[sp.Basic]:
    return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]


def _quat_mul(a: Sequence[sp.Basic], b: Sequence[sp.Basic]) -> list[sp.Basic]:
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return [
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ]


def _yaw(q: Sequence[sp.Basic]) -> sp.Basic:
    """Heading angle about world z of the quaternion q = (w, x, y, z)."""
    w, x, y, z = q
    return sp.atan2(2 * (w * z + x * y), 1 - 2 * (y**2 + z**2))


def _where(c: sp.Basic, a: sp.Basic, b: sp.Basic) -> sp.Basic:
    return sp.Piecewise((a, c), (b, True))


def _sigmoid(d: sp.Basic, vam: sp.Basic, kind: str) -> sp.Basic:
    """dm_control's `rewards._sigmoids(d, value_at_1=vam, sigmoid=kind)`; d >= 0 here."""
    if kind == "gaussian":
        scale = sp.sqrt(-2 * sp.log(vam))
        return sp.exp(-sp.Rational(1, 2) * (d * scale) ** 2)
    if kind == "hyperbolic":
        scale = sp.acosh(1 / vam)
        return 1 / sp.cosh(d * scale)
    if kind == "long_tail":
        scale = sp.sqrt(1 / vam - 1)
        return 1 / ((d * scale) ** 2 + 1)
    if kind == "reciprocal":
        scale = 1 / vam - 1
        return 1 / (sp.Abs(d) * scale + 1)
    if kind == "cosine":
        scale = sp.acos(2 * vam - 1) / sp.pi
        sx = d * scale
        return _where(sp.Abs(sx) < 1, (1 + sp.cos(sp.pi * sx)) / 2, sp.Integer(0))
    if kind == "linear":
        scale = 1 - vam
        sx = d * scale
        return _where(sp.Abs(sx) < 1, 1 - sx, sp.Integer(0))
    if kind == "quadratic":
        scale = sp.sqrt(1 - vam)
        sx = d * scale
        return _where(sp.Abs(sx) < 1, 1 - sx**2, sp.Integer(0))
    if kind == "tanh_squared":
        scale = sp.atanh(sp.sqrt(1 - vam))
        return 1 - sp.tanh(d * scale) ** 2
    raise InternalCompilerError(f"unknown sigmoid {kind!r}")


def tolerance(
    x: sp.Basic, lo: sp.Basic, hi: sp.Basic, margin: sp.Basic, vam: sp.Basic, sigmoid: str
) -> sp.Basic:
    """dm_control's `rewards.tolerance(x, bounds=(lo, hi), margin, sigmoid, value_at_margin)`.

    1 inside [lo, hi]; outside, `sigmoid` of the distance to the nearest bound in
    units of `margin` (value `vam` at distance `margin`); with margin == 0 the
    indicator of the bounds.
    """
    in_bounds = sp.And(lo <= x, x <= hi)
    one, zero = sp.Integer(1), sp.Integer(0)
    if margin.is_number and margin == 0:
        return _where(in_bounds, one, zero)
    d = _where(x < lo, lo - x, x - hi) / margin
    if margin.is_number:
        return sp.Piecewise((one, in_bounds), (_sigmoid(d, vam, sigmoid), True))
    return sp.Piecewise((one, in_bounds), (zero, sp.Eq(margin, 0)), (_sigmoid(d, vam, sigmoid), True))


# --------------------------------------------------------------------------- draws and memory


class Draws:
    """Allocates a phase's standard random draws: `rand_n` ~ N(0, 1), `rand_u` ~ U[0, 1)."""

    def __init__(self) -> None:
        self.normal = 0
        self.uniform = 0

    def take(self, kind: str, size: int | None) -> Val:
        """`size` fresh draws (a scalar when `size` is None) of kind "normal" or "uniform"."""
        k = 1 if size is None else size
        if kind == "normal":
            base, start = "rand_n", self.normal
            self.normal += k
        elif kind == "uniform":
            base, start = "rand_u", self.uniform
            self.uniform += k
        else:
            raise InternalCompilerError(f"unknown draw kind {kind!r}")
        if size is None:
            return vec.scalar(vec.array(base)[start])
        return vec.from_array(base, range(start, start + k))


@dataclass(frozen=True)
class _Slot:
    offset: int
    size: int
    scalar: bool


class MemLayout:
    """Assigns named regions of the per-env `mem` vector (float32)."""

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}
        self.size = 0

    def add(self, name: str, size: int, scalar: bool = False) -> None:
        if name in self._slots:
            raise InternalCompilerError(f"mem slot {name!r} allocated twice")
        self._slots[name] = _Slot(self.size, size, scalar)
        self.size += size

    def __contains__(self, name: str) -> bool:
        return name in self._slots

    def slot(self, name: str) -> _Slot:
        return self._slots[name]

    def read(self, name: str) -> Val:
        """The slot's value at the start of the phase (mem input)."""
        s = self._slots[name]
        if s.scalar:
            return vec.scalar(vec.array("mem")[s.offset])
        return vec.from_array("mem", range(s.offset, s.offset + s.size))

    def indices(self, name: str) -> tuple[int, ...]:
        s = self._slots[name]
        return tuple(range(s.offset, s.offset + s.size))

    def slots(self) -> tuple[MemSlot, ...]:
        return tuple(MemSlot(n, s.offset, s.size) for n, s in self._slots.items())


# --------------------------------------------------------------------------- array builder


class _ArrayBuilder:
    """An output array edited by successive writes (qpos, qvel, mem, model fields).

    Unwritten elements pass the input array `base` through (or are zero when
    `base` is None). Writes keep packed values packed, so that `joint_pos +=
    uniform(...)` stays one array expression.
    """

    def __init__(self, base: str | None, size: int) -> None:
        self.base = base
        self.size = size
        self._patches: list[tuple[tuple[int, ...], Val, str]] = []

    def _source(self, i: int) -> tuple[int, int] | None:
        """(patch number, position) holding element i, None for the input."""
        for p in range(len(self._patches) - 1, -1, -1):
            idx = self._patches[p][0]
            if i in idx:
                return p, idx.index(i)
        return None

    def read(self, indices: Sequence[int], scalar: bool = False) -> Val:
        """Current value of `indices` (a scalar Val when `scalar`)."""
        indices = tuple(indices)
        srcs = [self._source(i) for i in indices]
        if scalar:
            return vec.scalar(self._element(indices[0], srcs[0]))
        patch_ids = {s[0] if s else None for s in srcs}
        if len(patch_ids) == 1:
            pid = patch_ids.pop()
            if pid is None:
                return self._base_val(indices)
            val = self._patches[pid][1]
            positions = [s[1] for s in srcs]
            if val.size is None:
                return vec.broadcast(val, len(positions)) if len(positions) > 1 else vec.vector([val.items[0]])
            return vec.select(val, positions)
        return vec.vector([self._element(i, s) for i, s in zip(indices, srcs)])

    def _element(self, i: int, src: tuple[int, int] | None) -> sp.Basic:
        if src is None:
            return vec.array(self.base)[i] if self.base else sp.Integer(0)
        return self._patches[src[0]][1].component(src[1])

    def _base_val(self, indices: tuple[int, ...]) -> Val:
        if self.base is None:
            return vec.broadcast(vec.scalar(0), len(indices))
        return vec.from_array(self.base, indices)

    def write(self, indices: Sequence[int], val: Val, label: str) -> None:
        indices = tuple(indices)
        if val.n != len(indices):
            raise InternalCompilerError(f"write of {val.n} values to {len(indices)} elements")
        taken = set(indices)
        kept: list[tuple[tuple[int, ...], Val, str]] = []
        for idx, v, lab in self._patches:
            keep = [k for k, i in enumerate(idx) if i not in taken]
            if len(keep) == len(idx):
                kept.append((idx, v, lab))
            elif keep:
                kept.append((tuple(idx[k] for k in keep), _select_any(v, keep), lab))
        kept.append((indices, val, label))
        self._patches = kept

    def segments(self) -> tuple[Segment, ...]:
        runs: list[tuple[int, Val, str]] = []
        for idx, v, lab in self._patches:
            start = 0
            for k in range(1, len(idx) + 1):
                if k == len(idx) or idx[k] != idx[k - 1] + 1:
                    positions = list(range(start, k))
                    part = v if len(positions) == v.n else _select_any(v, positions)
                    runs.append((idx[start], part, lab))
                    start = k
        runs.sort(key=lambda r: r[0])
        segs: list[Segment] = []
        pos = 0
        for first, v, lab in runs:
            if first > pos:
                segs.append(Segment("", pos, self._base_val(tuple(range(pos, first)))))
            segs.append(Segment(lab, first, v))
            pos = first + v.n
        if pos < self.size:
            segs.append(Segment("", pos, self._base_val(tuple(range(pos, self.size)))))
        return tuple(segs)


def _select_any(v: Val, positions: Sequence[int]) -> Val:
    if v.size is None:
        return v
    if len(positions) == 1:
        return vec.scalar(v.component(positions[0]), v.boolean)
    return vec.select(v, positions)


# --------------------------------------------------------------------------- expression lowering


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


def _num(v: float) -> sp.Basic:
    v = float(v)
    return sp.Integer(int(v)) if v.is_integer() else sp.Float(v)


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
        self._memo: dict[int, tuple[T.Expr, Val]] = {}
        self._source: Source | None = None

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
            elif item not in self.names:
                self.names[item] = label

    # ------------------------------------------------------------ expressions

    def lower(self, node: T.Expr) -> Val:
        hit = self._memo.get(id(node))
        if hit is not None and hit[0] is node:
            return hit[1]
        val = self._lower(node)
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
            return self._const(node, "C")
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
            self._name(val, node.name if node.arg is None else f"{node.name}_{_ident(node.arg)}", is_let=False)
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
            return self._where(node)
        if isinstance(node, T.Cast):
            return vec.as_number(self.lower(node.operand))
        if isinstance(node, T.Dist):
            return self.dist(node)
        raise InternalCompilerError(f"cannot lower {type(node).__name__}")

    def _const(self, node: T.Const, name: str) -> Val:
        vals = node.values
        boolean = node.type.kind == "bool"
        if node.type.shape == ():
            return vec.scalar(sp.true if vals[0] else sp.false) if boolean else vec.scalar(_num(vals[0]))
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
        return vec.elementwise(lambda c, o: _where(first, c, o), cur, old)

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
            return vec.elementwise(lambda x, y: x**y, a, b)
        raise InternalCompilerError(f"binary {op}")

    def _where(self, node: T.Where) -> Val:
        c = vec.as_bool(self.lower(node.cond))
        a, b = self.lower(node.a), self.lower(node.b)
        if node.type.kind == "bool":
            a, b = vec.as_bool(a), vec.as_bool(b)
            return vec.elementwise(lambda c_, x, y: sp.Or(sp.And(c_, x), sp.And(sp.Not(c_), y)), c, a, b, boolean=True)
        a, b = vec.as_number(a), vec.as_number(b)
        return vec.elementwise(_where, c, a, b)

    # ------------------------------------------------------------ distributions

    def dist(self, node: T.Dist) -> Val:
        """A random draw: uniform(lo, hi) = lo + (hi - lo) u, gaussian(m, s) = m + s n."""
        size = None if node.type.shape == () else node.type.shape[0]
        p0, p1 = (self.number(p) for p in node.params)
        if node.kind == "uniform":
            u = self.draws.take("uniform", size)
            return vec.elementwise(lambda lo, hi, r: lo + (hi - lo) * r, p0, p1, u)
        if node.kind == "gaussian":
            n = self.draws.take("normal", size)
            return vec.elementwise(lambda m, s, r: m + s * r, p0, p1, n)
        raise InternalCompilerError(f"unknown distribution {node.kind!r}")

    # ------------------------------------------------------------ functions

    def _apply(self, node: T.Apply) -> Val:  # noqa: C901 - one case per function
        f = node.func
        if f in _ELEMENTWISE:
            return vec.elementwise(_ELEMENTWISE[f], self.number(node.args[0]))
        args = [self.number(a) for a in node.args]
        if f == "norm2":
            return _norm2(args[0])
        if f == "norm":
            return vec.elementwise(sp.sqrt, _norm2(args[0])) if args[0].size is not None else vec.elementwise(
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
        if f == "reduce_min":
            return vec.reduce_min(args[0])
        if f == "reduce_max":
            return vec.reduce_max(args[0])
        if f == "clip":
            return vec.elementwise(lambda x, lo, hi: sp.Min(sp.Max(x, lo), hi), *args)
        if f == "exp_kernel":
            x, s = args
            return vec.elementwise(lambda n2, s_: sp.exp(-n2 / (2 * s_**2)), _norm2(x), s)
        if f == "dot":
            return vec.reduce_sum(vec.elementwise(lambda a, b: a * b, args[0], args[1]))
        if f == "cross":
            return vec.vector(_cross(args[0].components(), args[1].components()))
        if f == "angle":
            return vec.scalar(_angle(args[0].components(), args[1].components()))
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
            return vec.vector([_where(sp.Abs(x - k) < sp.Rational(1, 2), 1, 0) for k in range(n)])
        ks = vec.const_array(f"ARANGE_{n}", list(range(n)))
        return Val((_where(sp.Abs(x - ks) < sp.Rational(1, 2), sp.Integer(1), sp.Integer(0)),), n)

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


def _norm2(v: Val) -> Val:
    return vec.reduce_sum(vec.elementwise(_sq, v))


def _angle(u: Sequence[sp.Basic], v: Sequence[sp.Basic]) -> sp.Basic:
    """atan2(|u x v|, u . v): accurate for small and near-pi angles."""
    d = sum((a * b for a, b in zip(u, v)), sp.Integer(0))
    if len(u) == 3:
        c = _cross(u, v)
        s = sp.sqrt(sum((ci**2 for ci in c), sp.Integer(0)))
    elif len(u) == 2:
        s = sp.Abs(u[0] * v[1] - u[1] * v[0])
    else:
        nu = sum((a**2 for a in u), sp.Integer(0))
        nv = sum((b**2 for b in v), sp.Integer(0))
        s = sp.sqrt(sp.Max(nu * nv - d**2, 0))
    return sp.atan2(s, d)


def _ident(name: str) -> str:
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return out if out and not out[0].isdigit() else f"_{out}"


# --------------------------------------------------------------------------- the task


def _describe(expr: T.Expr) -> str:
    if isinstance(expr, T.Action):
        return "action"
    if isinstance(expr, (T.Let, T.StateRef, T.CommandRef)):
        return expr.name
    if isinstance(expr, T.Quantity):
        return expr.name if expr.arg is None else f"{expr.name}_{_ident(expr.arg)}"
    return ""


def _layout(task: T.CheckedTask) -> MemLayout:
    mem = MemLayout()
    for st in task.states:
        mem.add(f"state.{st.name}", st.type.size, scalar=st.type.shape == ())
    for ps in task.prev_slots:
        mem.add(f"prev.{ps.slot}", ps.expr.type.size, scalar=ps.expr.type.shape == ())
    for cmd in task.commands:
        mem.add(f"cmd.{cmd.name}", cmd.size)
        if cmd.resample_steps is not None:
            mem.add(f"cmd.{cmd.name}.timer", 1, scalar=True)
    for ob in task.obs_actor:
        if ob.bias is not None:
            mem.add(f"bias.{ob.name}", ob.size, scalar=ob.value.type.shape == ())
    for ob in task.obs_actor:
        if ob.delay is not None:
            mem.add(f"delay.{ob.name}", 1, scalar=True)
            if ob.delay[1] > 0:
                mem.add(f"ring.{ob.name}", ob.delay[1] * ob.size)
    for ev in task.events:
        mem.add(f"event.{ev.name}.timer", 1, scalar=True)
    mem.add("first", 1, scalar=True)
    return mem


def _mem_slot_names(task: T.CheckedTask, mem: MemLayout) -> tuple[MemSlot, ...]:
    """The layout with `prev.<slot>` renamed to `prev.<what>` where that is unique."""
    labels: dict[str, str] = {}
    used: set[str] = set()
    for ps in task.prev_slots:
        what = _describe(ps.expr)
        label = f"prev.{what}" if what and f"prev.{what}" not in used else f"prev.{ps.slot}"
        used.add(label)
        labels[f"prev.{ps.slot}"] = label
    return tuple(MemSlot(labels.get(s.name, s.name), s.offset, s.size) for s in mem.slots())


def _label(name: str) -> str:
    return _ident(name.replace(".", "_"))


class _TaskLowering:
    def __init__(self, task: T.CheckedTask) -> None:
        self.task = task
        self.mem = _layout(task)
        self.slot_names = {s.name: n.name for s, n in zip(self.mem.slots(), _mem_slot_names(task, self.mem))}

    def mem_label(self, name: str) -> str:
        return _label(self.slot_names.get(name, name))

    # ------------------------------------------------------------ writes on qpos / qvel

    def _apply_writes(
        self,
        lo: Lowerer,
        qpos: _ArrayBuilder,
        qvel: _ArrayBuilder,
        writes: Sequence[T.Write],
        fire: sp.Basic | None,
        label: str,
    ) -> None:
        """Apply `reset`/`event` writes in order; with `fire`, only where it holds."""
        root = self.task.model.root
        for w in writes:
            value = lo.number(w.value)
            if w.target in ("qpos", "qvel"):
                b = qpos if w.target == "qpos" else qvel
                old = b.read(w.index, scalar=False) if len(w.index) > 1 else b.read(w.index, scalar=True)
                if value.size is None and len(w.index) > 1:
                    value = vec.broadcast(value, len(w.index))
                if len(w.index) == 1 and value.size is not None:
                    value = vec.scalar(value.component(0))
                new = _combine(w.op, old, value)
                idx = w.index
                target_b = b
            elif w.target == "base_ang_vel":
                if root is None:
                    raise InternalCompilerError("base_ang_vel write without a root free joint")
                q = qpos.read(range(root.qpos_adr + 3, root.qpos_adr + 7)).components()
                idx = tuple(range(root.dof_adr + 3, root.dof_adr + 6))
                local = qvel.read(idx).components()
                world = quat_rotate(q, local)
                comps = value.components() if value.size is not None else [value.items[0]] * len(w.index)
                for k, i in enumerate(w.index):
                    world[i] = _combine(w.op, vec.scalar(world[i]), vec.scalar(comps[k])).items[0]
                new = vec.vector(quat_rotate_inv(q, world))
                old = vec.vector(local)
                target_b = qvel
            elif w.target == "base_yaw":
                if root is None:
                    raise InternalCompilerError("base_yaw write without a root free joint")
                idx = tuple(range(root.qpos_adr + 3, root.qpos_adr + 7))
                old = qpos.read(idx)
                q = old.components()
                a = value.items[0]
                if w.op == "=":
                    a = a - _yaw(q)
                elif w.op != "+=":
                    raise InternalCompilerError(f"base_yaw {w.op}")
                rot = [sp.cos(a / 2), sp.Integer(0), sp.Integer(0), sp.sin(a / 2)]
                new = vec.vector(_quat_mul(rot, q))
                target_b = qpos
            else:
                raise InternalCompilerError(f"unknown write target {w.target!r}")
            if fire is not None:
                new = vec.elementwise(lambda n, o: _where(fire, n, o), new, old)
            target_b.write(idx, new, label)

    # ------------------------------------------------------------ phases

    def reset(self) -> PhaseIR:
        task = self.task
        draws = Draws()
        lo = Lowerer(task, self.mem, draws, first=None)
        outputs: list[Output] = []

        # reset block: qpos / qvel
        qpos = _ArrayBuilder("qpos", task.model.nq)
        qvel = _ArrayBuilder("qvel", task.model.nv)
        self._apply_writes(lo, qpos, qvel, task.reset, None, "reset")

        # randomize block: model fields (flattened)
        fields: dict[str, _ArrayBuilder] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        for rd in task.randomize:
            shape = tuple(rd.field_shape)
            shapes[rd.field] = shape
            b = fields.setdefault(rd.field, _ArrayBuilder(rd.field, math.prod(shape)))
            ncol = math.prod(shape[1:]) if len(shape) > 1 else 1
            value = lo.number(rd.value)
            flat = [r * ncol + c for r in rd.rows for c in range(ncol)]
            if value.size is None:
                per = vec.broadcast(value, len(flat)) if len(flat) > 1 else value
            else:
                per = _select_any(value, [k for k in range(len(rd.rows)) for _ in range(ncol)])
            old = b.read(flat, scalar=len(flat) == 1)
            b.write(flat, _combine(rd.op, old, per), "new")

        # mem
        mem = _ArrayBuilder(None, self.mem.size)
        for st in task.states:
            name = f"state.{st.name}"
            mem.write(self.mem.indices(name), _fit(lo.number(st.init), self.mem.slot(name)), self.mem_label(name))
        for ps in task.prev_slots:
            name = f"prev.{ps.slot}"
            mem.write(self.mem.indices(name), _zeros(self.mem.slot(name)), self.mem_label(name))
        for cmd in task.commands:
            name = f"cmd.{cmd.name}"
            mem.write(self.mem.indices(name), self._sample_command(lo, cmd), self.mem_label(name))
            if cmd.resample_steps is not None:
                tname = f"{name}.timer"
                mem.write(self.mem.indices(tname), vec.scalar(_num(cmd.resample_steps)), self.mem_label(tname))
        for ob in task.obs_actor:
            if ob.bias is not None:
                name = f"bias.{ob.name}"
                mem.write(self.mem.indices(name), _fit(lo.number(ob.bias), self.mem.slot(name)), self.mem_label(name))
        for ob in task.obs_actor:
            if ob.delay is not None:
                dlo, dhi = ob.delay
                u = draws.take("uniform", None).items[0]
                d = sp.Min(sp.floor(dlo + (dhi - dlo + 1) * u), dhi) if dhi > dlo else _num(dlo)
                name = f"delay.{ob.name}"
                mem.write(self.mem.indices(name), vec.scalar(d), self.mem_label(name))
                if dhi > 0:
                    rname = f"ring.{ob.name}"
                    mem.write(self.mem.indices(rname), _zeros(self.mem.slot(rname)), self.mem_label(rname))
        for ev in task.events:
            name = f"event.{ev.name}.timer"
            mem.write(self.mem.indices(name), _fit(lo.number(ev.every), self.mem.slot(name)), self.mem_label(name))
        mem.write(self.mem.indices("first"), vec.scalar(1), "first")

        outputs.append(Output("qpos", task.model.nq, False, qpos.segments(), "qpos_", "reset: joint positions"))
        outputs.append(Output("qvel", task.model.nv, False, qvel.segments(), "qvel_", "reset: joint velocities"))
        for fname, b in fields.items():
            outputs.append(
                Output(fname, b.size, False, b.segments(), f"{fname}_", f"randomize: {fname}", shapes[fname], True)
            )
        outputs.append(Output("mem", self.mem.size, False, mem.segments(), "mem_", "initial memory"))
        return PhaseIR("reset", tuple(outputs), draws.normal, draws.uniform, dict(lo.names), dict(lo.lets))

    def _sample_command(self, lo: Lowerer, cmd: T.CommandDef) -> Val:
        vals = [lo.number(f.value).items[0] for f in cmd.fields]
        if cmd.zero_prob > 0:
            u = lo.draws.take("uniform", None).items[0]
            zero = u < _num(cmd.zero_prob)
            vals = [_where(zero, sp.Integer(0), v) for v in vals]
        return vec.vector(vals)

    def _first(self) -> sp.Basic:
        return self.mem.read("first").items[0] > sp.Rational(1, 2)

    def _observations(self, lo: Lowerer) -> tuple[list[Output], dict[str, Val]]:
        """Actor (delayed, noisy, biased) and critic (clean) observations, and the new delay rings."""
        task = self.task
        first = lo.first
        actor: list[Segment] = []
        rings: dict[str, Val] = {}
        pos = 0
        for ob in task.obs_actor:
            v = lo.number(ob.value)
            if ob.delay is not None and ob.delay[1] > 0:
                v, ring = self._delay(lo, ob, v, first)
                rings[f"ring.{ob.name}"] = ring
            if ob.noise is not None:
                noise = _fit(lo.number(ob.noise), _Slot(0, ob.size, ob.value.type.shape == ()))
                if ob.noise_multiplicative:
                    v = vec.elementwise(lambda x, n: x * (1 + n), v, noise)
                else:
                    v = vec.elementwise(lambda x, n: x + n, v, noise)
            if ob.bias is not None:
                v = vec.elementwise(lambda x, b: x + b, v, self.mem.read(f"bias.{ob.name}"))
            actor.append(Segment(_ident(ob.name), pos, v))
            pos += v.n
        critic: list[Segment] = []
        cpos = 0
        for ob in task.obs_critic:
            v = lo.number(ob.value)
            critic.append(Segment(_ident(ob.name), cpos, v))
            cpos += v.n
        outs = [
            Output("actor", pos, False, tuple(actor), "actor_", "observe actor"),
            Output("critic", cpos, False, tuple(critic), "critic_", "observe critic (clean)"),
        ]
        return outs, rings

    def _delay(self, lo: Lowerer, ob: T.ObsItem, v: Val, first: sp.Basic) -> tuple[Val, Val]:
        """(value `delay` steps old, the new ring contents)."""
        hi = ob.delay[1]
        n = ob.size
        ring = self.mem.read(f"ring.{ob.name}")
        olds: list[Val] = []
        for k in range(hi):
            part = _select_any(ring, list(range(k * n, (k + 1) * n))) if ring.n > 1 else ring
            if v.size is None and part.size is not None:
                part = vec.scalar(part.component(0))
            olds.append(vec.elementwise(lambda c, o: _where(first, c, o), v, part))
        d = self.mem.read(f"delay.{ob.name}").items[0]

        def pick(*vals: sp.Basic) -> sp.Basic:
            pairs = [(vals[k], d < sp.Rational(2 * k + 1, 2)) for k in range(len(vals) - 1)]
            return sp.Piecewise(*pairs, (vals[-1], True))

        delayed = vec.elementwise(pick, v, *olds)
        new_ring = vec.concat([v] + olds[:-1])
        return delayed, new_ring

    def observe(self) -> PhaseIR:
        draws = Draws()
        lo = Lowerer(self.task, self.mem, draws, first=self._first())
        outs, _ = self._observations(lo)
        return PhaseIR("observe", tuple(outs), draws.normal, draws.uniform, dict(lo.names), dict(lo.lets))

    def step(self) -> tuple[PhaseIR, tuple[str, ...], tuple[str, ...]]:
        task = self.task
        draws = Draws()
        first = self._first()
        lo = Lowerer(task, self.mem, draws, first=first)
        outs, rings = self._observations(lo)

        # rewards: drop terms whose weight folds to exactly zero
        terms: list[Segment] = []
        weights: list[Segment] = []
        kept: list[str] = []
        dropped: list[str] = []
        for rw in task.rewards:
            w = lo.number(rw.weight)
            if w.items[0].is_zero:
                dropped.append(rw.name)
                continue
            val = lo.number(rw.value)
            k = len(kept)
            terms.append(Segment(_ident(rw.name), k, val))
            weights.append(Segment(_ident(rw.name), k, w))
            kept.append(rw.name)
        outs.append(Output("reward_terms", len(kept), False, tuple(terms), "reward_", "reward terms (unweighted)"))
        outs.append(Output("reward_weights", len(kept), False, tuple(weights), "weight_", "reward weights"))

        terms_k = [
            Segment(_ident(t.name), k, vec.as_bool(lo.lower(t.cond))) for k, t in enumerate(task.terminations)
        ]
        outs.append(Output("terminations", len(terms_k), True, tuple(terms_k), "done_", "terminations"))

        # next mem: every update computed from pre-update values
        mem = _ArrayBuilder("mem", self.mem.size)
        for st in task.states:
            name = f"state.{st.name}"
            mem.write(self.mem.indices(name), _fit(lo.number(st.update), self.mem.slot(name)), self.mem_label(name))
        for ps in task.prev_slots:
            name = f"prev.{ps.slot}"
            mem.write(self.mem.indices(name), _fit(lo.number(ps.expr), self.mem.slot(name)), self.mem_label(name))
        for cmd in task.commands:
            if cmd.resample_steps is None:
                continue
            name = f"cmd.{cmd.name}"
            timer = self.mem.read(f"{name}.timer").items[0]
            due = sp.Le(timer, 1)
            fresh = self._sample_command(lo, cmd)
            new = vec.elementwise(lambda f, o: _where(due, f, o), fresh, self.mem.read(name))
            mem.write(self.mem.indices(name), new, self.mem_label(name))
            t_new = _where(due, _num(cmd.resample_steps), timer - 1)
            mem.write(self.mem.indices(f"{name}.timer"), vec.scalar(t_new), self.mem_label(f"{name}.timer"))
        for rname, ring in rings.items():
            mem.write(self.mem.indices(rname), ring, self.mem_label(rname))

        writes_phys = bool(task.events)
        qpos = _ArrayBuilder("qpos", task.model.nq)
        qvel = _ArrayBuilder("qvel", task.model.nv)
        for ev in task.events:
            name = f"event.{ev.name}.timer"
            timer = self.mem.read(name).items[0]
            fire = sp.Le(timer, 1)
            self._apply_writes(lo, qpos, qvel, ev.writes, fire, _ident(ev.name))
            every = _fit(lo.number(ev.every), self.mem.slot(name)).items[0]
            mem.write(self.mem.indices(name), vec.scalar(_where(fire, every, timer - 1)), self.mem_label(name))
        mem.write(self.mem.indices("first"), vec.scalar(0), "first")
        outs.append(Output("mem", self.mem.size, False, mem.segments(), "mem_", "next memory"))
        if writes_phys:
            outs.append(Output("qpos", task.model.nq, False, qpos.segments(), "qpos_", "events: joint positions"))
            outs.append(Output("qvel", task.model.nv, False, qvel.segments(), "qvel_", "events: joint velocities"))
        phase = PhaseIR("step", tuple(outs), draws.normal, draws.uniform, dict(lo.names), dict(lo.lets))
        return phase, tuple(kept), tuple(dropped)

    def lower(self) -> TaskIR:
        task = self.task
        reset = self.reset()
        observe = self.observe()
        step, kept, dropped = self.step()
        commands = tuple(
            {"name": c.name, "size": c.size, "offset": self.mem.slot(f"cmd.{c.name}").offset} for c in task.commands
        )
        fields = tuple(dict.fromkeys(r.field for r in task.randomize))
        return TaskIR(
            phases={"reset": reset, "observe": observe, "step": step},
            mem_slots=_mem_slot_names(task, self.mem),
            mem_size=self.mem.size,
            rewards=kept,
            dropped_rewards=dropped,
            randomize_fields=fields,
            field_shapes={r.field: tuple(r.field_shape) for r in task.randomize},
            writes_phys=bool(task.events),
            commands=commands,
        )


def _combine(op: str, old: Val, value: Val) -> Val:
    if op == "=":
        return value if value.size == old.size else vec.broadcast(value, old.size)
    if op == "+=":
        return vec.elementwise(lambda a, b: a + b, old, value)
    if op == "*=":
        return vec.elementwise(lambda a, b: a * b, old, value)
    raise InternalCompilerError(f"assignment operator {op!r}")


def _fit(v: Val, slot: _Slot) -> Val:
    """`v` shaped for a mem slot (scalars broadcast to vector slots)."""
    if slot.scalar:
        if v.size is not None:
            raise InternalCompilerError(f"vector of size {v.size} for a scalar slot")
        return v
    if v.size is None:
        return vec.broadcast(v, slot.size) if slot.size > 1 else vec.vector([v.items[0]])
    return v


def _zeros(slot: _Slot) -> Val:
    return vec.scalar(0) if slot.scalar else vec.broadcast(vec.scalar(0), slot.size)


def lower_task(task: T.CheckedTask) -> TaskIR:
    """Lower every phase of a checked task to sympy (see the module docstring)."""
    return _TaskLowering(task).lower()
