"""Height scans on C MuJoCo: the downward rays of `height_scan(...)`, cast from numba without the GIL.

Every ray is intersected with each ground geom (`engine/heightscan.py`):
planes and boxes by C MuJoCo's own `mju_rayGeom` (from the static poses of
`ScanTables`; planes with a zero size, so infinite), declared as an external
function of `libmujoco` like `mj_step` in `cstep.py`; height fields in closed
form (`_hfield_z`: MuJoCo's triangulation, as in `mjx/heightscan.py`), because
`mj_rayHfield` costs ~350 ns a ray over a field and ~100 us for a ray beside
one (mujoco 3.17), while the closed form costs a few ns; tests/test_height_scan.py
checks it against `mj_ray` to 1e-9 m. Not `mj_ray` itself: it cannot leave out
every robot body (`bodyexclude` names one), and it skips invisible geoms.
The nearest hit wins. `mju_rayGeom` gained a trailing `normal` output
(nullable) in later MuJoCo releases; a NULL is always passed, which releases
without it ignore (the C calling conventions leave extra register arguments unread).

The scans run in the worker threads right after the physics of a chunk of envs
(`cstep.advance`) and before the numba step kernel; the results land in
`height_EH`, the kernels' `height_scan` physics input.

    scans = HostHeightScan(spec, mj_model, datas)
    scans.run(lo, hi)                     # envs [lo, hi)
    scans.run_envs(idx_K)                 # after a reset
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import mujoco
import numpy as np
from numba import njit, types

from ksimdsl.abi import TaskSpec
from ksimdsl.runtime.engine.heightscan import HFIELD, MISS, RAY_TOP, ScanTables
from ksimdsl.runtime.engine.mujoco import cstep
from ksimdsl.runtime.engine.mujoco.cstep import _f64ptr

__all__ = ["HostHeightScan", "ScanBundle", "scan_range", "scan_envs"]

_f64p = types.CPointer(types.float64)
_mju_rayGeom = types.ExternalFunction(
    "mju_rayGeom", types.float64(_f64p, _f64p, _f64p, _f64p, _f64p, types.intc, _f64p)
)


class ScanBundle(NamedTuple):
    """The scan points, the ground and the results (h: a scan point, g: a ground geom)."""

    xpos_adr_E: np.ndarray  # uint64: each env's mjData.xpos
    xmat_adr_E: np.ndarray  # uint64: each env's mjData.xmat
    body_H: np.ndarray  # int64
    offset_H2: np.ndarray  # float64, in the body's yaw frame
    type_G: np.ndarray  # int32 (mjtGeom)
    pos_G3: np.ndarray  # float64, static world poses
    mat_G9: np.ndarray
    size_G3: np.ndarray  # height fields: hfield_size[:3]
    hfield_G3: np.ndarray  # int64 (address in hfield_data, nrow, ncol) of a height field; -1 else
    hfield_data: np.ndarray  # float64: every height field's normalized elevations, row-major
    height_EH: np.ndarray  # float64 out: the scan values


@njit(nogil=True, cache=True)
def _hfield_z(x, y, g, b):
    """Height of ground geom g (a z-up height field) over (x, y); -inf beside it."""
    pos, mat, size = b.pos_G3[g], b.mat_G9[g], b.size_G3[g]
    adr, nrow, ncol = b.hfield_G3[g, 0], b.hfield_G3[g, 1], b.hfield_G3[g, 2]
    dx, dy = x - pos[0], y - pos[1]
    lx = mat[0] * dx + mat[3] * dy
    ly = mat[1] * dx + mat[4] * dy
    if abs(lx) > size[0] or abs(ly) > size[1]:
        return -math.inf
    u = (lx + size[0]) / (2.0 * size[0] / (ncol - 1))
    v = (ly + size[1]) / (2.0 * size[1] / (nrow - 1))
    c = min(max(math.floor(u), 0.0), ncol - 2.0)
    r = min(max(math.floor(v), 0.0), nrow - 2.0)
    fu, fv = u - c, v - r
    k = adr + int(r) * ncol + int(c)
    h = b.hfield_data
    h00, h01, h10, h11 = h[k], h[k + 1], h[k + ncol], h[k + ncol + 1]  # h01: next column, h10: next row
    if fu >= fv:  # the triangle (r, c), (r + 1, c + 1), (r, c + 1)
        s = h00 + fu * (h01 - h00) + fv * (h11 - h01)
    else:  # the triangle (r, c), (r + 1, c + 1), (r + 1, c)
        s = h00 + fv * (h10 - h00) + fu * (h11 - h10)
    return pos[2] + size[2] * s


@njit(nogil=True, cache=True)
def _scan_env(e, b):
    """All scan points of env e into row e of b.height_EH."""
    xpos = _f64ptr(b.xpos_adr_E[e])
    xmat = _f64ptr(b.xmat_adr_E[e])
    ray = np.zeros(6)  # the ray's start, then its direction (straight down)
    ray[5] = -1.0
    pnt = _f64ptr(np.uint64(ray.ctypes.data))
    vec = _f64ptr(np.uint64(ray.ctypes.data + 24))
    null = _f64ptr(np.uint64(0))
    pos_adr = np.uint64(b.pos_G3.ctypes.data)
    mat_adr = np.uint64(b.mat_G9.ctypes.data)
    size_adr = np.uint64(b.size_G3.ctypes.data)
    for h in range(b.body_H.shape[0]):
        body = b.body_H[h]
        hx = xmat[9 * body]
        hy = xmat[9 * body + 3]
        norm = np.sqrt(hx * hx + hy * hy)
        c, s = 1.0, 0.0
        if norm > 1e-9:
            c, s = hx / norm, hy / norm
        ox, oy = b.offset_H2[h, 0], b.offset_H2[h, 1]
        z = xpos[3 * body + 2]
        ray[0] = xpos[3 * body] + c * ox - s * oy
        ray[1] = xpos[3 * body + 1] + s * ox + c * oy
        ray[2] = z + RAY_TOP
        best = -1.0
        for g in range(b.type_G.shape[0]):
            if b.type_G[g] == HFIELD:
                ground = _hfield_z(ray[0], ray[1], g, b)
                dist = ray[2] - ground if -math.inf < ground <= ray[2] else -1.0
            else:
                dist = _mju_rayGeom(
                    _f64ptr(pos_adr + np.uint64(24 * g)),
                    _f64ptr(mat_adr + np.uint64(72 * g)),
                    _f64ptr(size_adr + np.uint64(24 * g)),
                    pnt,
                    vec,
                    np.intc(b.type_G[g]),
                    null,
                )
            if dist >= 0.0 and (best < 0.0 or dist < best):
                best = dist
        b.height_EH[e, h] = MISS if best < 0.0 else min(best - RAY_TOP, MISS)


@njit(nogil=True, cache=True)
def scan_range(lo, hi, b):
    """The scans of envs [lo, hi)."""
    for e in range(lo, hi):
        _scan_env(e, b)


@njit(nogil=True, cache=True)
def scan_envs(idx_K, b):
    """The scans of envs idx_K."""
    for k in range(idx_K.shape[0]):
        _scan_env(idx_K[k], b)


class HostHeightScan:
    """A task's height scans over a batch of MjData; `height_EH` is the kernels' `height_scan` input."""

    def __init__(self, spec: TaskSpec, mj_model: mujoco.MjModel, datas: list[Any]):
        t = ScanTables.from_spec(spec, mj_model)
        self.height_EH = np.zeros((len(datas), t.size))
        xpos_E, xmat_E = cstep.field_addresses(datas, ("xpos", "xmat"))
        hfield_G3 = np.full((t.type_G.shape[0], 3), -1, dtype=np.int64)
        data, adr = [np.zeros(0)], 0
        for hf in t.hfields:
            nrow, ncol = hf.data_RC.shape
            hfield_G3[hf.slot] = (adr, nrow, ncol)
            data.append(hf.data_RC.ravel())
            adr += nrow * ncol
        self.bundle = ScanBundle(
            xpos_E, xmat_E, t.body_H, np.ascontiguousarray(t.offset_H2), t.type_G,
            np.ascontiguousarray(t.pos_G3), np.ascontiguousarray(t.mat_G9), np.ascontiguousarray(t.size_G3),
            hfield_G3, np.concatenate(data), self.height_EH,
        )  # fmt: skip
        self._range = cstep.Specialized(scan_range)

    def run(self, lo: int, hi: int) -> None:
        self._range(lo, hi, self.bundle)

    def run_envs(self, idx_K: np.ndarray) -> None:
        scan_envs(idx_K, self.bundle)
