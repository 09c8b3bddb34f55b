"""Rollouts on MJX, entirely inside jit: `collect` is `loop.collect_rollout` as one `lax.scan`.

    collector.init_for(ppo_state, key=key) -> MjxCollectorState
    collector.collect(ppo_state, collector_state, key=key) -> (collector_state, Trajectory, RolloutStats)

The collector state is its own checkpoint (a pytree of arrays).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ksimdsl.abi import TaskSpec
from ksimdsl.runtime.rl import ppo
from ksimdsl.runtime.engine.base import EnvSnapshot, RolloutStats
from ksimdsl.runtime.engine.loop import JAX_LOOP, RolloutCarry, amp_features, collect_rollout, policy_step
from ksimdsl.runtime.engine.mjx.env import MjxEnv

__all__ = ["MjxCollector", "MjxCollectorState"]


class MjxCollectorState(NamedTuple):
    env: EnvSnapshot
    carry_E: jax.Array  # actor carry, (E, *carry)
    reset_E: jax.Array  # bool: the carry must be reset before the next step (an episode just ended)
    iteration: jax.Array  # int32: rollouts collected so far (drives `curriculum linear`)


class MjxCollector:
    """Rollouts on MJX, entirely inside jit."""

    jittable = True

    def __init__(self, spec: TaskSpec, kernels: ModuleType, model_path: str | Path, *, num_envs: int | None = None):
        self.spec = spec
        self.num_envs = int(num_envs if num_envs is not None else spec.train.num_envs)
        self.rollout = int(spec.train.rollout)
        self.env = MjxEnv(spec, kernels, model_path, num_envs=self.num_envs)

    def init(self, *, key: jax.Array) -> MjxCollectorState:
        """Fresh episodes in every env; an empty (MLP) actor carry. See `init_for`."""
        return MjxCollectorState(
            env=jax.jit(self.env.reset)(key),
            carry_E=jnp.zeros((self.num_envs, 0), jnp.float32),
            reset_E=jnp.ones((self.num_envs,), bool),
            iteration=jnp.zeros((), jnp.int32),
        )

    def init_for(self, ppo_state: ppo.PPOState, *, key: jax.Array) -> MjxCollectorState:
        """`init` with the actor carry shaped for `ppo_state`'s model (what training uses)."""
        state = self.init(key=key)
        carry = ppo.initial_carry(ppo_state.model)
        return state._replace(carry_E=jnp.broadcast_to(carry, (self.num_envs,) + carry.shape))

    def to_checkpoint(self, state: MjxCollectorState) -> MjxCollectorState:
        return state

    def from_checkpoint(self, template: MjxCollectorState, tree: MjxCollectorState) -> MjxCollectorState:
        return tree

    def collect(
        self, ppo_state: ppo.PPOState, state: MjxCollectorState, *, key: jax.Array
    ) -> tuple[MjxCollectorState, ppo.Trajectory, RolloutStats]:
        """T control steps of the stochastic policy in every env (pure; jit it)."""
        model, norm_a = ppo_state.model, ppo_state.obs_norm_actor
        env = state.env._replace(level_E=self.env.curriculum.at_iteration(state.env.level_E, state.iteration))

        def step(env: EnvSnapshot, carry_E: jax.Array, reset_E: jax.Array, key: jax.Array):
            action_EA, log_prob_E, carry_E = policy_step(model, norm_a, env.obs_actor_EO, carry_E, reset_E, key)
            env, out = self.env.step(env, action_EA)
            return env, out, action_EA, log_prob_E, carry_E

        start = RolloutCarry(env, state.carry_E, state.reset_E)
        features = amp_features(self.spec, jnp, self.env.qpos_EQ, self.env.qvel_EV)
        end, traj, stats = collect_rollout(JAX_LOOP, step, start, jax.random.split(key, self.rollout), features)
        return MjxCollectorState(**end._asdict(), iteration=state.iteration + 1), traj, stats
