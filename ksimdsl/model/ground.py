"""The ground of a model: what `height_scan` rays hit, below the compiler and the runtime.

The ground is every geom that cannot move and can collide: a geom of the world
body or of a body welded to it (`body_weldid == 0`, not a mocap body) whose
`contype` or `conaffinity` is non-zero. The floor, a terrain height field and
static boxes (stairs) are ground; the robot, free objects and purely visual
geoms are not. Every ground geom must be of a kind both engines intersect the
same way (`GROUND_KINDS`): planes (any orientation; one whose front does not
face up is never hit by a downward ray), boxes (any orientation) and height
fields whose z axis is vertical (turned about z only).

    ground = ground_geoms(mj_model)             # geom ids, in model order
    problem = ground_problem(mj_model, g)       # why geom g cannot be ground, or None

This module imports mujoco only inside functions, and nothing from the rest of ksimdsl.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GROUND_KINDS", "ground_geoms", "ground_problem", "HFIELD_TILT_TOLERANCE"]

#: mjtGeom values of the ground geoms height scans intersect, with their MJCF names.
GROUND_KINDS = {0: "plane", 1: "hfield", 6: "box"}
_GEOM_NAMES = ("plane", "hfield", "sphere", "capsule", "ellipsoid", "cylinder", "box", "mesh", "sdf")
#: A height field's z axis may deviate from the world's by this much (|1 - R[2, 2]|).
HFIELD_TILT_TOLERANCE = 1e-9


def ground_geoms(model: Any) -> tuple[int, ...]:
    """The ground geoms of `model` (an MjModel): static, colliding; see the module docstring."""
    out = []
    for g in range(model.ngeom):
        body = int(model.geom_bodyid[g])
        if int(model.body_weldid[body]) != 0 or int(model.body_mocapid[body]) >= 0:
            continue
        if int(model.geom_contype[g]) == 0 and int(model.geom_conaffinity[g]) == 0:
            continue
        out.append(g)
    return tuple(out)


def ground_problem(model: Any, g: int) -> str | None:
    """Why ground geom g cannot be scanned (its kind, or a tilted height field), or None.

    Needs the world poses of static geoms, so it runs `mj_kinematics` on a fresh MjData.
    """
    kind = int(model.geom_type[g])
    if kind not in GROUND_KINDS:
        name = _GEOM_NAMES[kind] if 0 <= kind < len(_GEOM_NAMES) else f"type {kind}"
        return f"is a {name}; height_scan sees ground of kinds {', '.join(GROUND_KINDS.values())}"
    if kind == 1:
        import mujoco

        h = int(model.geom_dataid[g])
        if int(model.hfield_nrow[h]) < 2 or int(model.hfield_ncol[h]) < 2:
            return "is a height field with fewer than 2 rows or columns"
        data = mujoco.MjData(model)
        mujoco.mj_kinematics(model, data)
        if abs(1.0 - float(data.geom_xmat[g, 8])) > HFIELD_TILT_TOLERANCE:
            return "is a height field whose z axis is not vertical; height_scan needs it turned about z only"
    return None
