"""Loading the MJCF model a task runs on, shared by the MJX and the C-MuJoCo engine
and every tool (eval, render, export, bench): they all load it through `load_model`.

`load_model` composes the model as the task describes (`SPEC["compose"]`, applied
by `ksimdsl.model.compose`, the code the checker ran), applies the task's
`physics` settings and, for the feedback kinds (`actuators position`, `velocity`,
`position_velocity`), rewrites the model's actuators into MuJoCo affine
actuators, force = gain * ctrl + b1 * q + b2 * qdot, gear 1 (see
docs/architecture.md, "Actuators"):

    position            gain kp, bias (0, -kp, -kd)   ctrl = target position
    velocity            gain kd, bias (0, 0, -kd)     ctrl = target velocity (MuJoCo's <velocity kv=kd>)
    position_velocity   gain 1,  bias (0, -kp, -kd)   ctrl = kp * target position + kd * target velocity

clamped to the original motor's `ctrlrange * gear`. MuJoCo then evaluates the
law at every physics substep, identically on MJX and C MuJoCo, and the
runtime only writes `ctrl` (ksimdsl.runtime.engine.actuators). `model_xml` is
the same model as MJCF text (a run directory's model.xml), asset paths absolute.
"""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np

from ksimdsl.abi import TaskSpec
from ksimdsl.errors import KsimError
from ksimdsl.settings import FEEDBACK_ACTUATORS, actions_per_actuator
from ksimdsl.model.compose import ComposeError, Composition, load_spec

__all__ = ["load_model", "model_xml", "default_pose", "ctrl_clip_range", "SOLVERS"]

SOLVERS = {"newton": mujoco.mjtSolver.mjSOL_NEWTON, "cg": mujoco.mjtSolver.mjSOL_CG, "pgs": mujoco.mjtSolver.mjSOL_PGS}


def load_model(spec: TaskSpec, model_path: str | Path) -> mujoco.MjModel:
    """Compile `model_path` composed, with the task's physics settings and actuator rewrite applied.

    Raises KsimError (one line) when the file cannot be loaded or does not fit the task.
    """
    return _compile(spec, model_path)[0]


def model_xml(spec: TaskSpec, model_path: str | Path) -> str:
    """The model `load_model` returns, as MJCF text that loads from any directory."""
    return _compile(spec, model_path)[1].to_xml()


def _compile(spec: TaskSpec, model_path: str | Path) -> tuple[mujoco.MjModel, mujoco.MjSpec]:
    path = Path(model_path)
    try:
        mjspec = load_spec(path, Composition.from_dict(spec.compose))
    except ComposeError as exc:
        raise KsimError(str(exc)) from None
    if spec.actuators.kind in FEEDBACK_ACTUATORS:
        _rewrite_feedback_actuators(mjspec, spec, path)
    physics = spec.physics
    solver = physics.solver
    if solver not in SOLVERS:
        raise KsimError(f"unknown solver '{solver}' (expected one of {', '.join(SOLVERS)})")
    mjspec.option.timestep = float(physics.dt)
    mjspec.option.solver = SOLVERS[solver]
    mjspec.option.iterations = physics.iterations
    mjspec.option.ls_iterations = physics.ls_iterations
    try:
        model = mjspec.compile()
    except Exception as exc:
        raise KsimError(f"cannot compile model {path}: {_one_line(exc)}") from None
    if model.nu * actions_per_actuator(spec.actuators.kind) != spec.action_size:
        raise KsimError(
            f"model {path} has {model.nu} actuators but the task's action size is {spec.action_size} "
            f"(actuators {spec.actuators.kind}); recompile the task"
        )
    return model, mjspec


def _rewrite_feedback_actuators(mjspec: mujoco.MjSpec, spec: TaskSpec, path: Path) -> None:
    act = spec.actuators
    actuators = list(mjspec.actuators)
    nu = len(actuators)
    kp = act.kp if act.kind != "velocity" else (0.0,) * nu  # velocity actuators have no position gain
    if nu * actions_per_actuator(act.kind) != spec.action_size or len(kp) != nu or len(act.kd) != nu:
        raise KsimError(
            f"model {path} has {nu} actuators but the task describes {spec.action_size} actions "
            f"(actuators {act.kind}; kp: {len(act.kp)}, kd: {len(act.kd)}); recompile the task"
        )
    for a, p, d in zip(actuators, kp, act.kd):
        gear = float(a.gear[0])
        if a.ctrllimited == mujoco.mjtLimited.mjLIMITED_TRUE or (
            a.ctrllimited == mujoco.mjtLimited.mjLIMITED_AUTO and a.ctrlrange[0] < a.ctrlrange[1]
        ):
            lo, hi = sorted((float(a.ctrlrange[0]) * gear, float(a.ctrlrange[1]) * gear))
            a.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
            a.forcerange = [lo, hi]
        gain = {"position": float(p), "velocity": float(d)}.get(act.kind, 1.0)
        a.gaintype = mujoco.mjtGain.mjGAIN_FIXED
        a.gainprm = [gain] + [0.0] * (len(a.gainprm) - 1)
        a.biastype = mujoco.mjtBias.mjBIAS_AFFINE
        a.biasprm = [0.0, -float(p), -float(d)] + [0.0] * (len(a.biasprm) - 3)
        a.dyntype = mujoco.mjtDyn.mjDYN_NONE
        a.gear = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        a.ctrllimited = mujoco.mjtLimited.mjLIMITED_FALSE


def default_pose(model: mujoco.MjModel) -> tuple[np.ndarray, np.ndarray]:
    """(qpos (nq,), qvel (nv,)) every episode starts from: keyframe 0 if any, else qpos0; qvel zero."""
    if model.nkey > 0:
        qpos = np.array(model.key_qpos[0], dtype=np.float32)
    else:
        qpos = np.array(model.qpos0, dtype=np.float32)
    return qpos, np.zeros(model.nv, dtype=np.float32)


def ctrl_clip_range(spec: TaskSpec, model: mujoco.MjModel) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-actuator (lo_U, hi_U) bounds for `ctrl`, or None when no actuator is limited.

    The task's own `ctrl_range` wins; otherwise the model's `ctrlrange` where `ctrllimited`.
    The feedback kinds (position, velocity, position_velocity) are not clipped: their force is limited instead.
    """
    if spec.actuators.kind in FEEDBACK_ACTUATORS:
        return None
    if spec.actuators.ctrl_range is not None:
        rng = np.asarray(spec.actuators.ctrl_range, dtype=np.float32).reshape(-1, 2)
        return rng[:, 0], rng[:, 1]
    limited = np.asarray(model.actuator_ctrllimited, dtype=bool)
    if not limited.any():
        return None
    rng = np.asarray(model.actuator_ctrlrange, dtype=np.float32)
    lo = np.where(limited, rng[:, 0], -np.inf).astype(np.float32)
    hi = np.where(limited, rng[:, 1], np.inf).astype(np.float32)
    return lo, hi


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
