"""`ksimdsl record`: a motion clip (docs/motions.md) of the deterministic policy of a run.

    path, info = record_run(spec, kernels, model_path=..., run_dir=..., out_path="walk.npz", engine="mjx",
                            options=RecordOptions(seconds=5, commands={"vel": (0.5, 0, 0)}))

One env of the engine the kernels were compiled for steps the policy's mode (the shared loop
`ksimdsl.runtime.engine.loop.Recording`, as `ksimdsl render` does) for `seconds` of simulated time
(default: the task's episode, at most 10 s), with commands held fixed and events switched off as
`ksimdsl eval --command / --no-events` do (`ksimdsl.runtime.engine.pins`). The episode limit is
raised to the recording's length; a termination (a fall) ends the clip at the last state before it.

The clip holds a frame per control step (fps = 1 / ctrl_dt): qpos and qvel of the env, the model's
joint names in qpos order, and the world position of every named body, computed from qpos by forward
kinematics (`mj_kinematics`) on the task's model as trained (`model.load_model`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Mapping, Sequence

import mujoco
import numpy as np

from ksimdsl.abi import TaskSpec
from ksimdsl.errors import KsimError
from ksimdsl.model.motion import Clip, ClipError, model_body_names, model_joint_names, save_clip
from ksimdsl.runtime import engine as engines
from ksimdsl.runtime.engine.loop import Recording
from ksimdsl.runtime.engine.model import load_model
from ksimdsl.runtime.engine.pins import MemPins
from ksimdsl.runtime.rl import ppo
from ksimdsl.runtime.tools.export import check_output_path, load_run_policy

__all__ = ["RecordOptions", "RecordInfo", "record_clip", "record_run", "CLIP_SUFFIXES", "DEFAULT_SECONDS"]

CLIP_SUFFIXES = (".npz",)
#: Default clip length (seconds of simulated time) when neither --seconds nor a shorter episode limits it.
DEFAULT_SECONDS = 10.0


@dataclass(frozen=True)
class RecordOptions:
    """What to record: `seconds` (None: one episode, at most DEFAULT_SECONDS), the commands held fixed
    ({name: values}), whether events (pushes) happen, the random seed of the env."""

    seconds: float | None = None
    commands: Mapping[str, Sequence[float]] = field(default_factory=dict)
    events: bool = True
    seed: int = 0

    def control_steps(self, spec: TaskSpec) -> int:
        ctrl_dt = float(spec.physics.ctrl_dt)
        if self.seconds is None:
            seconds = min(DEFAULT_SECONDS, spec.episode_steps * ctrl_dt)
        elif not (math.isfinite(self.seconds) and self.seconds > 0):
            raise KsimError(f"--seconds must be a positive number of seconds, got {self.seconds:g}")
        else:
            seconds = self.seconds
        return max(1, round(seconds / ctrl_dt))


@dataclass(frozen=True)
class RecordInfo:
    """How a recording went: its frames, seconds and whether an episode ended (a fall) before its end."""

    frames: int
    seconds: float
    ended_early: bool


def _body_positions(model: mujoco.MjModel, qpos_FQ: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """(names, world positions [F, B, 3]) of every named body, by forward kinematics of each frame."""
    names = model_body_names(model)
    keep = [b for b, n in enumerate(names) if n]
    data = mujoco.MjData(model)
    out = np.zeros((len(qpos_FQ), len(keep), 3))
    for k, q in enumerate(qpos_FQ):
        data.qpos[:] = q
        mujoco.mj_kinematics(model, data)
        out[k] = data.xpos[keep]
    return tuple(names[b] for b in keep), out


def record_clip(
    spec: TaskSpec,
    kernels: ModuleType,
    policy: ppo.Policy,
    *,
    model_path: str | Path,
    engine: str,
    options: RecordOptions = RecordOptions(),
) -> tuple[Clip, RecordInfo]:
    """Roll out `policy` (its mode) in one env of `engine` and return the clip of it (module docstring)."""
    steps = options.control_steps(spec)
    pins = MemPins.build(spec, [dict(options.commands)], events=options.events)
    model = load_model(spec, model_path)
    try:
        joint_names = model_joint_names(model)
    except ClipError as e:
        raise KsimError(f"cannot record a clip of this model: {e}") from None
    run_spec = spec.with_overrides(episode_steps=max(spec.episode_steps, steps + 1))
    recording = Recording(engines.get(engine), run_spec, kernels, model_path, steps=steps, pins=pins)
    try:
        rec = recording.record(policy, seed=options.seed)
    finally:
        recording.close()
    ended = np.flatnonzero(np.asarray(rec.done_T[1:], bool))
    frames = int(ended[0]) + 1 if ended.size else len(rec.qpos_TQ)  # the state after a done is the next episode's
    if frames < 2:
        raise KsimError("the episode ended at its first control step (a termination): there is no motion to record")
    qpos = np.asarray(rec.qpos_TQ[:frames], np.float64)
    qvel = np.asarray(rec.qvel_TV[:frames], np.float64)
    body_names, body_pos = _body_positions(model, qpos)
    ctrl_dt = float(spec.physics.ctrl_dt)
    clip = Clip(qpos, 1.0 / ctrl_dt, joint_names, qvel, body_names, body_pos)
    return clip, RecordInfo(frames, (frames - 1) * ctrl_dt, bool(ended.size))


def record_run(
    spec: TaskSpec,
    kernels: ModuleType,
    *,
    model_path: str | Path,
    run_dir: str | Path,
    out_path: str | Path,
    engine: str,
    options: RecordOptions = RecordOptions(),
) -> tuple[Path, RecordInfo]:
    """`ksimdsl record`: the clip of the deterministic policy of `run_dir`'s newest checkpoint, written to
    `out_path` (.npz)."""
    path = check_output_path(out_path, CLIP_SUFFIXES)
    options.control_steps(spec)  # a bad --seconds fails before anything loads
    MemPins.build(spec, [dict(options.commands)])  # an unknown command too
    policy, _ = load_run_policy(spec, run_dir)
    clip, info = record_clip(spec, kernels, policy, model_path=model_path, engine=engine, options=options)
    try:
        save_clip(path, clip)
    except OSError as exc:
        raise KsimError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path, info
