"""Shape-carrying sympy values: scalars, expanded small vectors and packed arrays.

Long constant arrays are named (`ConstArr`); a name starting with `_` marks an
anonymous one (a literal or a folded expression) that the code generator names
after the definition it belongs to.

A ksim value is lowered to sympy in one of three forms (`Val`):

* a **scalar**: one sympy expression (`size is None`);
* a **small vector** (n <= `SMALL`, e.g. positions, quaternions, swizzles):
  a tuple of n scalar expressions, so that constant folding and CSE see every
  component (a frame rotation is computed once and shared);
* a **packed array** (n > `SMALL`, e.g. 21 joint angles): ONE sympy expression
  with *elementwise* semantics standing for the whole array. Its leaves are the
  `PackedLeaf` functions below (a slice of an input array, a gather, a constant
  array, a concatenation, a fill); `+ - * / ** exp ...` act elementwise and
  obey scalar algebra, so every sympy simplification stays valid. Reductions
  (`RSum`, `RMax`, `RMin`) turn a packed expression into a scalar.

The shape of any sympy node is `shape_of(expr)`: 0 for a scalar, n for a
packed array of n elements (an expression is packed when it contains a packed
leaf outside every reduction). Scalars broadcast against packed arrays.

Input arrays are `IndexedBase`s (`qpos`, `mem`, `rand_n`, ...): a single
element is the sympy `Indexed` `qpos[3]` (2-D: `xpos[1, 2]`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import sympy as sp

from ksimdsl.errors import InternalCompilerError
from ksimdsl.ir.dag import rebuild

__all__ = [
    "SMALL", "Val", "array", "PackedLeaf", "ArrSlice", "ArrGather", "ConstArr", "Concat", "Fill",
    "RSum", "RMax", "RMin", "Reduction", "shape_of", "element", "take", "scalar", "vector",
    "const_vector", "num", "from_array", "elementwise", "as_bool", "as_number", "select", "concat",
    "broadcast", "reduce_sum", "reduce_max", "reduce_min", "rename_const", "has_no_real_value",
    "has_infinity",
]

#: Vectors up to this many elements are expanded into scalar components.
SMALL = 4

# --------------------------------------------------------------------------- inputs


@functools.lru_cache(maxsize=None)
def array(name: str) -> sp.IndexedBase:
    """The (real) input array `name`; `array("qpos")[3]` is the scalar qpos[3]."""
    return sp.IndexedBase(name, real=True)


def _ints(args: Iterable[sp.Basic]) -> tuple[int, ...]:
    return tuple(int(a) for a in args)


# --------------------------------------------------------------------------- packed leaves


class PackedLeaf(sp.Function):
    """A packed array leaf. Subclasses define `size`, `element(i)` and `take(indices)`."""

    is_real = True
    is_commutative = True

    @property
    def size(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def element(self, i: int) -> sp.Expr:  # pragma: no cover - abstract
        raise NotImplementedError

    def take(self, indices: Sequence[int]) -> sp.Expr:
        """The leaf restricted to `indices` (len > SMALL): again a packed expression."""
        return Concat(*[self.element(i) for i in indices])


class ArrSlice(PackedLeaf):
    """`base[start:stop]` of a 1-D input array, or `base[start:stop, col]` of a 2-D one.

    args: (base Symbol, start, stop) or (base Symbol, start, stop, col).
    """

    nargs = (3, 4)

    @property
    def base(self) -> sp.Symbol:
        return self.args[0]

    @property
    def start(self) -> int:
        return int(self.args[1])

    @property
    def stop(self) -> int:
        return int(self.args[2])

    @property
    def col(self) -> int | None:
        return int(self.args[3]) if len(self.args) == 4 else None

    @property
    def size(self) -> int:
        return self.stop - self.start

    def element(self, i: int) -> sp.Expr:
        if not 0 <= i < self.size:
            raise InternalCompilerError(f"index {i} out of range for {self}")
        base = array(self.base.name)
        if self.col is None:
            return base[self.start + i]
        return base[self.start + i, self.col]

    def take(self, indices: Sequence[int]) -> sp.Expr:
        rows = [self.start + i for i in indices]
        return gather(self.base.name, rows, self.col)


class ArrGather(PackedLeaf):
    """`base[[i0, i1, ...]]` (or `base[[i0, ...], col]` when `col >= 0`) of an input array.

    args: (base Symbol, col Integer (-1 for 1-D), *indices).
    """

    @property
    def base(self) -> sp.Symbol:
        return self.args[0]

    @property
    def col(self) -> int | None:
        c = int(self.args[1])
        return None if c < 0 else c

    @property
    def indices(self) -> tuple[int, ...]:
        return _ints(self.args[2:])

    @property
    def size(self) -> int:
        return len(self.args) - 2

    def element(self, i: int) -> sp.Expr:
        base = array(self.base.name)
        row = self.indices[i]
        return base[row] if self.col is None else base[row, self.col]

    def take(self, indices: Sequence[int]) -> sp.Expr:
        rows = self.indices
        return gather(self.base.name, [rows[i] for i in indices], self.col)


class ConstArr(PackedLeaf):
    """A named constant array; printed once at module level as an upper-case name.

    args: (name Symbol, *values).
    """

    @property
    def name(self) -> str:
        return self.args[0].name

    @property
    def values(self) -> tuple[float, ...]:
        return tuple(float(v) for v in self.args[1:])

    @property
    def size(self) -> int:
        return len(self.args) - 1

    def element(self, i: int) -> sp.Expr:
        return self.args[1 + i]

    def take(self, indices: Sequence[int]) -> sp.Expr:
        return const_array(f"{self.name}_{indices[0]}_{len(indices)}", [self.values[i] for i in indices])


class Concat(PackedLeaf):
    """Concatenation of scalars and packed expressions (in order)."""

    @property
    def size(self) -> int:
        return sum(max(1, shape_of(a)) for a in self.args)

    def _locate(self, i: int) -> tuple[sp.Expr, int]:
        for part in self.args:
            n = max(1, shape_of(part))
            if i < n:
                return part, i
            i -= n
        raise InternalCompilerError(f"index out of range for {self}")

    def element(self, i: int) -> sp.Expr:
        part, j = self._locate(i)
        return part if shape_of(part) == 0 else element(part, j)

    @classmethod
    def eval(cls, *parts):  # noqa: D102 - sympy hook
        # Flatten nested concatenations.
        if any(isinstance(p, Concat) for p in parts):
            flat: list[sp.Basic] = []
            for p in parts:
                flat.extend(p.args if isinstance(p, Concat) else [p])
            return cls(*flat)
        return None


class Fill(PackedLeaf):
    """`n` copies of a scalar. args: (value, n)."""

    nargs = 2

    @property
    def value(self) -> sp.Expr:
        return self.args[0]

    @property
    def size(self) -> int:
        return int(self.args[1])

    def element(self, i: int) -> sp.Expr:
        return self.args[0]

    def take(self, indices: Sequence[int]) -> sp.Expr:
        return Fill(self.args[0], len(indices))


def gather(base: str, rows: Sequence[int], col: int | None = None) -> sp.Expr:
    """`base[rows]` (optionally at column `col`): a slice when `rows` are contiguous."""
    rows = [int(r) for r in rows]
    sym = sp.Symbol(base, real=True)
    if len(rows) > 1 and rows == list(range(rows[0], rows[0] + len(rows))):
        args = (sym, rows[0], rows[0] + len(rows))
        return ArrSlice(*args) if col is None else ArrSlice(*args, col)
    return ArrGather(sym, -1 if col is None else col, *rows)


def const_array(name: str, values: Sequence[float]) -> sp.Expr:
    """A packed constant array (`Fill` when all values are equal)."""
    vals = [num(v) for v in values]
    if all(v == vals[0] for v in vals):
        return Fill(vals[0], len(vals))
    return ConstArr(sp.Symbol(name), *vals)


# --------------------------------------------------------------------------- reductions


class Reduction(sp.Function):
    """A reduction of one packed array to a scalar."""

    nargs = 1
    is_real = True
    is_commutative = True


class RSum(Reduction):
    """Sum of all elements."""

    @classmethod
    def eval(cls, x):  # noqa: D102 - sympy hook
        if isinstance(x, Fill):
            return x.value * x.size
        if isinstance(x, sp.Mul):
            # Pull scalar factors out: sum(c * v) = c * sum(v).
            scal = [a for a in x.args if shape_of(a) == 0]
            if scal:
                rest = [a for a in x.args if shape_of(a) != 0]
                return sp.Mul(*scal) * cls(sp.Mul(*rest))
        return None


class _Extremum(Reduction):
    """The largest or smallest element (of a fill: its value)."""

    @classmethod
    def eval(cls, x):  # noqa: D102 - sympy hook
        if isinstance(x, Fill):
            return x.value
        return None


class RMax(_Extremum):
    """Maximum element."""


class RMin(_Extremum):
    """Minimum element."""


# --------------------------------------------------------------------------- shapes


@functools.lru_cache(maxsize=1 << 16)
def shape_of(expr: sp.Basic) -> int:
    """0 for a scalar expression, n for a packed array of n elements."""
    if isinstance(expr, PackedLeaf):
        return expr.size
    if isinstance(expr, Reduction) or not expr.args or isinstance(expr, sp.Indexed):
        return 0
    n = 0
    for a in expr.args:
        m = shape_of(a)
        if m:
            if n and m != n:
                raise InternalCompilerError(f"packed shapes {n} and {m} mixed in {expr}")
            n = m
    return n


def _map_packed(expr: sp.Basic, leaf: Callable[[PackedLeaf], sp.Basic]) -> sp.Basic:
    """Rebuild `expr` with every packed leaf (outside reductions) replaced by `leaf(l)` (each shared node once)."""
    memo: dict[sp.Basic, sp.Basic] = {}
    sizes: dict[sp.Basic, int] = {}  # tree sizes, for `rebuild`

    def rec(e: sp.Basic) -> sp.Basic:
        if shape_of(e) == 0:
            return e
        if isinstance(e, PackedLeaf):
            return leaf(e)
        hit = memo.get(e)
        if hit is None:
            hit = memo[e] = rebuild(e, [rec(a) for a in e.args], sizes)
        return hit

    return rec(expr)


def element(expr: sp.Basic, i: int) -> sp.Basic:
    """Element `i` of a packed expression (a scalar expression)."""
    return _map_packed(expr, lambda l: l.element(i))


def take(expr: sp.Basic, indices: Sequence[int]) -> sp.Basic:
    """The packed expression restricted to `indices` (more than SMALL of them)."""
    return _map_packed(expr, lambda l: l.take(indices))


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Val:
    """A lowered ksim value.

    `size` is None for a scalar (then `items == (expr,)`), n for a vector: `items`
    holds n scalar components when n <= SMALL, else one packed expression.
    `boolean` marks truth values (sympy Boolean expressions).
    """

    items: tuple[sp.Basic, ...]
    size: int | None = None
    boolean: bool = False

    def __post_init__(self) -> None:
        want = 1 if (self.size is None or self.size > SMALL) else self.size
        if len(self.items) != want:
            raise InternalCompilerError(f"Val of size {self.size} with {len(self.items)} items")

    @property
    def is_scalar(self) -> bool:
        return self.size is None

    @property
    def packed(self) -> bool:
        return self.size is not None and self.size > SMALL

    @property
    def expr(self) -> sp.Basic:
        """The scalar or packed expression (not for small vectors)."""
        if self.size is not None and self.size <= SMALL:
            raise InternalCompilerError("expr of an expanded vector")
        return self.items[0]

    @property
    def n(self) -> int:
        """Number of scalar elements (1 for a scalar)."""
        return 1 if self.size is None else self.size

    def component(self, i: int) -> sp.Basic:
        """Element `i` as a scalar expression."""
        if self.size is None:
            return self.items[0]
        if self.packed:
            return element(self.items[0], i)
        return self.items[i]

    def components(self) -> list[sp.Basic]:
        """Every element as a scalar expression (expands packed arrays: use sparingly)."""
        return [self.component(i) for i in range(self.n)]

    def with_items(self, items: Sequence[sp.Basic]) -> "Val":
        return Val(tuple(items), self.size, self.boolean)


def scalar(expr: sp.Basic | float | int | bool, boolean: bool | None = None) -> Val:
    e = sp.sympify(expr)
    if boolean is None:
        # (sympy Symbols are Boolean subclasses; ours always stand for numbers.)
        boolean = isinstance(e, sp.logic.boolalg.Boolean) and not isinstance(e, sp.Symbol)
    return Val((e,), None, boolean)


def vector(components: Sequence[sp.Basic | float], boolean: bool = False) -> Val:
    """A vector from scalar components (packed into a `Concat` when long)."""
    comps = [sp.sympify(c) for c in components]
    n = len(comps)
    if n <= SMALL:
        return Val(tuple(comps), n, boolean)
    return Val((Concat(*comps),), n, boolean)


def const_vector(name: str, values: Sequence[float]) -> Val:
    """A constant vector; long ones become one module-level constant array `name`."""
    if len(values) <= SMALL:
        return vector([num(v) for v in values])
    return Val((const_array(name, values),), len(values))


def num(v: float) -> sp.Expr:
    """A sympy number: an Integer when `v` is integral, else a Float."""
    v = float(v)
    return sp.Integer(int(v)) if v.is_integer() else sp.Float(v)


def from_array(base: str, rows: Sequence[int], col: int | None = None) -> Val:
    """Elements `rows` of the input array `base` (at column `col` for 2-D arrays) as a vector."""
    rows = list(rows)
    if len(rows) <= SMALL:
        arr = array(base)
        return Val(tuple(arr[r] if col is None else arr[r, col] for r in rows), len(rows))
    return Val((gather(base, rows, col),), len(rows))


def broadcast(v: Val, size: int | None) -> Val:
    """`v` broadcast to `size` (a scalar becomes a vector of copies)."""
    if v.size == size:
        return v
    if v.size is not None:
        raise InternalCompilerError(f"cannot broadcast size {v.size} to {size}")
    if size is None:
        return v
    if size <= SMALL:
        return Val(v.items * size, size, v.boolean)
    return Val((Fill(v.items[0], size),), size, v.boolean)


def elementwise(f: Callable[..., sp.Basic], *vals: Val, boolean: bool = False) -> Val:
    """Apply a scalar function elementwise with scalar broadcasting."""
    sizes = {v.size for v in vals if v.size is not None}
    if len(sizes) > 1:
        raise InternalCompilerError(f"elementwise on mismatched sizes {sorted(sizes)}")
    size = sizes.pop() if sizes else None
    if not boolean and size is not None and size > SMALL and all(_is_const(v.items[0]) for v in vals):
        return Val((_fold_const(f, [v.items[0] for v in vals], size),), size, boolean)
    if size is None or size > SMALL:
        # Scalars and packed expressions combine directly (scalars broadcast);
        # a constant fill acts as its scalar, so `x - fill(0)` folds to `x`.
        args = [v.items[0].value if isinstance(v.items[0], Fill) else v.items[0] for v in vals]
        out = f(*args)
        if size is not None and shape_of(out) == 0:
            out = Fill(out, size)
        return Val((out,), size, boolean)
    cols = [v.items if v.size is not None else v.items * size for v in vals]
    return Val(tuple(f(*args) for args in zip(*cols)), size, boolean)


def _is_const(e: sp.Basic) -> bool:
    return isinstance(e, (ConstArr, Fill)) and e.args[0 if isinstance(e, Fill) else 1].is_number or e.is_number


def _fold_const(f: Callable[..., sp.Basic], items: Sequence[sp.Basic], size: int) -> sp.Basic:
    """Evaluate an elementwise function of constant arrays (and numbers) at compile time."""
    values = []
    for i in range(size):
        args = [a.element(i) if isinstance(a, PackedLeaf) else a for a in items]
        out = f(*args)
        if out.free_symbols:
            raise InternalCompilerError(f"constant folding produced {out}")
        # sin(inf), sqrt(-1), ... have no real value: NaN here, reported by the lowering.
        values.append(float(out) if out.is_comparable else math.nan)
    return const_array("_const", values)


def has_no_real_value(e: sp.Basic) -> bool:
    """True for a constant without a real value: NaN, a complex number, sin(inf)'s AccumBounds.

    Infinities are real values (`joint_upper` of a joint without a range is +inf).
    A packed constant qualifies when any of its elements does.
    """
    if isinstance(e, ConstArr):
        return any(math.isnan(v) for v in e.values)
    if isinstance(e, Fill):
        e = e.value
    if isinstance(e, sp.AccumBounds):
        return True
    return bool(e.is_number) and not e.is_comparable


def has_infinity(e: sp.Basic) -> bool:
    """True for the constant +-inf, or a packed constant with an infinite element."""
    if isinstance(e, ConstArr):
        return any(math.isinf(v) for v in e.values)
    if isinstance(e, Fill):
        e = e.value
    return e in (sp.oo, sp.S.NegativeInfinity)


def rename_const(v: Val, name: str) -> Val:
    """A constant array value under a new module-level name (identity for anything else)."""
    if v.packed and isinstance(v.items[0], ConstArr):
        return Val((ConstArr(sp.Symbol(name), *v.items[0].args[1:]),), v.size, v.boolean)
    return v


def as_number(v: Val) -> Val:
    """A boolean value as 1.0 / 0.0 (identity for numbers)."""
    if not v.boolean:
        return v
    return elementwise(lambda c: sp.Piecewise((sp.Integer(1), c), (sp.Integer(0), True)), v)


def as_bool(v: Val) -> Val:
    """A numeric value as a truth value (`x != 0`)."""
    if v.boolean:
        return v
    return elementwise(lambda c: sp.Ne(c, 0), v, boolean=True)


def select(v: Val, indices: Sequence[int]) -> Val:
    """Elements `indices` of vector `v`, as a vector (a scalar when `indices` is an int)."""
    if v.size is None:
        raise InternalCompilerError("select on a scalar")
    idx = list(indices)
    if any(not 0 <= i < v.size for i in idx):
        raise InternalCompilerError(f"indices {idx} out of range for size {v.size}")
    if not v.packed:
        return Val(tuple(v.items[i] for i in idx), len(idx), v.boolean) if len(idx) <= SMALL else vector(
            [v.items[i] for i in idx], v.boolean
        )
    if len(idx) <= SMALL:
        return Val(tuple(element(v.items[0], i) for i in idx), len(idx), v.boolean)
    if idx == list(range(v.size)):
        return v
    return Val((take(v.items[0], idx),), len(idx), v.boolean)


def concat(vals: Sequence[Val]) -> Val:
    """Concatenate scalars and vectors into one vector."""
    n = sum(v.n for v in vals)
    boolean = bool(vals) and all(v.boolean for v in vals)
    if n <= SMALL:
        comps: list[sp.Basic] = []
        for v in vals:
            comps.extend(v.items)
        return Val(tuple(comps), n, boolean)
    parts: list[sp.Basic] = []
    for v in vals:
        parts.extend(v.items)
    return Val((Concat(*parts),), n, boolean)


def _reduce(v: Val, packed: Callable[[sp.Basic], sp.Basic], expanded: Callable[..., sp.Basic]) -> Val:
    if v.size is None:
        return v
    v = as_number(v)
    if v.packed:
        return scalar(packed(v.items[0]))
    return scalar(expanded(*v.items))


def reduce_sum(v: Val) -> Val:
    """Sum of the elements (a scalar stays itself)."""
    return _reduce(v, RSum, sp.Add)


def reduce_max(v: Val) -> Val:
    """Largest element."""
    return _reduce(v, RMax, sp.Max)


def reduce_min(v: Val) -> Val:
    """Smallest element."""
    return _reduce(v, RMin, sp.Min)
