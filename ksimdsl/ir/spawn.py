"""Where an episode starts on a `terrain`, and how far the base has travelled since (`curriculum distance`).

Spawning (the last write of the `reset` kernel, after the task's own `reset`
writes, which are thus relative to the tile): the env's row is its level,
`row = round(level * (rows - 1))`, its column one uniform draw, `col =
floor(u * cols)`; the root's position is moved by the tile's centre (x, y) and
raised by the ground height there. x and y are linear in the row and column;
the ground heights are the constant table `TERRAIN_SPAWN_Z` (one per tile,
from `ksimdsl.model.terrain.tile_origins`), read as a sum over a one-hot mask,
so both backends compute the same numbers from the same draws.

`curriculum distance` keeps two mem slots: `curriculum.spawn` (the base's x, y
after the reset) and `curriculum.travelled` (the distance in the xy plane from
there, updated by every `step`); the runtime reads the latter when an episode ends.
"""

from __future__ import annotations

import sympy as sp

from ksimdsl.abi import MEM_SPAWN, MEM_TRAVELLED
from ksimdsl.errors import Span
from ksimdsl.frontend import typed as T
from ksimdsl.ir import vec
from ksimdsl.ir.arrays import ArrayBuilder, num
from ksimdsl.ir.exprs import Lowerer
from ksimdsl.ir.formulas import where
from ksimdsl.ir.program import LEVEL
from ksimdsl.ir.vec import SMALL
from ksimdsl.model.terrain import Terrain, tile_origins

__all__ = ["SPAWN_SLOT", "TRAVELLED_SLOT", "spawn_on_terrain", "travelled"]

SPAWN_SLOT = MEM_SPAWN
TRAVELLED_SLOT = MEM_TRAVELLED
_HALF = sp.Rational(1, 2)


def spawn_on_terrain(lo: Lowerer, qpos: ArrayBuilder, terrain: Terrain, root: T.FreeRoot, span: Span | None) -> None:
    """Move the root's position in `qpos` onto the env's tile (see the module docstring)."""
    rows, cols = terrain.rows, terrain.cols
    origins = tile_origins(terrain)
    with lo.at("terrain", span):
        row = sp.Max(sp.Min(sp.floor(LEVEL * (rows - 1) + _HALF), rows - 1), 0) if rows > 1 else sp.Integer(0)
        col = sp.Integer(0)
        if cols > 1:
            u = lo.take("uniform", None, span).items[0]
            col = sp.Min(sp.floor(u * cols), cols - 1)
        x0, y0 = terrain.center(0, 0)
        offset = [
            num(x0) + row * num(terrain.size),
            num(y0) + col * num(terrain.size),
            _ground(lo, origins[:, 2], row * cols + col),
        ]
        adr = root.qpos_adr
        idx = (adr, adr + 1, adr + 2)
        old = qpos.read(idx)
        new = vec.vector([a + b for a, b in zip(old.components(), offset)])
        qpos.write(idx, lo.claim(new), "spawn", span)


def _ground(lo: Lowerer, z: list[float], tile: sp.Basic) -> sp.Basic:
    """The ground height of tile number `tile` (a sympy integer expression)."""
    if len(set(float(v) for v in z)) == 1:
        return num(z[0])
    n = len(z)
    if n <= SMALL:
        return sp.Add(*[where(sp.Abs(tile - k) < _HALF, num(v), sp.Integer(0)) for k, v in enumerate(z)])
    ks = vec.const_array(f"ARANGE_{n}", list(range(n)))
    table = vec.const_array("TERRAIN_SPAWN_Z", [float(v) for v in z])
    picked = vec.Val((where(sp.Abs(tile - ks) < _HALF, table, sp.Integer(0)),), n)
    return lo.claim(vec.reduce_sum(picked)).items[0]


def travelled(root: T.FreeRoot, spawn: vec.Val) -> vec.Val:
    """The base's distance in the xy plane from `spawn` (its x, y at the reset), from the physics qpos."""
    q = vec.array("qpos")
    sx, sy = spawn.components()
    dx, dy = q[root.qpos_adr] - sx, q[root.qpos_adr + 1] - sy
    return vec.scalar(sp.sqrt(dx**2 + dy**2))
