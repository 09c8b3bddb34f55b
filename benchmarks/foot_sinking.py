"""How often a foot sinks into the ground under random joint targets, with a task's foot contacts.

    .venv/bin/python benchmarks/foot_sinking.py tasks/go1_rough.ksim
    .venv/bin/python benchmarks/foot_sinking.py tasks/go1_rough.ksim --defaults   # MuJoCo's solref/solimp

The measurement behind the `collide only ... timeconst= dmin= dmax=` advice in
docs/language.md: a height field is a union of prisms, and a foot pressed in
deeper than its distance to a prism edge meets the prisms' side walls, whose
horizontal contacts cancel, so it sinks through until it is wedged. The robot
is put at random places (on the terrain's first row where the task has one),
then driven for `--steps` physics steps by its keyframe pose plus Gaussian
joint targets (0.6 rad, a new draw every 10 steps): a crude, hard-pressing
exploration policy. Reported: the steps in which some foot's centre is below
the ground's surface under it (the height field's, by `mj_rayHfield`; z = 0 for a
plane), and the contacts deeper than 1 cm.
"""

from __future__ import annotations

import argparse

import mujoco
import numpy as np

from ksimdsl.abi import TaskSpec
from ksimdsl.codegen import compile_checked
from ksimdsl.frontend.check import check_file
from ksimdsl.model.terrain import Terrain, tile_origins
from ksimdsl.runtime.engine.model import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--feet", default="_foot_collision", help="suffix of the foot geoms' names")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--defaults", action="store_true", help="reset the feet to MuJoCo's default solref/solimp")
    args = parser.parse_args()
    checked = check_file(args.task)
    spec = TaskSpec.from_dict(compile_checked(checked, backend="numba").spec)
    m = load_model(spec, checked.model.resolved_path)
    feet = [g for g in range(m.ngeom) if (mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, g) or "").endswith(args.feet)]
    if not feet:
        raise SystemExit(f"no geom name ends with {args.feet!r}")
    if args.defaults:
        m.geom_solref[feet] = [0.02, 1.0]
        m.geom_solimp[feet, :2] = [0.9, 0.95]
    terrain = Terrain.from_dict(spec.compose["terrain"]) if spec.compose.get("terrain") else None
    origins = tile_origins(terrain) if terrain is not None else None
    hfields = [g for g in range(m.ngeom) if m.geom_type[g] == mujoco.mjtGeom.mjGEOM_HFIELD]

    def ground_z(x: float, y: float) -> float:
        z = 0.0
        for g in hfields:
            dist = mujoco.mj_rayHfield(m, d, g, np.array([x, y, 10.0]), np.array([0.0, 0.0, -1.0]))
            if dist >= 0:
                z = 10.0 - dist
        return z

    d = mujoco.MjData(m)
    rng = np.random.default_rng(0)
    sunk = deep = contacts = 0
    for _ in range(args.episodes):
        mujoco.mj_resetDataKeyframe(m, d, 0)
        mujoco.mj_kinematics(m, d)  # the ground's pose, for mj_rayHfield
        if terrain is not None:  # a tile of the first row (tiles 0 .. cols - 1), as `spawn` puts an env at level 0
            x0, y0, _ = origins[int(rng.integers(terrain.cols))]
            d.qpos[0] += x0 + rng.uniform(-1, 1)
            d.qpos[1] += y0 + rng.uniform(-1, 1)
            d.qpos[2] += ground_z(d.qpos[0], d.qpos[1])  # as `spawn` raises the robot by the tile's height
        for t in range(args.steps):
            if t % 10 == 0:
                noise = rng.normal(0.0, 0.6, m.nu)
            d.ctrl[:] = m.key_ctrl[0] + noise
            mujoco.mj_step(m, d)
            contacts += d.ncon
            deep += int(np.sum(d.contact.dist[: d.ncon] < -0.01))
            sunk += int(any(d.geom_xpos[g][2] < ground_z(*d.geom_xpos[g][:2]) for g in feet))
    total = args.episodes * args.steps
    print(f"{args.task}{' (MuJoCo default foot contacts)' if args.defaults else ''}: a foot centre below the "
          f"surface in {sunk} of {total} steps; {deep} of {contacts} contacts deeper than 1 cm")  # fmt: skip


if __name__ == "__main__":
    main()
