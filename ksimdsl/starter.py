"""`ksimdsl init MODEL`: a starter task for any MJCF model, checked before it is written.

Reads the model (a file, `pkg:` or `menagerie:` path) and writes what a bare
robot needs: a floor if it has none, an IMU at a site named like one (or at
the root body), a pose that puts every joint inside its range, feet-only
collisions when geoms are named like feet, PD motors on every joint when the
MJCF has no actuators; then observations, a standing reward, terminations
and training settings to edit. The text is checked with the real checker, so
a starter that is written always checks.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ksimdsl.errors import InternalCompilerError, KsimError, Source
from ksimdsl.frontend.model_info import ModelInfo, ModelLoadError, load_model_info, resolve_model_path
from ksimdsl.model.compose import IMU_SENSORS, Collide, Composition, ComposeError, Floor, Pose, compile_model, load_spec

__all__ = ["StarterOptions", "starter_task", "write_starter"]

_PLANE, _HFIELD = 0, 1  # mjtGeom
_FEET = re.compile(r"foot|feet|toe|sole", re.IGNORECASE)


@dataclass(frozen=True)
class StarterOptions:
    model: str  # as the user wrote it
    output: str  # the task file to write
    name: str = ""  # task name (default: the output file's stem)
    force: bool = False  # overwrite an existing file


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _model_line(written: str, output: str) -> str:
    """The model path as the task file (in `output`'s directory) should write it."""
    if written.startswith(("pkg:", "menagerie:")):
        return written
    return os.path.relpath(os.path.abspath(written), os.path.dirname(os.path.abspath(output)))


def _imu_line(m: ModelInfo) -> tuple[str, str] | None:
    """(imu name, site or body) for the IMU, or None for a model without a free root."""
    if m.root is None:
        return None
    name = next((n for n in ("imu", "ksim_imu") if not any(f"{n}_{s}" in m.sensor_names for s in IMU_SENSORS)), None)
    if name is None:
        return None
    site = next((s for s in m.site_names if s and "imu" in s.lower()), None)
    if site is None and name in m.site_names:
        return None
    return name, site or m.body_names[m.root.body_id]


def _pose_joints(m: ModelInfo) -> list[tuple[str, float]]:
    """Every limited joint whose 0 lies outside its range, at the nearest limit."""
    out = []
    model = m.model
    for j in m.hinge_slide_joints:
        if not bool(model.jnt_limited[j]):
            continue
        lo, hi = (float(x) for x in model.jnt_range[j])
        q0 = float(model.qpos0[model.jnt_qposadr[j]])
        if not lo <= q0 <= hi:
            out.append((m.joint_names[j], min(max(q0, lo), hi)))
    return out


def _feet_globs(names: list[str]) -> list[str]:
    """Foot geom names with their numbers as `*` ("left_foot1_collision" ... -> "left_foot*_collision")."""
    return list(dict.fromkeys(re.sub(r"\d+", "*", n) for n in names))


def _standing_height(path: str, composition: Composition, root_qpos_adr: int, start: float) -> float | None:
    """The root height at which the posed robot just touches the floor (bisection on contacts), or None."""
    import mujoco

    try:
        model = compile_model(load_spec(path, composition))
    except ComposeError:
        return None
    data = mujoco.MjData(model)
    qpos = model.key_qpos[0].copy() if model.nkey else model.qpos0.copy()

    def touches(z: float) -> bool:
        data.qpos[:] = qpos
        data.qpos[root_qpos_adr + 2] = z
        mujoco.mj_forward(model, data)
        return data.ncon > 0

    lo, hi = 0.0, max(start, 0.0) + 2.0
    if not touches(lo) or touches(hi):
        return None
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if touches(mid) else (lo, mid)
    return hi


def starter_task(options: StarterOptions) -> str:
    """The text of a starter task for `options.model` (raises KsimError when the model does not load)."""
    try:
        resolved = resolve_model_path(options.model, None)
        m = load_model_info(resolved)
    except ModelLoadError as e:
        raise KsimError(f"{options.model}: {e}") from None
    name = options.name or re.sub(r"\W", "_", os.path.splitext(os.path.basename(options.output))[0]) or "task"
    if name[0].isdigit():
        name = "t_" + name
    model = m.model
    has_floor = any(
        int(model.geom_bodyid[g]) == 0 and int(model.geom_type[g]) in (_PLANE, _HFIELD) for g in range(model.ngeom)
    )
    block: list[str] = []
    if not has_floor:
        block.append("    floor")
    imu = _imu_line(m)
    if imu is not None:
        block.append(f'    imu {imu[0]} at "{imu[1]}"')
    height = None
    joints = _pose_joints(m)
    feet = [n for g, n in enumerate(m.geom_names) if n and int(model.geom_bodyid[g]) != 0 and _FEET.search(n)]
    feet = feet if m.root is not None and not has_floor else []  # a bare model; one with a floor keeps its contacts
    if m.root is not None:
        height = float(model.qpos0[m.root.qpos_adr + 2])
        composition = Composition(
            floor=None if has_floor else Floor(),
            collide=Collide(tuple(feet)) if feet else None,
            pose=Pose(None, tuple(joints)),
        )
        touching = _standing_height(resolved, composition, m.root.qpos_adr, height)
        note = "where the posed robot touches the floor" if touching is not None else "adjust"
        height = touching if touching is not None else height
        block.append(f"    pose base_height={_fmt(height)}    # {note}")
    elif joints:
        block.append("    pose")
    block += [f'        "{n}" = {_fmt(v)}' for n, v in joints]
    if feet:
        globs = ", ".join(f'"{g}"' for g in _feet_globs(feet))
        block.append(f"    collide only [{globs}] condim=3    # only the feet touch the world")

    lines = [
        f"# A starter task for {options.model}, written by `ksimdsl init`: edit the rewards and",
        "# settings, then `ksimdsl check` and `ksimdsl train` it. docs/language.md has every form.",
        f'task {name} "A starter task for {os.path.basename(resolved)}"',
        f'model "{_model_line(options.model, options.output)}"',
        *block,
        "physics dt=5ms ctrl_dt=20ms",
        "episode 10s",
        "",
    ]
    if m.nu == 0:
        lines += [
            "# One PD motor per joint; set kp, kd, effort (N m) and armature per joint group with",
            '# `joints ["*_knee*"] kp=... kd=... effort=... armature=...` lines.',
            'actuators position joints="*" kp=40 kd=2 action_scale=0.3',
        ]
    else:
        lines.append("actuators ctrl    # the MJCF's own actuators; `actuators position kp=... kd=...` makes PD servos")
    lines += ["", "observe actor", "    joint_pos = joint_pos - default_joint_pos ~ gaussian(0.01)",
              "    joint_vel = joint_vel / 10                ~ gaussian(0.05)"]
    if m.root is not None:
        lines.append("    gravity   = projected_gravity             ~ gaussian(0.02)")
    if imu is not None:
        lines.append(f'    gyro      = sensor("{imu[0]}_gyro"){" " * (17 - len(imu[0]))}~ gaussian(0.05)')
    lines += ["    last      = prev(action)", "observe critic", "    actor"]
    if m.root is not None:
        lines += ["    lin_vel   = local_lin_vel", "    height    = base_pos.z"]
    lines += ["", "reward", "    alive        1.0   : 1"]
    if m.root is not None and height is not None:
        lines += [
            f"    height       1.0   : exp_kernel(base_pos.z - {_fmt(height)}, 0.1)",
            "    upright      1.0   : exp_kernel(projected_gravity.xy, 0.3)",
        ]
    lines += [
        "    pose         0.5   : exp_kernel(joint_pos - default_joint_pos, 0.5)",
        "    action_rate -0.01  : norm2(action - prev(action))",
    ]
    if m.root is not None and height is not None:
        lines += [
            "",
            "terminate",
            f"    fell   : base_pos.z < {_fmt(0.5 * height)}",
            "    tilted : angle(projected_gravity, [0, 0, -1]) > 60deg",
        ]
    lines += [
        "",
        "reset",
        "    joint_pos += uniform(-0.05, 0.05)",
        "",
        "policy mlp hidden=[256, 128] init_std=0.5",
        "train num_envs=128 rollout=24 epochs=4 minibatches=4 lr=3e-4 gamma=0.99 steps=500",
        "",
    ]
    return "\n".join(lines)


def write_starter(options: StarterOptions) -> str:
    """Write the starter task to `options.output` after checking it; returns the text."""
    from ksimdsl.frontend.check import check_source

    if os.path.exists(options.output) and not options.force:
        raise KsimError(f"{options.output} exists; pass --force to overwrite it")
    text = starter_task(options)
    path = os.path.abspath(options.output)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)  # the model path is relative to it
    except OSError as e:
        raise KsimError(f"cannot write {options.output}: {e.strerror or e}") from None
    try:
        check_source(Source(path, text))
    except KsimError as e:  # a starter that does not check is our bug
        raise InternalCompilerError(f"the starter task for {options.model} does not check:\n{e}") from None
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise KsimError(f"cannot write {options.output}: {e.strerror or e}") from None
    return text
