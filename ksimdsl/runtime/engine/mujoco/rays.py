"""Height scans on C MuJoCo: the downward rays of `height_scan(...)`, cast from numba without the GIL.

Every ray is intersected with each ground geom (`engine/heightscan.py`) by C
MuJoCo's own functions, `mju_rayGeom` (planes and boxes, from the static poses
of `ScanTables`; planes with a zero size, so infinite) and `mj_rayHfield`
(height fields, on the env's mjData; only for points over the field, as
a vertical ray beside one cannot hit it and mujoco 3.17 takes ~100 us to find
that out), declared as external functions of
`libmujoco` like `mj_step` in `cstep.py`. Not `mj_ray`: it cannot leave out
every robot body (`bodyexclude` names one), and it skips invisible geoms.
The nearest hit wins. Both functions gained a trailing `normal` output (nullable)
in later MuJoCo releases; a NULL is always passed, which releases without it
ignore (the C calling conventions leave extra register arguments unread).

The scans run in the worker threads right after the physics of a chunk of envs
(`cstep.advance`) and before the numba step kernel; the results land in
`height_EH`, the kernels' `height_scan` physics input.

    scans = HostHeightScan(spec, mj_model, datas)
    scans.run(lo, hi, pointers)           # envs [lo, hi) (cstep.EnvPointers)
    scans.run_envs(idx_K, pointers)       # after a reset
"""

from __future__ import annotations

from typing import Any, NamedTuple

import mujoco
import numpy as np
from numba import njit, types

from ksimdsl.abi import TaskSpec
from ksimdsl.runtime.engine.heightscan import HFIELD, MISS, RAY_TOP, ScanTables
from ksimdsl.runtime.engine.mujoco import cstep
from ksimdsl.runtime.engine.mujoco.cstep import _f64ptr, _voidptr

__all__ = ["HostHeightScan", "ScanBundle", "scan_range", "scan_envs"]

_f64p = types.CPointer(types.float64)
_mju_rayGeom = types.ExternalFunction(
    "mju_rayGeom", types.float64(_f64p, _f64p, _f64p, _f64p, _f64p, types.intc, _f64p)
)
_mj_rayHfield = types.ExternalFunction(
    "mj_rayHfield", types.float64(types.voidptr, types.voidptr, types.intc, _f64p, _f64p, _f64p)
)


class ScanBundle(NamedTuple):
    """The scan points, the ground and the results (h: a scan point, g: a ground geom)."""

    xpos_adr_E: np.ndarray  # uint64: each env's mjData.xpos
    xmat_adr_E: np.ndarray  # uint64: each env's mjData.xmat
    body_H: np.ndarray  # int64
    offset_H2: np.ndarray  # float64, in the body's yaw frame
    geom_G: np.ndarray  # int32
    type_G: np.ndarray  # int32 (mjtGeom)
    pos_G3: np.ndarray  # float64, static world poses
    mat_G9: np.ndarray
    size_G3: np.ndarray
    height_EH: np.ndarray  # float64 out: the scan values


@njit(nogil=True, cache=True)
def _over_hfield(x, y, pos, mat, size):
    """Whether the point (x, y) lies over the z-up height field at pos, turned by mat (half sizes size[:2])."""
    dx, dy = x - pos[0], y - pos[1]
    lx = mat[0] * dx + mat[3] * dy
    ly = mat[1] * dx + mat[4] * dy
    return abs(lx) <= size[0] * (1.0 + 1e-9) and abs(ly) <= size[1] * (1.0 + 1e-9)


@njit(nogil=True, cache=True)
def _scan_env(e, m_adr, d_adr, b):
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
        for g in range(b.geom_G.shape[0]):
            if b.type_G[g] == HFIELD:
                if not _over_hfield(ray[0], ray[1], b.pos_G3[g], b.mat_G9[g], b.size_G3[g]):
                    continue  # mj_rayHfield would miss too, but slowly: ~100 us a ray with mujoco 3.17
                dist = _mj_rayHfield(_voidptr(m_adr), _voidptr(d_adr), np.intc(b.geom_G[g]), pnt, vec, null)
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
def scan_range(lo, hi, envs, b):
    """The scans of envs [lo, hi) (`envs`: cstep.EnvPointers)."""
    for e in range(lo, hi):
        _scan_env(e, envs.m_adr_E[e], envs.d_adr_E[e], b)


@njit(nogil=True, cache=True)
def scan_envs(idx_K, envs, b):
    """The scans of envs idx_K."""
    for k in range(idx_K.shape[0]):
        e = idx_K[k]
        _scan_env(e, envs.m_adr_E[e], envs.d_adr_E[e], b)


class HostHeightScan:
    """A task's height scans over a batch of MjData; `height_EH` is the kernels' `height_scan` input."""

    def __init__(self, spec: TaskSpec, mj_model: mujoco.MjModel, datas: list[Any]):
        t = ScanTables.from_spec(spec, mj_model)
        self.height_EH = np.zeros((len(datas), t.size))
        xpos_E, xmat_E = cstep.field_addresses(datas, ("xpos", "xmat"))
        self.bundle = ScanBundle(
            xpos_E, xmat_E, t.body_H, np.ascontiguousarray(t.offset_H2), t.geom_G, t.type_G,
            np.ascontiguousarray(t.pos_G3), np.ascontiguousarray(t.mat_G9), np.ascontiguousarray(t.size_G3),
            self.height_EH,
        )  # fmt: skip
        self._range = cstep.Specialized(scan_range)

    def run(self, lo: int, hi: int, pointers: cstep.EnvPointers) -> None:
        self._range(lo, hi, pointers, self.bundle)

    def run_envs(self, idx_K: np.ndarray, pointers: cstep.EnvPointers) -> None:
        scan_envs(idx_K, pointers, self.bundle)
