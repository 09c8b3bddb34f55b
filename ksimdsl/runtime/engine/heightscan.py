"""Height scans (`height_scan(BODY, grid=[nx, ny], spacing=S)`): what both engines share.

Point k = j * nx + i of a scan (i < nx along the body's heading, j < ny to its
left; x runs fastest) lies at the offset `((i - (nx - 1) / 2) S, (j - (ny - 1) / 2) S)`
from the body's origin, turned by the body's yaw only (the heading of its x
axis in the world's xy plane; roll and pitch are ignored, as Isaac Lab's and
mjlab's height scanners do). A ray is cast straight down at each point from
`RAY_TOP` above the body's origin onto the ground geoms of `SPEC["height_scan"]["ground"]`
(`ksimdsl.model.ground`: static, colliding planes, boxes and z-up height
fields). The value is `body_z - ground_z` at the first hit, capped at `MISS`;
a point with no ground under it (off a finite height field, no plane) reads
`MISS`, as does ground more than `MISS` below the body. Planes are infinite, as
they are for collisions (their MJCF size only bounds how they are drawn).

`ScanTables.from_spec(spec, mj_model)` lays the scans and the ground out as
numpy arrays (the ground's world poses come from `mj_kinematics`: static geoms
never move); `mjx/heightscan.py` evaluates them in JAX, `mujoco/rays.py` in
numba (C MuJoCo's `mju_rayGeom` for planes and boxes). The engines agree to
float32 rounding, and with `mj_ray` over the ground (tests/test_height_scan.py).
"""

from __future__ import annotations

from dataclasses import dataclass
import mujoco
import numpy as np

from ksimdsl.abi import TaskSpec
from ksimdsl.errors import KsimError
from ksimdsl.model.ground import GROUND_KINDS, ground_problem

__all__ = ["RAY_TOP", "MISS", "PLANE", "HFIELD", "BOX", "ScanTables", "HfieldTable", "grid_offsets", "reads_height_scan"]

#: Rays start this far (m) above the body's origin.
RAY_TOP = 10.0
#: The value of a point without ground under it, and the largest value (m).
MISS = 10.0
PLANE, HFIELD, BOX = (int(k) for k in (mujoco.mjtGeom.mjGEOM_PLANE, mujoco.mjtGeom.mjGEOM_HFIELD, mujoco.mjtGeom.mjGEOM_BOX))
assert set(GROUND_KINDS) == {PLANE, HFIELD, BOX}


def grid_offsets(nx: int, ny: int, spacing: float) -> np.ndarray:
    """(nx * ny, 2) offsets of a scan's points in the body's yaw frame, x running fastest."""
    x = (np.arange(nx) - (nx - 1) / 2.0) * spacing
    y = (np.arange(ny) - (ny - 1) / 2.0) * spacing
    gx, gy = np.meshgrid(x, y, indexing="xy")  # (ny, nx)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


@dataclass(frozen=True)
class HfieldTable:
    """One height-field ground geom: its place among the ground geoms and its elevation grid."""

    slot: int  # index into the ground geoms
    size: np.ndarray  # hfield_size (4,): x and y half-sizes, elevation scale, base depth
    data_RC: np.ndarray  # float64 (nrow, ncol): the normalized elevation (MuJoCo's hfield_data), row r at y


@dataclass(frozen=True)
class ScanTables:
    """The H scan points and the G ground geoms, float64 unless noted."""

    body_H: np.ndarray  # int64: the body each point hangs under
    offset_H2: np.ndarray  # the point's offset in the body's yaw frame
    geom_G: np.ndarray  # int32: geom ids
    type_G: np.ndarray  # int32: mjtGeom (PLANE, HFIELD, BOX)
    pos_G3: np.ndarray  # world position
    mat_G9: np.ndarray  # world orientation, row-major
    size_G3: np.ndarray  # geom_size; zeros for planes (infinite); hfield_size[:3] for height fields
    hfields: tuple[HfieldTable, ...]

    @property
    def size(self) -> int:
        return int(self.body_H.shape[0])

    @staticmethod
    def from_spec(spec: TaskSpec, mj_model: mujoco.MjModel) -> "ScanTables":
        """The tables of `spec`'s scans on `mj_model` (the model the task was compiled against)."""
        desc = spec.height_scan or {}
        scans = list(desc.get("scans", ()))
        body, offset = [], []
        for s in scans:
            nx, ny = (int(n) for n in s["grid"])
            if int(s["offset"]) != len(body):
                raise KsimError("SPEC['height_scan'] lists its scans out of order; recompile the task")
            body += [int(s["body"])] * (nx * ny)
            offset.append(grid_offsets(nx, ny, float(s["spacing"])))
        geoms = np.array([int(g) for g in desc.get("ground", ())], dtype=np.int32)
        if scans and geoms.size == 0:
            raise KsimError("SPEC['height_scan'] has scans but no ground; recompile the task")
        for g in geoms:
            if not 0 <= g < mj_model.ngeom or ground_problem(mj_model, int(g)) is not None:
                raise KsimError(f"height_scan ground geom {g} does not fit the model; recompile the task")
        data = mujoco.MjData(mj_model)
        mujoco.mj_kinematics(mj_model, data)
        types = mj_model.geom_type[geoms].astype(np.int32)
        size = np.array(mj_model.geom_size[geoms], dtype=np.float64).reshape(-1, 3)
        size[types == PLANE] = 0.0
        hfields = []
        for slot, g in enumerate(geoms):
            if types[slot] == HFIELD:
                h = int(mj_model.geom_dataid[g])
                nrow, ncol = int(mj_model.hfield_nrow[h]), int(mj_model.hfield_ncol[h])
                adr = int(mj_model.hfield_adr[h])
                grid = np.asarray(mj_model.hfield_data[adr : adr + nrow * ncol], np.float64).reshape(nrow, ncol)
                hfields.append(HfieldTable(slot, np.array(mj_model.hfield_size[h], np.float64), grid))
                size[slot] = mj_model.hfield_size[h][:3]
        return ScanTables(
            body_H=np.array(body, dtype=np.int64),
            offset_H2=np.concatenate(offset) if offset else np.zeros((0, 2)),
            geom_G=geoms,
            type_G=types,
            pos_G3=np.array(data.geom_xpos[geoms], np.float64).reshape(-1, 3),
            mat_G9=np.array(data.geom_xmat[geoms], np.float64).reshape(-1, 9),
            size_G3=size,
            hfields=tuple(hfields),
        )


def reads_height_scan(spec: TaskSpec) -> bool:
    """Whether the kernels read the scans (a scan only in an unused `let` costs nothing)."""
    return "height_scan" in spec.phys_inputs
