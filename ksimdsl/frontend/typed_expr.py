"""Typed expressions: the node kinds of `ksimdsl.frontend.typed` (see its docstring).

Imported through `ksimdsl.frontend.typed`, which re-exports every name here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from ksimdsl.errors import Span

__all__ = [
    "Type",
    "FLOAT",
    "BOOL",
    "Const",
    "PhysRead",
    "Level",
    "Action",
    "StateRef",
    "CommandRef",
    "Prev",
    "Let",
    "Quantity",
    "Apply",
    "Gather",
    "Concat",
    "Unary",
    "Binary",
    "Compare",
    "Logic",
    "Where",
    "Cast",
    "Dist",
    "RefRead",
    "Expr",
    "children",
    "walk",
    "span_field",
]

# --------------------------------------------------------------------------- types


@dataclass(frozen=True, slots=True)
class Type:
    """Static type of an expression: element kind and shape (() scalar, (n,) vector)."""

    kind: str  # "float" | "bool"
    shape: tuple[int, ...] = ()

    @property
    def is_scalar(self) -> bool:
        return self.shape == ()

    @property
    def size(self) -> int:
        """Number of scalar elements (1 for a scalar)."""
        return self.shape[0] if self.shape else 1

    def with_shape(self, shape: tuple[int, ...]) -> "Type":
        return Type(self.kind, shape)

    def with_kind(self, kind: str) -> "Type":
        return Type(kind, self.shape)

    def __str__(self) -> str:
        if self.kind == "float":
            return "scalar" if not self.shape else f"vector[{self.shape[0]}]"
        return self.kind if not self.shape else f"{self.kind}[{self.shape[0]}]"


FLOAT = Type("float", ())
BOOL = Type("bool", ())


def span_field() -> Any:
    """A `span` field: excluded from equality and repr."""
    return field(default=None, compare=False, repr=False)


# --------------------------------------------------------------------------- expressions


@dataclass(frozen=True, slots=True)
class Const:
    """A compile-time constant: a float for scalars, a tuple of floats for vectors.

    Units are already folded (deg -> radians, ms/s -> seconds, steps -> count).
    A bool constant has `type.kind == "bool"` and values 0.0 / 1.0.
    """

    value: float | tuple[float, ...]
    type: Type
    span: Span | None = span_field()

    @property
    def values(self) -> tuple[float, ...]:
        """The value as a tuple (one element for a scalar)."""
        return self.value if isinstance(self.value, tuple) else (self.value,)


@dataclass(frozen=True, slots=True)
class PhysRead:
    """Elements of a raw physics array (a key of `ksimdsl.abi.PHYS_FIELDS`).

    `elements[k]` is the full per-env index of result element k: `(i,)` for the
    1-D arrays (qpos, qvel, qacc, actuator_force, sensordata, contact,
    contact_force), `(row, col)` for the 2-D ones (xpos, xquat, xmat, cvel,
    cinert, subtree_com, site_xpos), `()` for `time`. The result is a scalar
    when `type.shape == ()` (then `elements` has exactly one entry).
    """

    array: str
    elements: tuple[tuple[int, ...], ...]
    type: Type
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class Level:
    """The env's curriculum level in [0, 1] (scalar float)."""

    type: Type = FLOAT
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class Action:
    """The policy's action for this control step, clipped to [-1, 1]; shape (action_size,)."""

    type: Type
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class StateRef:
    """The value of `state name` before this step's updates (see `CheckedTask.states`)."""

    name: str
    type: Type
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class CommandRef:
    """The current value of `command name`: one element per field, in declaration order."""

    name: str
    type: Type
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class Prev:
    """`prev(expr)`: `expr` one control step earlier (equals `expr` on the first step).

    `slot` indexes `CheckedTask.prev_slots`; equal expressions share a slot.
    """

    expr: "Expr"
    slot: int
    type: Type
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class Let:
    """A use of `let name = value`; `value` is the typed definition (shared by every use)."""

    name: str
    value: "Expr"
    type: Type
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class Quantity:
    """A built-in quantity or model lookup, kept by name for readable generated code.

    `name` is the built-in (`base_ang_vel`, `joint_pos`, `body_pos`, `sensor`,
    `contact`, ...), `arg` the model name(s) given to a lookup (`"torso"`) or
    None. `value` is the exact expansion into primitive nodes (PhysRead, Apply,
    Gather, ...); lowering `value` is always correct. `labels` are the MJCF names
    of the elements (used by `v["glob"]` selection), empty when not meaningful.
    """

    name: str
    arg: str | None
    value: "Expr"
    type: Type
    labels: tuple[str, ...] = ()
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class Apply:
    """A math function applied to typed arguments in the fixed order of `builtins.FUNCTIONS`.

    Keyword arguments are already placed and defaults filled in, e.g.
    `tolerance(x, lo, hi, margin, value_at_margin)` with `mode` = the sigmoid
    name. Reductions of a single vector argument are named `reduce_min` /
    `reduce_max`; the two-argument `min`/`max` are elementwise.
    """

    func: str
    args: tuple["Expr", ...]
    type: Type
    mode: str | None = None
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class Gather:
    """Constant-index selection `base[indices]` (0-based, in range, already resolved).

    Produced by swizzles (`.xy`), `v[i]`, `v[i:j]` and `v["glob"]`. The result is
    a scalar when `type.shape == ()` (then `indices` has one entry).
    """

    base: "Expr"
    indices: tuple[int, ...]
    type: Type
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class Concat:
    """A vector literal with non-constant elements: scalars and vectors concatenated."""

    items: tuple["Expr", ...]
    type: Type
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class Unary:
    """`-x` (float, elementwise)."""

    op: str  # "-"
    operand: "Expr"
    type: Type
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class Binary:
    """Elementwise float arithmetic `+ - * / ^`; a scalar operand broadcasts."""

    op: str
    left: "Expr"
    right: "Expr"
    type: Type
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class Compare:
    """Elementwise comparison `< <= > >= == !=` of floats; result kind bool."""

    op: str
    left: "Expr"
    right: "Expr"
    type: Type
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class Logic:
    """Boolean `and` / `or` (two operands) or `not` (one operand), elementwise."""

    op: str  # "and" | "or" | "not"
    operands: tuple["Expr", ...]
    type: Type
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class Where:
    """`where(cond, a, b)`: elementwise select; scalars broadcast; `a`/`b` same kind."""

    cond: "Expr"
    a: "Expr"
    b: "Expr"
    type: Type
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class Cast:
    """Bool to float (true -> 1.0, false -> 0.0); inserted where a float is due."""

    operand: "Expr"
    type: Type
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class Dist:
    """A random draw of shape `type.shape`, one independent value per element.

    `kind` "uniform": params (lo, hi); "gaussian": params (mean, std). Params are
    scalar expressions or vectors of the draw's length (constants and `level`
    only). `uniform(a)` was normalized to (-a, a), `gaussian(s)` to (0, s).
    """

    kind: str
    params: tuple["Expr", "Expr"]
    type: Type
    span: Span | None = span_field()


@dataclass(frozen=True, slots=True)
class RefRead:
    """The reference motion (`ref.*`) at the current phase.

    `table` "qpos" / "qvel": elements `columns` of the clip's frame in the model's qpos / qvel order;
    "body_pos": elements `columns` of the table of the bodies `ref.body_pos` reads (3 per body, in
    `ReferenceDef.bodies` order); "phase": the phase itself (scalar, `columns` empty). Frames are
    interpolated linearly; the 4 elements starting at each position of `quats` are a quaternion,
    normalized after the interpolation.
    """

    table: str
    columns: tuple[int, ...]
    type: Type
    quats: tuple[int, ...] = ()
    span: Span | None = span_field()


Expr = Union[
    Const,
    PhysRead,
    Level,
    Action,
    StateRef,
    CommandRef,
    Prev,
    Let,
    Quantity,
    Apply,
    Gather,
    Concat,
    Unary,
    Binary,
    Compare,
    Logic,
    Where,
    Cast,
    Dist,
    RefRead,
]


def children(node: Expr) -> tuple[Expr, ...]:
    """The direct sub-expressions of `node` (a `Prev`'s expr and a `Quantity`'s value included)."""
    if isinstance(node, (Const, PhysRead, Level, Action, StateRef, CommandRef, RefRead)):
        return ()
    if isinstance(node, Prev):
        return (node.expr,)
    if isinstance(node, (Let, Quantity)):
        return (node.value,)
    if isinstance(node, (Apply,)):
        return node.args
    if isinstance(node, Gather):
        return (node.base,)
    if isinstance(node, Concat):
        return node.items
    if isinstance(node, (Unary, Cast)):
        return (node.operand,)
    if isinstance(node, (Binary, Compare)):
        return (node.left, node.right)
    if isinstance(node, Logic):
        return node.operands
    if isinstance(node, Where):
        return (node.cond, node.a, node.b)
    if isinstance(node, Dist):
        return node.params
    raise TypeError(f"not a typed expression: {node!r}")


def walk(node: Expr):
    """Yield `node` and every sub-expression, depth first (pre-order).

    A node shared by several parents (a `let` used twice) is visited once, so
    a walk is linear in the number of distinct nodes.
    """
    stack = [node]
    seen: set[int] = set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        yield n
        stack.extend(reversed(children(n)))
