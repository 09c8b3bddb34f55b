"""From policy actions to MuJoCo `ctrl`, in jnp, one environment per call (the env vmaps);
and the per-episode actuator draws of both engines.

The actuator kinds of the language (docs/architecture.md, "Actuators"):

* `position`: the model's actuators were rewritten into PD actuators at load
  (`ksimdsl.runtime.engine.model`), so `ctrl` is the joint target
  `default_pos + action_scale * action + zero_offset`.
* `velocity`: rewritten into velocity actuators (gain kd, bias -kd qdot), so
  `ctrl` is the target velocity `action_scale * action`.
* `position_velocity`: 2 nu actions, the first nu give position targets as
  for `position`, the last nu target velocities `velocity_scale * action`;
  rewritten into gain-1 actuators with bias (0, -kp, -kd), so
  `ctrl = kp * target_pos + kd * target_vel` and MuJoCo applies
  `kp (target_pos - q) + kd (target_vel - qdot)`.
* `torque`: `ctrl = scale * action` on the model's own actuators.
* `ctrl`: `ctrl = action`.

With a per-episode `latency` l, the substeps that start before l keep the
previous `ctrl`. Actions are clipped to [-1, 1] first; `ctrl` is clipped to
the actuators' control range where they are limited (torque, ctrl).

The per-episode draws (latency, zero offset) are `ActuatorModel.draw_episode`
for both engines: it takes an `EpisodeDraws`, the random source and array
module of the engine (`JaxDraws`: one env from a JAX key, float32;
`NumpyDraws`: K envs from a numpy Generator, float64). The C-MuJoCo engine's
per-substep formulas are `cstep.actuate` (numba).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from ksimdsl.abi import TaskSpec
from ksimdsl.runtime.engine.model import ctrl_clip_range
from ksimdsl.settings import POSITION_TARGET_ACTUATORS, actions_per_actuator

__all__ = ["ActuatorModel", "EpisodeDraws", "JaxDraws", "NumpyDraws"]


class EpisodeDraws(Protocol):
    """A random source for per-episode draws: `slot` names the draw ("latency", "zero_offset")."""

    xp: ModuleType
    dtype: Any

    def uniform(self, slot: str, lo: float, hi: float, shape: tuple[int, ...]) -> Any: ...

    def normal(self, slot: str, shape: tuple[int, ...]) -> Any: ...


class JaxDraws:
    """Draws from one JAX key (one key per slot, split from it), float32."""

    xp = jnp
    dtype = jnp.float32
    SLOTS = ("latency", "zero_offset")

    def __init__(self, key: jax.Array):
        self.keys = dict(zip(self.SLOTS, jax.random.split(key, len(self.SLOTS))))

    def uniform(self, slot: str, lo: float, hi: float, shape: tuple[int, ...]) -> jax.Array:
        return jax.random.uniform(self.keys[slot], shape, jnp.float32, lo, hi)

    def normal(self, slot: str, shape: tuple[int, ...]) -> jax.Array:
        return jax.random.normal(self.keys[slot], shape, jnp.float32)


class NumpyDraws:
    """Draws from a numpy Generator, in the order they are asked for (slots unused), float64."""

    xp = np
    dtype = np.float64

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def uniform(self, slot: str, lo: float, hi: float, shape: tuple[int, ...]) -> np.ndarray:
        return self.rng.uniform(lo, hi, shape)

    def normal(self, slot: str, shape: tuple[int, ...]) -> np.ndarray:
        return self.rng.standard_normal(shape)


@dataclass(frozen=True)
class ActuatorModel:
    """Static per-task actuator constants (numpy, closed over by jitted code)."""

    kind: str
    action_scale: float
    velocity_scale: float
    scale: float
    default_pos_U: np.ndarray
    kp_U: np.ndarray  # position_velocity: the gains that turn targets into ctrl (zeros for other kinds)
    kd_U: np.ndarray
    ctrl_lo_U: np.ndarray | None
    ctrl_hi_U: np.ndarray | None
    latency: tuple[float, float] | None
    zero_offset_dist: str | None
    zero_offset_params: tuple[float, ...]
    dt: float

    @staticmethod
    def from_spec(spec: TaskSpec, model: mujoco.MjModel) -> "ActuatorModel":
        act = spec.actuators
        clip = ctrl_clip_range(spec, model)
        zeros = np.zeros(model.nu, np.float32)
        default = np.asarray(act.default_pos, dtype=np.float32) if act.default_pos else zeros
        zo = act.zero_offset
        return ActuatorModel(
            kind=act.kind,
            action_scale=float(act.action_scale),
            velocity_scale=float(act.velocity_scale),
            scale=float(act.scale),
            default_pos_U=default,
            kp_U=np.asarray(act.kp, dtype=np.float32) if act.kp else zeros,
            kd_U=np.asarray(act.kd, dtype=np.float32) if act.kd else zeros,
            ctrl_lo_U=None if clip is None else clip[0],
            ctrl_hi_U=None if clip is None else clip[1],
            latency=None if act.latency is None else (float(act.latency[0]), float(act.latency[1])),
            zero_offset_dist=None if zo is None else str(zo["dist"]),
            zero_offset_params=() if zo is None else tuple(float(p) for p in zo["params"]),
            dt=float(spec.physics.dt),
        )

    @property
    def nu(self) -> int:
        return int(self.default_pos_U.shape[0])

    @property
    def action_size(self) -> int:
        return self.nu * actions_per_actuator(self.kind)

    def draw_episode(self, draws: EpisodeDraws, batch: tuple[int, ...] = ()) -> tuple[Any, Any]:
        """This episode's (latency `batch` seconds, zero_offset `batch + (nu,)` radians/metres)."""
        xp, dtype = draws.xp, draws.dtype
        if self.latency is None:
            latency = xp.zeros(batch, dtype)
        else:
            lo, hi = self.latency
            latency = draws.uniform("latency", lo, hi, batch)
        shape_U = batch + (self.nu,)
        zero_U = xp.zeros(shape_U, dtype)
        if self.kind in POSITION_TARGET_ACTUATORS and self.zero_offset_dist is not None:
            p = self.zero_offset_params
            if self.zero_offset_dist == "gaussian":
                mean, std = (0.0, p[0]) if len(p) == 1 else (p[0], p[1])
                zero_U = mean + std * draws.normal("zero_offset", shape_U)
            else:
                lo, hi = (-p[0], p[0]) if len(p) == 1 else (p[0], p[1])
                zero_U = draws.uniform("zero_offset", lo, hi, shape_U)
        return latency, zero_U

    def target(self, action_A: Any, zero_offset_U: Any, xp: ModuleType = jnp) -> Any:
        """The `ctrl` this action asks for (before latency): shape `batch + (nu,)` for `batch + (A,)` actions.

        `xp`: jnp (float32, the MJX engine) or np (float64, the C engine's resets).
        """
        action_A = xp.clip(action_A, -1.0, 1.0)
        if self.kind == "position":
            ctrl_U = self.default_pos_U + self.action_scale * action_A + zero_offset_U
        elif self.kind == "velocity":
            ctrl_U = self.action_scale * action_A
        elif self.kind == "position_velocity":
            nu = self.nu
            pos_U = self.default_pos_U + self.action_scale * action_A[..., :nu] + zero_offset_U
            vel_U = self.velocity_scale * action_A[..., nu:]
            ctrl_U = self.kp_U * pos_U + self.kd_U * vel_U
        elif self.kind == "torque":
            ctrl_U = self.scale * action_A
        else:
            ctrl_U = action_A
        if self.ctrl_lo_U is not None:
            ctrl_U = xp.clip(ctrl_U, self.ctrl_lo_U, self.ctrl_hi_U)
        return ctrl_U.astype(jnp.float32 if xp is jnp else np.float64)

    def rest_target(self, zero_offset_U: Any, xp: ModuleType = jnp) -> Any:
        """The `ctrl` of a zero action; the "previous target" right after a reset."""
        zero_A = xp.zeros(zero_offset_U.shape[:-1] + (self.action_size,), zero_offset_U.dtype)
        return self.target(zero_A, zero_offset_U, xp)

    def substep_ctrl(self, prev_U: jax.Array, new_U: jax.Array, latency: jax.Array, substep: jax.Array) -> jax.Array:
        """`ctrl` for physics substep `substep` (0-based) of a control step.

        The substep starting at time `substep * dt` still sees the previous target
        while that time is below the episode's latency.
        """
        if self.latency is None:
            return new_U
        return jnp.where(substep * self.dt < latency, prev_U, new_U)
