"""Rollouts on C MuJoCo: the host-side `Collector` for `engine mujoco`.

The environments (`ksimdsl.runtime.engine.mujoco.env.MujocoEnv`) step on native
threads. The actor runs where it is cheapest: an MLP actor (normal or mixture
head) is evaluated by numba inside the worker threads, each for its own chunk
of envs right before their physics (`numba_policy.HostActor`,
`MujocoEnv.step_actor`; its random draws come from a generator seeded by the
rollout's key); a GRU actor runs batched in one jitted JAX call per control
step (`loop.policy_step`: carry reset, action sample and log-prob for all E envs).
The critic is not evaluated during the rollout: the trajectory carries the
critic observations of every state reached (`final_obs_critic_TEC`), and the
PPO update values them under its updated normalizer. The collector is not
jittable (`jittable = False`): the training loop calls `collect` from Python
and jits only the PPO update.

`collect` is the shared `loop.collect_rollout` on the host loop: the same
trajectory and `RolloutStats` as `MjxCollector`, stacked in numpy and handed
to JAX once per rollout.

Checkpoints hold the collector state and the envs' `EnvSnapshot`, under the
array names of earlier versions (`_CHECKPOINT_NAMES`), so older runs resume.
"""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ksimdsl.abi import TaskSpec
from ksimdsl.runtime.rl import ppo
from ksimdsl.runtime.engine.base import EnvSnapshot, RolloutStats
from ksimdsl.runtime.engine.loop import HOST_LOOP, RolloutCarry, amp_features, collect_rollout, policy_step
from ksimdsl.runtime.engine.mujoco.env import MujocoEnv
from ksimdsl.runtime.engine.mujoco.numba_policy import HostActor

__all__ = ["MujocoCollector", "MujocoCollectorState"]

#: EnvSnapshot field -> its array name in checkpoints (the names the C-MuJoCo engine has always used).
_CHECKPOINT_NAMES = {
    "data": "physics_EX",
    "fields_E": "fields",
    "episode_return_E": "running_return_E",
    "key": "rng_state",
}
#: The EnvSnapshot as checkpointed: the same fields, in the same order, under those names.
_SavedSnapshot = namedtuple("EnvSnapshot", [_CHECKPOINT_NAMES.get(f, f) for f in EnvSnapshot._fields])


class MujocoCollectorState(NamedTuple):
    """The part of the collector's state that is not inside the (stateful) `MujocoEnv`."""

    carry_E: jax.Array  # actor carry, (E, *carry)
    reset_E: np.ndarray  # bool (E,): the carry must be reset before the next step
    iteration: int  # rollouts collected so far (drives `curriculum linear`)


class _CollectorCheckpoint(NamedTuple):
    carry_E: Any
    reset_E: np.ndarray
    iteration: np.ndarray
    env: Any  # the EnvSnapshot as `_SavedSnapshot`


class MujocoCollector:
    """Rollouts on C MuJoCo, stepped on `threads` native threads (default: all usable cores).

    `numba_policy`: evaluate a supported actor with numba in the worker threads
    (default); False always uses the batched JAX call.
    """

    jittable = False

    def __init__(
        self,
        spec: TaskSpec,
        kernels: ModuleType,
        model_path: str | Path,
        *,
        num_envs: int | None = None,
        threads: int | None = None,
        numba_policy: bool = True,
    ):
        self.spec = spec
        self.numba_policy = numba_policy
        self.num_envs = int(num_envs if num_envs is not None else spec.train.num_envs)
        self.rollout = int(spec.train.rollout)
        self.env = MujocoEnv(spec, kernels, model_path, num_envs=self.num_envs, threads=threads)
        self._policy_step = jax.jit(policy_step)

    # ------------------------------------------------------------------ Collector protocol

    def init(self, *, key: jax.Array) -> MujocoCollectorState:
        """Fresh episodes in every env (host random stream seeded from `key`)."""
        self.env.reseed(key)
        self.env.reset_all()
        return MujocoCollectorState(
            carry_E=jnp.zeros((self.num_envs, 0), jnp.float32),
            reset_E=np.ones(self.num_envs, dtype=bool),
            iteration=0,
        )

    def init_for(self, ppo_state: ppo.PPOState, *, key: jax.Array) -> MujocoCollectorState:
        """`init` with the actor carry shaped for `ppo_state`'s model."""
        state = self.init(key=key)
        carry = ppo.initial_carry(ppo_state.model)
        return state._replace(carry_E=jnp.broadcast_to(carry, (self.num_envs,) + carry.shape))

    def collect(
        self, ppo_state: ppo.PPOState, state: MujocoCollectorState, *, key: jax.Array
    ) -> tuple[MujocoCollectorState, ppo.Trajectory, RolloutStats]:
        """T control steps of the stochastic policy in every env."""
        env, E = self.env, self.num_envs
        model, norm_a = ppo_state.model, ppo_state.obs_norm_actor
        iteration = int(state.iteration)  # the training loop may hand back JAX scalars / arrays
        env.level_E[:] = env.curriculum.at_iteration(env.level_E, iteration, xp=np)
        host_actor = HostActor.from_model(model, norm_a) if self.numba_policy and HostActor.supports(model) else None
        noise = np.random.default_rng(np.asarray(jax.random.bits(key, (4,), jnp.uint32)))

        def numba_step(env: MujocoEnv, carry_E: Any, reset_E: np.ndarray, key: jax.Array):
            out, action_EA, log_prob_E = env.step_actor(host_actor, host_actor.draw_noise(noise, E))
            return env, out, action_EA, log_prob_E, carry_E

        def jax_step(env: MujocoEnv, carry_E: Any, reset_E: np.ndarray, key: jax.Array):
            action_EA, log_prob_E, carry_E = self._policy_step(model, norm_a, env.obs_actor_EO, carry_E, reset_E, key)
            action_EA = np.asarray(action_EA)
            return env, env.step(action_EA), action_EA, np.asarray(log_prob_E), carry_E

        start = RolloutCarry(env, state.carry_E, np.asarray(state.reset_E, dtype=bool))
        step = numba_step if host_actor is not None else jax_step
        features = amp_features(
            self.spec, np, lambda e: np.stack([d.qpos for d in e.datas]), lambda e: np.stack([d.qvel for d in e.datas])
        )
        end, traj, stats = collect_rollout(HOST_LOOP, step, start, jax.random.split(key, self.rollout), features)
        return MujocoCollectorState(carry_E=end.carry_E, reset_E=end.reset_E, iteration=iteration + 1), traj, stats

    def to_checkpoint(self, state: MujocoCollectorState) -> _CollectorCheckpoint:
        """The collector state and a snapshot of every env.

        The snapshot's numpy arrays keep their 64-bit dtypes (the float64 physics
        state, the generator state) through the checkpoint, so resumption is exact.
        """
        snap = self.env.snapshot()
        return _CollectorCheckpoint(
            carry_E=state.carry_E,
            reset_E=np.asarray(state.reset_E),
            iteration=np.asarray(state.iteration, np.int32),
            env=_SavedSnapshot(*snap),
        )

    def from_checkpoint(self, template: Any, tree: _CollectorCheckpoint) -> MujocoCollectorState:
        """Restore the environments from `tree` (a `to_checkpoint` result) and return the collector state."""
        snap = EnvSnapshot(*_CollectorCheckpoint(*tree).env)
        self.env.restore(jax.tree.map(np.array, snap))  # writable copies of the loaded arrays
        return MujocoCollectorState(
            carry_E=jnp.asarray(tree.carry_E),
            reset_E=np.asarray(tree.reset_E, dtype=bool),
            iteration=int(np.asarray(tree.iteration)),
        )
