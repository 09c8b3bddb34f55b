"""Builders the lowering fills in: random draws, the mem layout and edited output arrays.

* `Draws` hands out a phase's standard draws (`rand_n` ~ N(0, 1), `rand_u` ~
  U[0, 1)) in a fixed order and logs which task line each range feeds;
* `MemLayout` assigns the named regions of the per-env `mem` vector;
* `ArrayBuilder` is an output array edited by successive writes (qpos, qvel,
  mem, model fields), each write remembering its label and task line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import sympy as sp

from ksimdsl.errors import InternalCompilerError, Span
from ksimdsl.ir import vec
from ksimdsl.ir.program import DrawUse, MemSlot, Segment
from ksimdsl.ir.vec import Val

__all__ = ["Draws", "MemLayout", "ArrayBuilder", "select_any", "combine", "fit", "zeros", "num", "ident"]


class Draws:
    """Allocates a phase's standard random draws: `rand_n` ~ N(0, 1), `rand_u` ~ U[0, 1)."""

    def __init__(self) -> None:
        self.normal = 0
        self.uniform = 0
        self.log: list[DrawUse] = []

    def take(self, kind: str, size: int | None, span: Span | None = None) -> Val:
        """`size` fresh draws (a scalar when `size` is None) of kind "normal" or "uniform".

        `span` is the task text they feed (for the table of draws in the generated code).
        """
        k = 1 if size is None else size
        if kind == "normal":
            base, start = "rand_n", self.normal
            self.normal += k
        elif kind == "uniform":
            base, start = "rand_u", self.uniform
            self.uniform += k
        else:
            raise InternalCompilerError(f"unknown draw kind {kind!r}")
        self.log.append(DrawUse(base, start, k, span))
        if size is None:
            return vec.scalar(vec.array(base)[start])
        return vec.from_array(base, range(start, start + k))


class MemLayout:
    """Assigns named regions of the per-env `mem` vector (float32)."""

    def __init__(self) -> None:
        self._slots: dict[str, MemSlot] = {}
        self.size = 0

    def add(self, name: str, size: int, scalar: bool = False, span: Span | None = None) -> None:
        if name in self._slots:
            raise InternalCompilerError(f"mem slot {name!r} allocated twice")
        self._slots[name] = MemSlot(name, self.size, size, span, scalar)
        self.size += size

    def __contains__(self, name: str) -> bool:
        return name in self._slots

    def slot(self, name: str) -> MemSlot:
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
        return tuple(self._slots.values())


@dataclass(frozen=True)
class _Patch:
    """One write: `val` at `indices`, labelled `label`, from the task text at `span`."""

    indices: tuple[int, ...]
    val: Val
    label: str
    span: Span | None


class ArrayBuilder:
    """An output array edited by successive writes (qpos, qvel, mem, model fields).

    Unwritten elements pass the input array `base` through (or are zero when
    `base` is None). Writes keep packed values packed, so that `joint_pos +=
    uniform(...)` stays one array expression.
    """

    def __init__(self, base: str | None, size: int) -> None:
        self.base = base
        self.size = size
        self._patches: list[_Patch] = []

    def _source(self, i: int) -> tuple[int, int] | None:
        """(patch number, position) holding element i, None for the input."""
        for p in range(len(self._patches) - 1, -1, -1):
            idx = self._patches[p].indices
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
            val = self._patches[pid].val
            positions = [s[1] for s in srcs]
            if val.size is None:
                return vec.broadcast(val, len(positions)) if len(positions) > 1 else vec.vector([val.items[0]])
            return vec.select(val, positions)
        return vec.vector([self._element(i, s) for i, s in zip(indices, srcs)])

    def _element(self, i: int, src: tuple[int, int] | None) -> sp.Basic:
        if src is None:
            return vec.array(self.base)[i] if self.base else sp.Integer(0)
        return self._patches[src[0]].val.component(src[1])

    def _base_val(self, indices: tuple[int, ...]) -> Val:
        if self.base is None:
            return vec.broadcast(vec.scalar(0), len(indices))
        return vec.from_array(self.base, indices)

    def write(self, indices: Sequence[int], val: Val, label: str, span: Span | None = None) -> None:
        indices = tuple(indices)
        if val.n != len(indices):
            raise InternalCompilerError(f"write of {val.n} values to {len(indices)} elements")
        taken = set(indices)
        kept: list[_Patch] = []
        for patch in self._patches:
            keep = [k for k, i in enumerate(patch.indices) if i not in taken]
            if len(keep) == len(patch.indices):
                kept.append(patch)
            elif keep:
                idx = tuple(patch.indices[k] for k in keep)
                kept.append(_Patch(idx, select_any(patch.val, keep), patch.label, patch.span))
        kept.append(_Patch(indices, val, label, span))
        self._patches = kept

    def segments(self) -> tuple[Segment, ...]:
        runs: list[tuple[int, Val, _Patch]] = []
        for patch in self._patches:
            idx, v = patch.indices, patch.val
            start = 0
            for k in range(1, len(idx) + 1):
                if k == len(idx) or idx[k] != idx[k - 1] + 1:
                    positions = list(range(start, k))
                    part = v if len(positions) == v.n else select_any(v, positions)
                    runs.append((idx[start], part, patch))
                    start = k
        runs.sort(key=lambda r: r[0])
        segs: list[Segment] = []
        pos = 0
        for first, v, patch in runs:
            if first > pos:
                segs.append(Segment("", pos, self._base_val(tuple(range(pos, first)))))
            segs.append(Segment(patch.label, first, v, patch.span))
            pos = first + v.n
        if pos < self.size:
            segs.append(Segment("", pos, self._base_val(tuple(range(pos, self.size)))))
        return tuple(segs)


def select_any(v: Val, positions: Sequence[int]) -> Val:
    """Elements `positions` of `v` (a scalar stays a scalar: it broadcasts)."""
    if v.size is None:
        return v
    if len(positions) == 1:
        return vec.scalar(v.component(positions[0]), v.boolean)
    return vec.select(v, positions)


def combine(op: str, old: Val, value: Val) -> Val:
    """`old op value` for an assignment operator (`=`, `+=`, `*=`)."""
    if op == "=":
        return value if value.size == old.size else vec.broadcast(value, old.size)
    if op == "+=":
        return vec.elementwise(lambda a, b: a + b, old, value)
    if op == "*=":
        return vec.elementwise(lambda a, b: a * b, old, value)
    raise InternalCompilerError(f"assignment operator {op!r}")


def fit(v: Val, slot: MemSlot) -> Val:
    """`v` shaped for a mem slot (scalars broadcast to vector slots)."""
    if slot.scalar:
        if v.size is not None:
            raise InternalCompilerError(f"vector of size {v.size} for a scalar slot")
        return v
    if v.size is None:
        return vec.broadcast(v, slot.size) if slot.size > 1 else vec.vector([v.items[0]])
    return v


def zeros(slot: MemSlot) -> Val:
    return vec.scalar(0) if slot.scalar else vec.broadcast(vec.scalar(0), slot.size)


def num(v: float) -> sp.Basic:
    """A sympy number: an Integer when `v` is integral, else a Float."""
    v = float(v)
    return sp.Integer(int(v)) if v.is_integer() else sp.Float(v)


def ident(name: str) -> str:
    """`name` as a Python identifier (other characters become `_`)."""
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return out if out and not out[0].isdigit() else f"_{out}"
