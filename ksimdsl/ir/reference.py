"""Lowering the reference motion (`reference` statement, `ref.*`): frame tables and interpolation.

The clip's frames become module-level constant tables of the generated code, one row per frame:
`REF_QPOS` [F, nq] and `REF_QVEL` [F, nv] (the model's order) and `REF_BODY_POS` [F, 3 B] (the
bodies `ref.body_pos` reads), each emitted only when something reads it. A kernel reads a row at a
computed frame index with the sympy leaves below (`REF_QPOS[i, 3]`, `REF_QPOS[i, 7:28]`).

Where the reference is (docs/motions.md): the clip has F frames at `fps`; its position `p` is measured
in frames, in [0, F - 1]. `reset` draws the episode's start `p0` (`random`: (F - 1) u with u ~ U[0, 1),
`fixed`: 0) into the mem slot `ref.start`; afterwards `p = p0 + time * fps`, wrapped into [0, F - 1)
(`loop`) or held at F - 1 (`clamp`), so the reference advances with the episode's physics time, one
frame per 1 / fps seconds. A value is the linear interpolation between frames i = min(floor(p), F - 2)
and i + 1 with weight w = p - i; quaternions are normalized afterwards. `ref.phase` is p / (F - 1).
A position that is not a finite number in range (a corrupted memory) reads as frame 0, so a kernel
never indexes outside a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import sympy as sp

from ksimdsl.errors import InternalCompilerError
from ksimdsl.frontend import typed as T
from ksimdsl.ir import vec
from ksimdsl.ir.program import Table, TIME
from ksimdsl.ir.vec import Val

__all__ = ["TableAt", "TableSlice", "TableGather", "table_columns", "ReferenceTables", "ReferenceReader", "TABLE_NAMES"]

#: Module-level names of the tables, by `RefRead.table`.
TABLE_NAMES = {"qpos": "REF_QPOS", "qvel": "REF_QVEL", "body_pos": "REF_BODY_POS"}


class TableAt(sp.Function):
    """One element `table[row, col]` of a frame table (row: a scalar expression with an integer value).

    args: (table Symbol, row, col Integer).
    """

    nargs = 3
    is_real = True
    is_commutative = True

    @property
    def table(self) -> str:
        return self.args[0].name

    @property
    def row(self) -> sp.Basic:
        return self.args[1]

    @property
    def col(self) -> int:
        return int(self.args[2])


class TableSlice(vec.PackedLeaf):
    """`table[row, start:stop]`: a packed run of one frame. args: (table Symbol, row, start, stop)."""

    nargs = 4

    @property
    def table(self) -> str:
        return self.args[0].name

    @property
    def row(self) -> sp.Basic:
        return self.args[1]

    @property
    def start(self) -> int:
        return int(self.args[2])

    @property
    def stop(self) -> int:
        return int(self.args[3])

    @property
    def size(self) -> int:
        return self.stop - self.start

    def element(self, i: int) -> sp.Expr:
        return TableAt(self.args[0], self.row, self.start + i)

    def take(self, indices: Sequence[int]) -> sp.Expr:
        return table_columns(self.args[0], self.row, [self.start + i for i in indices])


class TableGather(vec.PackedLeaf):
    """`table[row][[c0, c1, ...]]`: packed columns of one frame. args: (table Symbol, row, *cols)."""

    @property
    def table(self) -> str:
        return self.args[0].name

    @property
    def row(self) -> sp.Basic:
        return self.args[1]

    @property
    def columns(self) -> tuple[int, ...]:
        return tuple(int(c) for c in self.args[2:])

    @property
    def size(self) -> int:
        return len(self.args) - 2

    def element(self, i: int) -> sp.Expr:
        return TableAt(self.args[0], self.row, self.columns[i])

    def take(self, indices: Sequence[int]) -> sp.Expr:
        cols = self.columns
        return table_columns(self.args[0], self.row, [cols[i] for i in indices])


def table_columns(table: sp.Symbol, row: sp.Basic, cols: Sequence[int]) -> sp.Expr:
    """Columns `cols` (more than `vec.SMALL`) of frame `row`: a slice when they are contiguous."""
    cols = [int(c) for c in cols]
    if cols == list(range(cols[0], cols[0] + len(cols))):
        return TableSlice(table, row, cols[0], cols[0] + len(cols))
    return TableGather(table, row, *cols)


def _row(table: sp.Symbol, row: sp.Basic, cols: Sequence[int]) -> Val:
    """Columns `cols` of frame `row` as a value (scalars when few)."""
    if len(cols) <= vec.SMALL:
        return Val(tuple(TableAt(table, row, c) for c in cols), len(cols))
    return Val((table_columns(table, row, cols),), len(cols))


@dataclass
class ReferenceTables:
    """The reference of one task: the tables its kernels read (registered on first use, across phases)."""

    ref: T.ReferenceDef
    used: dict[str, Table]

    @staticmethod
    def of(task: T.CheckedTask) -> "ReferenceTables | None":
        return None if task.reference is None else ReferenceTables(task.reference, {})

    @property
    def last(self) -> int:
        """F - 1: the index of the last frame (the position runs over [0, F - 1])."""
        return self.ref.frames - 1

    def symbol(self, kind: str) -> sp.Symbol:
        name = TABLE_NAMES[kind]
        if name not in self.used:
            self.used[name] = self._table(kind, name)
        return sp.Symbol(name)

    def _table(self, kind: str, name: str) -> Table:
        ref = self.ref
        frames = f"the clip's {ref.frames} frames ({ref.fps:g} fps)"
        if kind == "qpos":
            values, what = ref.qpos, f"qpos of {frames}, model order"
        elif kind == "qvel":
            source = "" if ref.qvel_given else ", differences of qpos"
            values, what = ref.qvel, f"qvel of {frames}, model order{source}"
        else:
            values = np.asarray(ref.body_pos).reshape(ref.frames, -1)
            what = f"world x y z of {', '.join(ref.body_names)} in {frames}"
        return Table(name, np.asarray(values, np.float32), what, ref.span)

    def tables(self) -> tuple[Table, ...]:
        return tuple(self.used[n] for n in TABLE_NAMES.values() if n in self.used)

    # ------------------------------------------------------------ where the reference is

    def start(self, u: sp.Basic | None) -> sp.Basic:
        """The episode's start position drawn at reset from the uniform draw `u` (None: `fixed`, 0)."""
        return sp.Integer(0) if u is None else self.last * u

    def position(self, start: sp.Basic) -> sp.Basic:
        """The position during an episode: `start + time * fps`, wrapped (loop) or held (clamp), in range."""
        L = self.last
        p = start + TIME * sp.Float(self.ref.fps)
        if self.ref.loop:
            p = p - L * sp.floor(p / L)
        # in [0, L] for any finite start; anything else (NaN) reads as frame 0
        return sp.Piecewise((p, sp.And(p >= 0, p <= L)), (sp.Integer(L), p > L), (sp.Integer(0), True))

    def reader(self, position: sp.Basic) -> "ReferenceReader":
        return ReferenceReader(self, position)


class ReferenceReader:
    """Reads `RefRead`s at one position (a phase's `p`), sharing the frame index and weight."""

    def __init__(self, tables: ReferenceTables, position: sp.Basic) -> None:
        self.tables = tables
        self.position = position
        self.frame = sp.Min(sp.floor(position), tables.last - 1)
        self.blend = position - self.frame

    def names(self) -> dict[sp.Basic, str]:
        """Readable names for the shared sub-expressions (CSE temporaries)."""
        return {self.position: "ref_position", self.frame: "ref_frame", self.blend: "ref_blend"}

    def read(self, node: T.RefRead) -> Val:
        if node.table == "phase":
            return vec.scalar(self.position / self.tables.last)
        if node.table not in TABLE_NAMES:
            raise InternalCompilerError(f"unknown reference table {node.table!r}")
        table = self.tables.symbol(node.table)
        cols = node.columns
        starts = sorted(node.quats)
        pieces: list[Val] = []
        k = 0
        for q in starts + [len(cols)]:
            if q > k:
                pieces.append(self._lerp(table, cols[k:q]))
            if q < len(cols):
                pieces.append(self._nlerp(table, cols[q : q + 4]))
            k = q + 4
        return pieces[0] if len(pieces) == 1 else vec.concat(pieces)

    def _lerp(self, table: sp.Symbol, cols: Sequence[int]) -> Val:
        a, b, w = _row(table, self.frame, cols), _row(table, self.frame + 1, cols), self.blend
        return vec.elementwise(lambda x, y: x + w * (y - x), a, b)

    def _nlerp(self, table: sp.Symbol, cols: Sequence[int]) -> Val:
        q = self._lerp(table, cols).components()
        norm = sp.sqrt(sum(c**2 for c in q))
        return vec.vector([c / norm for c in q])

