"""Collectors: where rollouts come from. The training loop talks to engines only through `Collector`.

A collector owns the environments of one engine and runs the current policy
in them for `rollout` control steps:

    collector.init_for(ppo_state, key=key) -> CollectorState   (init(key=...) + the actor's carry)
    collector.collect(ppo_state, collector_state, key=key) -> (collector_state, Trajectory, RolloutStats)

`Trajectory` is `ksimdsl.runtime.ppo.Trajectory` (what `ppo.update` consumes);
`RolloutStats` holds per-iteration sums over the rollout (the training loop
turns them into metrics). When `collector.jittable` is true, `collect` is a
pure JAX function and one training iteration (collect + update) is compiled
into one jitted call; otherwise (a host engine such as C MuJoCo) the loop calls
`collect` from Python and jits only the update.

The collector state is checkpointed so that a resumed run continues exactly
where it stopped: `to_checkpoint(state)` returns a pytree of arrays,
`from_checkpoint(template, tree)` rebuilds a state from one (the template
comes from `init`).

`MjxCollector` is the MJX implementation: a `lax.scan` over T of one vmapped
policy step and one `MjxEnv.step`.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from ksimdsl.abi import TaskSpec
from ksimdsl.runtime import ppo
from ksimdsl.runtime.mjx_env import EnvState, MjxEnv

__all__ = ["Collector", "RolloutStats", "MjxCollector", "MjxCollectorState", "summarize_step"]


class RolloutStats(NamedTuple):
    """Sums over one rollout of T steps in E envs (all float32 scalars unless noted).

    Episode quantities count episodes that FINISHED during the rollout.
    """

    env_steps: jax.Array  # T * E control steps
    episodes: jax.Array  # finished episodes
    episode_return_sum: jax.Array
    episode_length_sum: jax.Array
    reward_sum: jax.Array  # summed over all T * E steps
    reward_term_sum_R: jax.Array  # unweighted terms, summed over all steps
    reward_weighted_sum_R: jax.Array  # weight * term, summed over all steps
    termination_count_K: jax.Array  # finished episodes in which termination k fired
    truncations: jax.Array  # episodes ended by the time limit
    failures: jax.Array  # episodes ended by a failure (including NaN resets)
    successes: jax.Array
    nan_resets: jax.Array  # envs reset because the physics went non-finite
    level_sum: jax.Array  # curriculum level summed over all steps


def summarize_step(
    *,
    reward_E: Any,
    reward_terms_ER: Any,
    reward_weights_ER: Any,
    terminations_EK: Any,
    done_E: Any,
    failure_E: Any,
    success_E: Any,
    truncated_E: Any,
    nan_E: Any,
    episode_return_E: Any,
    episode_length_E: Any,
    level_E: Any,
    xp: ModuleType = jnp,
) -> RolloutStats:
    """RolloutStats of ONE control step (sum these over T). Shared with host engines (`xp=numpy`)."""
    f32 = xp.float32
    done = done_E.astype(f32)
    return RolloutStats(
        env_steps=xp.asarray(reward_E.shape[0], f32),
        episodes=xp.sum(done),
        episode_return_sum=xp.sum(xp.where(done_E, episode_return_E, 0.0)).astype(f32),
        episode_length_sum=xp.sum(xp.where(done_E, episode_length_E, 0)).astype(f32),
        reward_sum=xp.sum(reward_E).astype(f32),
        reward_term_sum_R=xp.sum(reward_terms_ER, axis=0).astype(f32),
        reward_weighted_sum_R=xp.sum(reward_terms_ER * reward_weights_ER, axis=0).astype(f32),
        termination_count_K=xp.sum(terminations_EK & done_E[:, None], axis=0).astype(f32),
        truncations=xp.sum(truncated_E).astype(f32),
        failures=xp.sum(failure_E).astype(f32),
        successes=xp.sum(success_E).astype(f32),
        nan_resets=xp.sum(nan_E).astype(f32),
        level_sum=xp.sum(level_E).astype(f32),
    )


@runtime_checkable
class Collector(Protocol):
    """What the training loop needs from an engine (see the module docstring)."""

    spec: TaskSpec
    num_envs: int
    jittable: bool

    def init(self, *, key: jax.Array) -> Any: ...

    def init_for(self, ppo_state: ppo.PPOState, *, key: jax.Array) -> Any: ...

    def collect(self, ppo_state: ppo.PPOState, state: Any, *, key: jax.Array) -> tuple[Any, ppo.Trajectory, RolloutStats]: ...

    def to_checkpoint(self, state: Any) -> Any: ...

    def from_checkpoint(self, template: Any, tree: Any) -> Any: ...


class MjxCollectorState(NamedTuple):
    env: EnvState
    carry_E: jax.Array  # actor carry, (E, *carry)
    reset_E: jax.Array  # bool: the carry must be reset before the next step (an episode just ended)
    iteration: jax.Array  # int32: rollouts collected so far (drives `curriculum linear`)


class _StepRecord(NamedTuple):
    obs_actor_EO: jax.Array
    obs_critic_EC: jax.Array
    final_obs_critic_EC: jax.Array
    action_EA: jax.Array
    log_prob_E: jax.Array
    reward_E: jax.Array
    done_E: jax.Array
    failure_E: jax.Array
    reset_E: jax.Array


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
        model = ppo_state.model
        norm_a = ppo_state.obs_norm_actor
        curriculum = self.env.curriculum
        env = state.env._replace(level_E=curriculum.at_iteration(state.env.level_E, state.iteration))

        def step(carry, step_key):
            env, carry_E, reset_E = carry
            carry_E = jax.vmap(ppo.reset_carry, in_axes=(None, 0, 0))(model, carry_E, reset_E)
            keys_E = jax.random.split(step_key, self.num_envs)
            action_EA, log_prob_E, carry_E = jax.vmap(
                lambda o, c, k: ppo.act(model, norm_a, o, c, key=k)
            )(env.obs_actor_EO, carry_E, keys_E)
            next_env, out = self.env.step(env, action_EA)
            record = _StepRecord(
                obs_actor_EO=env.obs_actor_EO,
                obs_critic_EC=env.obs_critic_EC,
                final_obs_critic_EC=out.final_obs_critic_EC,
                action_EA=action_EA,
                log_prob_E=log_prob_E,
                reward_E=out.reward_E,
                done_E=out.done_E,
                failure_E=out.failure_E,
                reset_E=reset_E,
            )
            stats = summarize_step(
                reward_E=out.reward_E,
                reward_terms_ER=out.reward_terms_ER,
                reward_weights_ER=out.reward_weights_ER,
                terminations_EK=out.terminations_EK,
                done_E=out.done_E,
                failure_E=out.failure_E,
                success_E=out.success_E,
                truncated_E=out.truncated_E,
                nan_E=out.nan_E,
                episode_return_E=out.episode_return_E,
                episode_length_E=out.episode_length_E,
                level_E=env.level_E,
            )
            return (next_env, carry_E, out.done_E), (record, stats)

        (env, carry_E, reset_E), (rec, stats_T) = jax.lax.scan(
            step, (env, state.carry_E, state.reset_E), jax.random.split(key, self.rollout)
        )
        traj = ppo.Trajectory(
            obs_actor_TEO=rec.obs_actor_EO,
            obs_critic_TEC=rec.obs_critic_EC,
            final_obs_critic_TEC=rec.final_obs_critic_EC,
            action_TEA=rec.action_EA,
            log_prob_TE=rec.log_prob_E,
            reward_TE=rec.reward_E,
            done_TE=rec.done_E,
            failure_TE=rec.failure_E,
            carry_E=state.carry_E,  # before step 0's reset; reset_TE[0] replays that reset
            reset_TE=rec.reset_E,
        )
        stats = jax.tree.map(lambda x: jnp.sum(x, axis=0), stats_T)
        new_state = MjxCollectorState(env=env, carry_E=carry_E, reset_E=reset_E, iteration=state.iteration + 1)
        return new_state, traj, stats
