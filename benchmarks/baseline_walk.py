"""A hand-written, ksim-style modular implementation of `tasks/walk.ksim`'s step kernel.

The baseline the generated kernel is measured against. It is written the way
ksim (K-Scale's RL library) structures a task: one small class per
observation, reward and termination, each computing what it needs from the
physics state on its own (`xax.rotate_vector_by_quat`-style quaternion
products for the torso-frame velocity and gravity, norms via jnp.linalg), the
step function being the concatenation of their outputs. No term shares work
with another except through XLA, which sees the whole function under `jit`.

It keeps the generated module's calling convention (`step(phys, action, level,
mem, rand_n, rand_u) -> dict`, one env per call) and its memory and random
number layouts (read by name from the compiled task's `SPEC`), so the two are
interchangeable in the benchmark and `benchmarks/test_kernels.py` checks that
they compute the same numbers.

    step = make_walk_step(spec, default_joint_pos_J)
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import jax.numpy as jnp
import numpy as np

from ksimdsl.abi import TaskSpec

__all__ = ["make_walk_step"]

CTRL_DT = 0.02
GRAVITY = (0.0, 0.0, -1.0)
# Joint ranges of the task's soft joint-limit penalty (degrees), in actuator order.
JOINT_LO_DEG = (
    -45, -75, -35, -30, -60, -150, -160, -50, -50, -30, -60, -150, -160, -50, -50, -85, -85, -100, -85, -85, -100
)  # fmt: skip
JOINT_HI_DEG = (45, 30, 35, 10, 35, 20, 2, 50, 50, 10, 35, 20, 2, 50, 50, 60, 60, 50, 60, 60, 50)


# --------------------------------------------------------------------------- math helpers (as xax has them)


def quat_mul(a_4: jnp.ndarray, b_4: jnp.ndarray) -> jnp.ndarray:
    """Hamilton product of wxyz quaternions."""
    aw, ax, ay, az = a_4[0], a_4[1], a_4[2], a_4[3]
    bw, bx, by, bz = b_4[0], b_4[1], b_4[2], b_4[3]
    return jnp.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


def rotate_vector_by_quat(v_3: jnp.ndarray, q_4: jnp.ndarray, *, inverse: bool = False) -> jnp.ndarray:
    """q v q* (or q* v q with `inverse`), q normalized first."""
    q_4 = q_4 / jnp.linalg.norm(q_4)
    conj_4 = q_4 * jnp.array([1.0, -1.0, -1.0, -1.0])
    if inverse:
        q_4, conj_4 = conj_4, q_4
    v_4 = jnp.concatenate([jnp.zeros(1), v_3])
    return quat_mul(quat_mul(q_4, v_4), conj_4)[1:]


def exp_kernel(x: jnp.ndarray, sigma: float) -> jnp.ndarray:
    return jnp.exp(-jnp.sum(jnp.square(x)) / (2 * sigma**2))


# --------------------------------------------------------------------------- the step context


class Context:
    """What every term reads: physics, action, level, and the env's memory split into named fields."""

    def __init__(self, layout: Mapping[str, slice], phys, action, level, mem, rand_n, rand_u):
        self.qpos, self.qvel = phys["qpos"], phys["qvel"]
        self.actuator_force, self.sensordata, self.contact = phys["actuator_force"], phys["sensordata"], phys["contact"]
        self.action, self.level, self.rand_n, self.rand_u = action, level, rand_n, rand_u
        self.mem = {name: mem[s] for name, s in layout.items()}
        self.first = self.mem["first"][0] > 0.5

    def feet(self) -> jnp.ndarray:
        return self.contact > 0.5

    def prev_feet(self) -> jnp.ndarray:
        return jnp.where(self.first, self.feet(), self.mem["prev.feet"] > 0.5)

    def prev_action(self) -> jnp.ndarray:
        return jnp.where(self.first, self.action, self.mem["prev.action"])


class Observation:
    def observe(self, ctx: Context) -> jnp.ndarray:  # clean value
        raise NotImplementedError

    def add_noise(self, ctx: Context, value: jnp.ndarray) -> jnp.ndarray:
        return value


class JointPositionObservation(Observation):
    def __init__(self, default_J: np.ndarray, noise_slice: slice):
        self.default_J, self.noise = jnp.asarray(default_J), noise_slice

    def observe(self, ctx):
        return ctx.qpos[7:] - self.default_J

    def add_noise(self, ctx, value):
        return value + 0.01 * ctx.rand_n[self.noise]


class JointVelocityObservation(Observation):
    def __init__(self, noise_slice: slice):
        self.noise = noise_slice

    def observe(self, ctx):
        return ctx.qvel[6:] / 10.0

    def add_noise(self, ctx, value):
        return value + 0.1 * ctx.rand_n[self.noise]


class ProjectedGravityObservation(Observation):
    """Gravity in the torso frame, with a per-episode delay of 0..2 steps kept in a ring buffer."""

    def __init__(self, noise_slice: slice):
        self.noise = noise_slice

    def observe(self, ctx):
        return rotate_vector_by_quat(jnp.array(GRAVITY), ctx.qpos[3:7], inverse=True)

    def delayed(self, ctx):
        clean = self.observe(ctx)
        ring = ctx.mem["ring.gravity"]
        d = ctx.mem["delay.gravity"][0]
        older = [jnp.where(ctx.first, clean, ring[3 * k : 3 * k + 3]) for k in range(2)]
        return jnp.where(d < 0.5, clean, jnp.where(d < 1.5, older[0], older[1]))

    def add_noise(self, ctx, value):
        return self.delayed(ctx) + 0.02 * ctx.rand_n[self.noise]

    def next_ring(self, ctx):
        clean = self.observe(ctx)
        return jnp.concatenate([clean, jnp.where(ctx.first, clean, ctx.mem["ring.gravity"][0:3])])


class GyroObservation(Observation):
    def __init__(self, noise_slice: slice):
        self.noise = noise_slice

    def observe(self, ctx):
        return ctx.sensordata[0:3]

    def add_noise(self, ctx, value):
        return value + ctx.mem["bias.gyro"] + (0.2 * ctx.rand_u[self.noise] - 0.1)


class CommandObservation(Observation):
    def observe(self, ctx):
        return ctx.mem["cmd.vel"]


class LastActionObservation(Observation):
    def observe(self, ctx):
        return ctx.prev_action()


class LocalLinearVelocityObservation(Observation):
    def observe(self, ctx):
        return rotate_vector_by_quat(ctx.qvel[0:3], ctx.qpos[3:7], inverse=True)


class LocalAngularVelocityObservation(Observation):
    def observe(self, ctx):
        return ctx.qvel[3:6]


class HeightObservation(Observation):
    def observe(self, ctx):
        return ctx.qpos[2:3]


class FeetContactObservation(Observation):
    def observe(self, ctx):
        return ctx.feet().astype(jnp.float32)


class AirTimeObservation(Observation):
    def observe(self, ctx):
        return ctx.mem["state.air_time"]


class TorqueObservation(Observation):
    def observe(self, ctx):
        return ctx.actuator_force / 100.0


# ---- rewards: (name, weight(ctx), value(ctx))


class Reward:
    weight = 1.0

    def get_weight(self, ctx: Context):
        return self.weight

    def __call__(self, ctx: Context) -> jnp.ndarray:
        raise NotImplementedError


class StayAliveReward(Reward):
    def __call__(self, ctx):
        return jnp.ones(())


class LinearVelocityTrackingReward(Reward):
    def __call__(self, ctx):
        local_vel = rotate_vector_by_quat(ctx.qvel[0:3], ctx.qpos[3:7], inverse=True)
        return exp_kernel(local_vel[:2] - ctx.mem["cmd.vel"][:2], 0.25)


class AngularVelocityTrackingReward(Reward):
    weight = 0.5

    def __call__(self, ctx):
        return exp_kernel(ctx.qvel[5:6] - ctx.mem["cmd.vel"][2:3], 0.25)


class BaseHeightReward(Reward):
    weight = 0.5

    def __call__(self, ctx):
        return exp_kernel(ctx.qpos[2:3] - 1.25, 0.1)


class AngularVelocityXYPenalty(Reward):
    weight = -0.05

    def __call__(self, ctx):
        return jnp.sum(jnp.square(ctx.qvel[3:5]))


class ActionRatePenalty(Reward):
    weight = -0.01

    def __call__(self, ctx):
        return jnp.sum(jnp.square(ctx.action - ctx.prev_action()))


class TorquePenalty(Reward):
    weight = -0.0001

    def __call__(self, ctx):
        return jnp.sum(jnp.square(ctx.actuator_force))


class SoftJointLimitPenalty(Reward):
    weight = -1.0

    def __init__(self):
        self.lo_J = jnp.deg2rad(jnp.array(JOINT_LO_DEG, jnp.float32))
        self.hi_J = jnp.deg2rad(jnp.array(JOINT_HI_DEG, jnp.float32))

    def __call__(self, ctx):
        mid_J, half_J = (self.hi_J + self.lo_J) / 2, (self.hi_J - self.lo_J) / 2
        return jnp.sum(jnp.maximum(jnp.abs(ctx.qpos[7:] - mid_J) - 0.9 * half_J, 0.0))


class FeetAirTimeReward(Reward):
    def get_weight(self, ctx):
        return 0.2 * ctx.level

    def __call__(self, ctx):
        touchdown = ctx.feet() & ~ctx.prev_feet()
        per_foot = jnp.where(touchdown, ctx.mem["state.air_time"] - 0.4, 0.0)
        moving = jnp.linalg.norm(ctx.mem["cmd.vel"][:2]) > 0.1
        return jnp.where(moving, jnp.sum(per_foot), 0.0)


# ---- terminations


def base_height_too_low(ctx: Context) -> jnp.ndarray:
    return ctx.qpos[2] < 0.8


def tilted(ctx: Context) -> jnp.ndarray:
    gravity = rotate_vector_by_quat(jnp.array(GRAVITY), ctx.qpos[3:7], inverse=True)
    down = jnp.array(GRAVITY)
    angle = jnp.arctan2(jnp.linalg.norm(jnp.cross(gravity, down)), jnp.dot(gravity, down))
    return angle > math.radians(60)


# --------------------------------------------------------------------------- the task


def make_walk_step(spec: TaskSpec, default_joint_pos_J: np.ndarray) -> Callable:
    """`step(phys, action, level, mem, rand_n, rand_u) -> dict` for walk.ksim, one env per call."""
    layout = {m["name"]: slice(int(m["offset"]), int(m["offset"]) + int(m["size"])) for m in spec.mem_layout}
    nj = len(default_joint_pos_J)
    gravity_obs = ProjectedGravityObservation(slice(2 * nj, 2 * nj + 3))
    actor = [
        JointPositionObservation(default_joint_pos_J, slice(0, nj)),
        JointVelocityObservation(slice(nj, 2 * nj)),
        gravity_obs,
        GyroObservation(slice(0, 3)),
        CommandObservation(),
        LastActionObservation(),
    ]
    critic_extra = [
        LocalLinearVelocityObservation(),
        LocalAngularVelocityObservation(),
        HeightObservation(),
        FeetContactObservation(),
        AirTimeObservation(),
        TorqueObservation(),
    ]
    rewards = [
        StayAliveReward(),
        LinearVelocityTrackingReward(),
        AngularVelocityTrackingReward(),
        BaseHeightReward(),
        AngularVelocityXYPenalty(),
        ActionRatePenalty(),
        TorquePenalty(),
        SoftJointLimitPenalty(),
        FeetAirTimeReward(),
    ]
    terminations = [base_height_too_low, tilted]
    resample_steps = 250.0  # `resample every 5s` at ctrl_dt 20 ms

    def step(phys, action, level, mem, rand_n, rand_u):
        ctx = Context(layout, phys, action, level, mem, rand_n, rand_u)
        obs_actor = jnp.concatenate([o.add_noise(ctx, o.observe(ctx)) for o in actor])
        obs_critic = jnp.concatenate([o.observe(ctx) for o in actor + critic_extra])
        terms = jnp.stack([r(ctx) for r in rewards])
        weights = jnp.stack([jnp.asarray(r.get_weight(ctx), jnp.float32) for r in rewards])
        done = jnp.stack([t(ctx) for t in terminations])

        # command resampling
        timer = ctx.mem["cmd.vel.timer"][0]
        resample = timer <= 1.0
        lo, width = jnp.array([-0.5, -0.3, -0.5]), jnp.array([2.0, 0.6, 1.0])
        drawn = jnp.where(rand_u[6] < 0.1, 0.0, lo + width * rand_u[3:6])
        cmd = jnp.where(resample, drawn, ctx.mem["cmd.vel"])
        cmd_timer = jnp.where(resample, resample_steps, timer - 1.0)
        # push event
        push_timer = ctx.mem["event.push.timer"][0]
        push = push_timer <= 1.0
        push_xy = -0.5 * level + 1.0 * level * rand_u[7:9]
        qvel = ctx.qvel.at[0:2].add(jnp.where(push, push_xy, 0.0))
        next_push = jnp.where(push, 50.0 + 100.0 * rand_u[9], push_timer - 1.0)

        feet = ctx.feet()
        air_time = jnp.where(feet, 0.0, ctx.mem["state.air_time"] + CTRL_DT)
        next_mem = {
            "state.air_time": air_time,
            "prev.action": action,
            "prev.feet": feet.astype(jnp.float32),
            "cmd.vel": cmd,
            "cmd.vel.timer": cmd_timer[None],
            "bias.gyro": ctx.mem["bias.gyro"],
            "delay.gravity": ctx.mem["delay.gravity"],
            "ring.gravity": gravity_obs.next_ring(ctx),
            "event.push.timer": next_push[None],
            "first": jnp.zeros(1),
        }
        new_mem = jnp.concatenate([next_mem[name] for name in layout])
        return {
            "actor": obs_actor.astype(jnp.float32),
            "critic": obs_critic.astype(jnp.float32),
            "reward_terms": terms.astype(jnp.float32),
            "reward_weights": weights,
            "terminations": done,
            "mem": new_mem.astype(jnp.float32),
            "qpos": ctx.qpos.astype(jnp.float32),
            "qvel": qvel.astype(jnp.float32),
        }

    return step
