"""The lowered task: per phase, the output arrays as sympy values, plus the mem layout.

`ksimdsl.ir.lower.lower_task(CheckedTask) -> TaskIR` builds this; the code
generators print it. Every output array of a phase (`actor`, `reward_terms`,
`mem`, `qpos`, a randomized model field, ...) is a list of `Segment`s, each a
named, contiguous piece holding a `vec.Val`. Inputs are referenced inside the
sympy expressions by name (`qpos[3]`, `mem[10:31]`, `rand_u[0]`, `level`,
`time`); `PhaseIR.input_names()` lists them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import sympy as sp

from ksimdsl.errors import Span
from ksimdsl.ir import vec
from ksimdsl.ir.dag import unique_nodes
from ksimdsl.ir.vec import Val

__all__ = ["Origin", "DrawUse", "Segment", "Output", "PhaseIR", "MemSlot", "Table", "TaskIR", "LEVEL", "TIME", "expr_input_names", "exprs_input_names", "format_task_ir"]

#: The env's curriculum level (a scalar input of every phase).
LEVEL = sp.Symbol("level", real=True)
#: Episode time in seconds (`phys["time"]`).
TIME = sp.Symbol("time", real=True)


@dataclass(frozen=True)
class Origin:
    """Where something of the generated code comes from: a definition's name and its task text."""

    name: str
    span: Span | None = None


@dataclass(frozen=True)
class DrawUse:
    """The standard draws `base[start : start + count]` (`rand_n` or `rand_u`), feeding the text at `span`."""

    base: str
    start: int
    count: int
    span: Span | None = None


@dataclass(frozen=True)
class Segment:
    """`size` elements at `offset` of an output array, named `label` in generated code.

    `span` is the task text that defines it (None for pass-through elements).
    """

    label: str
    offset: int
    val: Val
    span: Span | None = None

    @property
    def size(self) -> int:
        return self.val.n


@dataclass(frozen=True)
class Output:
    """One output array of a phase (per env).

    `key` is the ABI name (`actor`, `critic`, `reward_terms`, `reward_weights`,
    `terminations`, `metrics`, `mem`, `qpos`, `qvel`, or a model field name in reset);
    `shape` the per-env shape (2-D for fields such as geom_friction, which are
    lowered flattened); `prefix` prefixes the variable names of its segments;
    `title` is the comment above its block. `is_field` marks randomized fields.
    """

    key: str
    size: int
    boolean: bool
    segments: tuple[Segment, ...]
    prefix: str
    title: str
    shape: tuple[int, ...] = ()
    is_field: bool = False

    def __post_init__(self) -> None:
        pos = 0
        for seg in self.segments:
            if seg.offset != pos:
                raise ValueError(f"output {self.key}: segment {seg.label} at {seg.offset}, expected {pos}")
            pos += seg.size
        if pos != self.size:
            raise ValueError(f"output {self.key}: segments cover {pos} of {self.size}")

    @property
    def full_shape(self) -> tuple[int, ...]:
        return self.shape or (self.size,)


@dataclass(frozen=True)
class PhaseIR:
    """One kernel (`reset`, `observe` or `step`): its outputs and random-draw counts."""

    name: str
    outputs: tuple[Output, ...]
    rand_normal: int
    rand_uniform: int
    #: readable names for sub-expressions that CSE extracts (built-in quantities)
    names: Mapping[sp.Basic, str] = field(default_factory=dict)
    #: `let` definitions: printed as a variable of that name wherever used
    lets: Mapping[sp.Basic, str] = field(default_factory=dict)
    #: the phase's random draws, in allocation order
    draws: tuple[DrawUse, ...] = ()
    #: anonymous constant arrays (ConstArr nodes) and gather index tuples -> the definition they belong to
    origins: Mapping[object, Origin] = field(default_factory=dict)
    #: variable name of a `let` -> its definition in the task
    let_spans: Mapping[str, Span] = field(default_factory=dict)

    def output(self, key: str) -> Output:
        for out in self.outputs:
            if out.key == key:
                return out
        raise KeyError(key)

    def exprs(self) -> list[sp.Basic]:
        """Every output expression (scalars and packed arrays), in output order."""
        return [item for out in self.outputs for seg in out.segments for item in seg.val.items]

    def input_names(self) -> set[str]:
        return exprs_input_names(self.exprs())


def expr_input_names(expr: sp.Basic) -> set[str]:
    """Names of the input arrays/scalars an expression reads (`qpos`, `mem`, `level`, ...)."""
    return exprs_input_names([expr])


def exprs_input_names(exprs: Iterable[sp.Basic]) -> set[str]:
    """Names of the input arrays/scalars any of `exprs` reads (each shared node visited once)."""
    names: set[str] = set()
    for node in unique_nodes(exprs):
        if isinstance(node, sp.Indexed):
            names.add(str(node.base.label))
        elif isinstance(node, (vec.ArrSlice, vec.ArrGather)):
            names.add(node.base.name)
        elif isinstance(node, sp.Symbol) and node in (LEVEL, TIME):
            names.add(node.name)
    return names


@dataclass(frozen=True)
class MemSlot:
    """A named region of the per-env `mem` vector.

    `span` is the task text that needs it; a `scalar` slot holds a scalar value
    (a vector slot of size 1 holds a 1-vector).
    """

    name: str
    offset: int
    size: int
    span: Span | None = None
    scalar: bool = False


@dataclass(frozen=True, eq=False)
class Table:
    """A module-level constant table of the generated code: `values` [F, C] float32, one row per frame
    of the reference motion (`ksimdsl.ir.reference`), described by `title`, from the task text at `span`."""

    name: str
    values: Any  # np.ndarray (F, C) float32
    title: str
    span: Span | None = None


@dataclass(frozen=True)
class TaskIR:
    """The whole lowered task."""

    phases: Mapping[str, PhaseIR]
    mem_slots: tuple[MemSlot, ...]
    mem_size: int
    rewards: tuple[str, ...]  # kept reward terms, in order
    dropped_rewards: tuple[str, ...]  # terms whose weight folded to exactly 0
    randomize_fields: tuple[str, ...]
    field_shapes: Mapping[str, tuple[int, ...]]
    writes_phys: bool
    commands: tuple[Mapping[str, object], ...]
    metrics: tuple[str, ...] = ()  # `metric` names, in order (the `metrics` output of step)
    tables: tuple[Table, ...] = ()  # the reference motion's frame tables the kernels read

    def slot(self, name: str) -> MemSlot:
        for s in self.mem_slots:
            if s.name == name:
                return s
        raise KeyError(name)


def format_task_ir(ir: TaskIR) -> str:
    """A readable dump of the lowered task (used by golden tests and debugging).

    One line per output segment: `phase.output[offset:end] label = value`, the
    value in sympy's string form (packed arrays as `ArrSlice(qvel, 6, 27)`,
    reductions as `RSum(...)`).
    """
    lines = [f"mem[{ir.mem_size}]: " + ", ".join(f"{s.name}@{s.offset}+{s.size}" for s in ir.mem_slots)]
    if ir.dropped_rewards:
        lines.append("dropped rewards: " + ", ".join(ir.dropped_rewards))
    for name, phase in ir.phases.items():
        lines.append(f"{name}: rand_n {phase.rand_normal}, rand_u {phase.rand_uniform}")
        for out in phase.outputs:
            for seg in out.segments:
                end = seg.offset + seg.size
                value = sp.sstr(seg.val.items[0] if len(seg.val.items) == 1 else list(seg.val.items))
                label = f" {seg.label}" if seg.label else ""
                lines.append(f"  {out.key}[{seg.offset}:{end}]{label} = {value}")
    return "\n".join(lines)
