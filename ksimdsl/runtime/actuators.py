"""From policy actions to MuJoCo `ctrl`, in jnp, one environment per call (the env vmaps).

The three actuator kinds of the language (docs/architecture.md, "Actuators"):

* `position`: the model's actuators were rewritten into PD actuators at load
  (`ksimdsl.runtime.model`), so `ctrl` is the joint target
  `default_pos + action_scale * action + zero_offset`; with a per-episode
  `latency` l, the substeps that start before l keep the previous target.
* `torque`: `ctrl = scale * action` on the model's own actuators.
* `ctrl`: `ctrl = action`.

Actions are clipped to [-1, 1] first; `ctrl` is clipped to the actuators'
control range where they are limited (torque, ctrl).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from ksimdsl.abi import TaskSpec
from ksimdsl.runtime.model import ctrl_clip_range

__all__ = ["ActuatorModel"]


@dataclass(frozen=True)
class ActuatorModel:
    """Static per-task actuator constants (numpy, closed over by jitted code)."""

    kind: str
    action_scale: float
    scale: float
    default_pos_U: np.ndarray
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
        default = np.asarray(act.default_pos, dtype=np.float32) if act.default_pos else np.zeros(model.nu, np.float32)
        zo = act.zero_offset
        return ActuatorModel(
            kind=act.kind,
            action_scale=float(act.action_scale),
            scale=float(act.scale),
            default_pos_U=default,
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

    def draw_episode(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Per-episode (latency () seconds, zero_offset_U radians/metres) for one env."""
        k_lat, k_zero = jax.random.split(key)
        if self.latency is None:
            latency = jnp.zeros((), jnp.float32)
        else:
            lo, hi = self.latency
            latency = jax.random.uniform(k_lat, (), jnp.float32, lo, hi)
        zero_U = jnp.zeros((self.nu,), jnp.float32)
        if self.kind == "position" and self.zero_offset_dist is not None:
            p = self.zero_offset_params
            if self.zero_offset_dist == "gaussian":
                mean, std = (0.0, p[0]) if len(p) == 1 else (p[0], p[1])
                zero_U = mean + std * jax.random.normal(k_zero, (self.nu,), jnp.float32)
            else:
                lo, hi = (-p[0], p[0]) if len(p) == 1 else (p[0], p[1])
                zero_U = jax.random.uniform(k_zero, (self.nu,), jnp.float32, lo, hi)
        return latency, zero_U

    def target(self, action_A: jax.Array, zero_offset_U: jax.Array) -> jax.Array:
        """The `ctrl` this action asks for (before latency), shape (nu,)."""
        action_A = jnp.clip(action_A, -1.0, 1.0)
        if self.kind == "position":
            ctrl_U = self.default_pos_U + self.action_scale * action_A + zero_offset_U
        elif self.kind == "torque":
            ctrl_U = self.scale * action_A
        else:
            ctrl_U = action_A
        if self.ctrl_lo_U is not None:
            ctrl_U = jnp.clip(ctrl_U, self.ctrl_lo_U, self.ctrl_hi_U)
        return ctrl_U.astype(jnp.float32)

    def rest_target(self, zero_offset_U: jax.Array) -> jax.Array:
        """The `ctrl` of a zero action; the "previous target" right after a reset."""
        return self.target(jnp.zeros_like(zero_offset_U), zero_offset_U)

    def substep_ctrl(self, prev_U: jax.Array, new_U: jax.Array, latency: jax.Array, substep: jax.Array) -> jax.Array:
        """`ctrl` for physics substep `substep` (0-based) of a control step.

        The substep starting at time `substep * dt` still sees the previous target
        while that time is below the episode's latency.
        """
        if self.latency is None:
            return new_U
        return jnp.where(substep * self.dt < latency, prev_U, new_U)
