"""Rollouts on C MuJoCo: the host-side `Collector` for `engine mujoco`.

The environments (`ksimdsl.runtime.mujoco_env.MujocoEnv`) step on native
threads. The actor runs where it is cheapest: an MLP actor (normal or mixture
head) is evaluated by numba inside the worker threads, each for its own chunk
of envs right before their physics (`numba_policy.HostActor`,
`MujocoEnv.step_actor`; its random draws come from a generator seeded by the
rollout's key); a GRU actor runs batched in one jitted JAX call per control
step (`_policy_step`: carry reset, action sample and log-prob for all E envs).
The critic is not evaluated during the rollout: the trajectory carries the
critic observations of every state reached (`final_obs_critic_TEC`), and the
PPO update values them under its updated normalizer. The collector is not
jittable (`jittable = False`): the training loop calls `collect` from Python
and jits only the PPO update.

The trajectory is recorded in preallocated numpy buffers (T, E, ...) and
handed to JAX once per rollout.

Outputs match `MjxCollector` exactly in structure: a `ppo.Trajectory` of JAX
arrays and `collect.RolloutStats` sums (via the shared `summarize_step`).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from ksimdsl.abi import TaskSpec
from ksimdsl.errors import KsimError
from ksimdsl.runtime import ppo
from ksimdsl.runtime.collect import RolloutStats, summarize_step
from ksimdsl.runtime.evaluate import EpisodeResults
from ksimdsl.runtime.mujoco_env import HostStepOutput, MujocoEnv
from ksimdsl.runtime.numba_policy import HostActor

__all__ = ["MujocoCollector", "MujocoCollectorState", "EnvSnapshot", "run_episodes_mujoco"]

#: MuJoCo state saved in checkpoints: everything mj_step integrates and reads back.
_STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION


class MujocoCollectorState(NamedTuple):
    """The part of the collector's state that is not inside the (stateful) `MujocoEnv`."""

    carry_E: jax.Array  # actor carry, (E, *carry)
    reset_E: np.ndarray  # bool (E,): the carry must be reset before the next step
    iteration: int  # rollouts collected so far (drives `curriculum linear`)


class EnvSnapshot(NamedTuple):
    """Everything needed to continue a `MujocoEnv` exactly (numpy arrays; checkpointed)."""

    physics_EX: np.ndarray  # float64, mj_getState(mjSTATE_INTEGRATION) per env
    fields: dict[str, np.ndarray]  # per-env randomized model fields, {name: (E, ...)}
    mem_EM: np.ndarray
    obs_actor_EO: np.ndarray
    obs_critic_EC: np.ndarray
    level_E: np.ndarray
    steps_at_level_E: np.ndarray
    step_E: np.ndarray
    running_return_E: np.ndarray
    prev_ctrl_EU: np.ndarray
    latency_E: np.ndarray
    zero_offset_EU: np.ndarray
    rng_state: np.ndarray  # uint64[6], numpy PCG64 state (see _rng_to_array)


class _CollectorCheckpoint(NamedTuple):
    carry_E: Any
    reset_E: np.ndarray
    iteration: np.ndarray
    env: EnvSnapshot


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
        self._policy_step = jax.jit(_policy_step)

    # ------------------------------------------------------------------ Collector protocol

    def init(self, *, key: jax.Array) -> MujocoCollectorState:
        """Fresh episodes in every env (host random stream seeded from `key`)."""
        seed = np.asarray(jax.random.bits(key, (4,), jnp.uint32)).astype(np.uint64)
        self.env.rng = np.random.default_rng(seed)
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
        env, spec = self.env, self.spec
        T, E = self.rollout, self.num_envs
        model = ppo_state.model
        norm_a = ppo_state.obs_norm_actor
        iteration = int(state.iteration)  # the training loop may hand back JAX scalars / arrays
        env.level_E[:] = env.curriculum.at_iteration(env.level_E, iteration, xp=np)

        obs_actor_TEO = np.empty((T, E, spec.obs_actor_size), np.float32)
        obs_critic_TEC = np.empty((T, E, spec.obs_critic_size), np.float32)
        final_obs_critic_TEC = np.empty((T, E, spec.obs_critic_size), np.float32)
        action_TEA = np.empty((T, E, spec.action_size), np.float32)
        log_prob_TE = np.empty((T, E), np.float32)
        reward_TE = np.empty((T, E), np.float32)
        done_TE = np.empty((T, E), bool)
        failure_TE = np.empty((T, E), bool)
        reset_TE = np.empty((T, E), bool)
        outputs: list[HostStepOutput] = []
        levels: list[np.ndarray] = []

        carry_E, reset_E = state.carry_E, np.asarray(state.reset_E, dtype=bool)
        host_actor = HostActor.from_model(model, norm_a) if self.numba_policy and HostActor.supports(model) else None
        noise = np.random.default_rng(np.asarray(jax.random.bits(key, (4,), jnp.uint32)))
        for t, step_key in enumerate(jax.random.split(key, T)):
            obs_actor_TEO[t] = env.obs_actor_EO
            obs_critic_TEC[t] = env.obs_critic_EC
            reset_TE[t] = reset_E
            level_E = env.level_E.copy()
            if host_actor is not None:
                out, action_TEA[t], log_prob_TE[t] = env.step_actor(host_actor, host_actor.draw_noise(noise, E))
            else:
                action, log_prob, carry_E = self._policy_step(
                    model, norm_a, obs_actor_TEO[t], carry_E, reset_E, step_key
                )
                action_TEA[t] = np.asarray(action)
                out = env.step(action_TEA[t])
                log_prob_TE[t] = np.asarray(log_prob)
            reward_TE[t] = out.reward_E
            done_TE[t] = out.done_E
            failure_TE[t] = out.failure_E
            final_obs_critic_TEC[t] = out.final_obs_critic_EC
            outputs.append(out)
            levels.append(level_E)
            reset_E = out.done_E.copy()

        traj = ppo.Trajectory(
            obs_actor_TEO=jnp.asarray(obs_actor_TEO),
            obs_critic_TEC=jnp.asarray(obs_critic_TEC),
            final_obs_critic_TEC=jnp.asarray(final_obs_critic_TEC),
            action_TEA=jnp.asarray(action_TEA),
            log_prob_TE=jnp.asarray(log_prob_TE),
            reward_TE=jnp.asarray(reward_TE),
            done_TE=jnp.asarray(done_TE),
            failure_TE=jnp.asarray(failure_TE),
            carry_E=state.carry_E,  # before step 0's reset; reset_TE[0] replays that reset
            reset_TE=jnp.asarray(reset_TE),
        )
        stats = _rollout_stats(outputs, levels)
        new_state = MujocoCollectorState(carry_E=carry_E, reset_E=reset_E, iteration=iteration + 1)
        return new_state, traj, stats

    def to_checkpoint(self, state: MujocoCollectorState) -> _CollectorCheckpoint:
        """The collector state and a snapshot of every env.

        The snapshot's numpy arrays keep their 64-bit dtypes (the float64 physics
        state, the generator state) through the checkpoint, so resumption is exact.
        """
        return _CollectorCheckpoint(
            carry_E=state.carry_E,
            reset_E=np.asarray(state.reset_E),
            iteration=np.asarray(state.iteration, np.int32),
            env=self.snapshot(),
        )

    def from_checkpoint(self, template: Any, tree: _CollectorCheckpoint) -> MujocoCollectorState:
        """Restore the environments from `tree` (a `to_checkpoint` result) and return the collector state."""
        self.restore(jax.tree.map(np.array, EnvSnapshot(*tree.env)))  # writable copies of the loaded arrays
        return MujocoCollectorState(
            carry_E=jnp.asarray(tree.carry_E),
            reset_E=np.asarray(tree.reset_E, dtype=bool),
            iteration=int(np.asarray(tree.iteration)),
        )

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> EnvSnapshot:
        """A copy of the environments' complete state."""
        env = self.env
        m = env.mj_model
        size = mujoco.mj_stateSize(m, _STATE_SPEC)
        physics_EX = np.empty((env.num_envs, size))
        for e, d in enumerate(env.datas):
            mujoco.mj_getState(env.model_of(e), d, physics_EX[e], _STATE_SPEC)
        fields = {
            name: np.stack([np.array(getattr(env.model_of(e), name)) for e in range(env.num_envs)])
            for name in self.spec.randomize_fields
        }
        return EnvSnapshot(
            physics_EX=physics_EX,
            fields=fields,
            mem_EM=env.mem_EM.copy(),
            obs_actor_EO=env.obs_actor_EO.copy(),
            obs_critic_EC=env.obs_critic_EC.copy(),
            level_E=env.level_E.copy(),
            steps_at_level_E=env.steps_at_level_E.copy(),
            step_E=env.step_E.copy(),
            running_return_E=env.running_return_E.copy(),
            prev_ctrl_EU=env.prev_ctrl_EU.copy(),
            latency_E=env.latency_E.copy(),
            zero_offset_EU=env.zero_offset_EU.copy(),
            rng_state=_rng_to_array(env.rng),
        )

    def restore(self, snap: EnvSnapshot) -> None:
        """Put the environments back into the state `snapshot` returned."""
        env = self.env
        if snap.physics_EX.shape[0] != env.num_envs:
            raise KsimError(
                f"checkpoint holds {snap.physics_EX.shape[0]} environments, this run has {env.num_envs}; "
                "resume with the same num_envs"
            )
        for name, values in snap.fields.items():
            for e in range(env.num_envs):
                getattr(env.model_of(e), name)[...] = values[e]
        for e, d in enumerate(env.datas):
            mujoco.mj_setState(env.model_of(e), d, np.array(snap.physics_EX[e], np.float64), _STATE_SPEC)
            mujoco.mj_forward(env.model_of(e), d)
        env.refresh_all()
        for name in (
            "mem_EM",
            "obs_actor_EO",
            "obs_critic_EC",
            "level_E",
            "steps_at_level_E",
            "step_E",
            "running_return_E",
            "prev_ctrl_EU",
            "latency_E",
            "zero_offset_EU",
        ):
            getattr(env, name)[...] = getattr(snap, name)
        env.rng = _rng_from_array(np.asarray(snap.rng_state))


def run_episodes_mujoco(
    spec: TaskSpec,
    kernels: ModuleType,
    model_path: str | Path,
    policy: ppo.Policy,
    *,
    episodes: int,
    seed: int = 0,
    threads: int | None = None,
) -> EpisodeResults:
    """Run `policy` (deterministic) for one episode in each of `episodes` C-MuJoCo envs.

    The C-MuJoCo counterpart of `evaluate.run_episodes_mjx`: every env's first
    episode is recorded; envs that finish early keep stepping (auto-reset) until
    all are done or `episode_steps` control steps have passed.
    """
    env = MujocoEnv(spec, kernels, model_path, num_envs=episodes, threads=threads, seed=seed)
    env.reset_all()
    act = jax.jit(jax.vmap(lambda p, o, c: p(o, c), in_axes=(None, 0, 0)))
    carry = policy.initial_carry()
    carry_E = jnp.broadcast_to(carry, (episodes,) + carry.shape)
    finished_E = np.zeros(episodes, bool)
    results = EpisodeResults(
        return_E=np.zeros(episodes, np.float32),
        length_E=np.zeros(episodes, np.int32),
        termination_EK=np.zeros((episodes, len(spec.terminations)), bool),
        truncated_E=np.zeros(episodes, bool),
    )
    for _ in range(spec.episode_steps):
        action_EA, carry_E = act(policy, env.obs_actor_EO, carry_E)
        out = env.step(np.asarray(action_EA))
        first_E = out.done_E & ~finished_E
        results.return_E[first_E] = out.episode_return_E[first_E]
        results.length_E[first_E] = out.episode_length_E[first_E]
        results.termination_EK[first_E] = out.terminations_EK[first_E]
        results.truncated_E[first_E] = out.truncated_E[first_E]
        finished_E |= out.done_E
        if finished_E.all():
            break
        if out.done_E.any() and carry.size:
            carry_E = jnp.where(
                jnp.asarray(out.done_E).reshape((-1,) + (1,) * carry.ndim), carry[None], carry_E
            )
    env.close()
    return results


def _rollout_stats(outputs: list[HostStepOutput], levels: list[np.ndarray]) -> RolloutStats:
    """`RolloutStats` of a whole rollout: `summarize_step` over all T * E steps at once."""

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(out, name) for out in outputs])

    stats = summarize_step(
        reward_E=cat("reward_E"),
        reward_terms_ER=cat("reward_terms_ER"),
        reward_weights_ER=cat("reward_weights_ER"),
        terminations_EK=cat("terminations_EK"),
        done_E=cat("done_E"),
        failure_E=cat("failure_E"),
        success_E=cat("success_E"),
        truncated_E=cat("truncated_E"),
        nan_E=cat("nan_E"),
        episode_return_E=cat("episode_return_E"),
        episode_length_E=cat("episode_length_E"),
        level_E=np.concatenate(levels),
        xp=np,
    )
    return RolloutStats(*(jnp.asarray(np.asarray(x, np.float32)) for x in stats))


def _policy_step(model, norm_a, obs_actor_EO, carry_E, reset_E, key):
    """One batched actor step: (action_EA, log_prob_E, carry_E) (jitted by the collector)."""
    carry_E = jax.vmap(ppo.reset_carry, in_axes=(None, 0, 0))(model, carry_E, reset_E)
    keys_E = jax.random.split(key, obs_actor_EO.shape[0])
    return jax.vmap(lambda o, c, k: ppo.act(model, norm_a, o, c, key=k))(obs_actor_EO, carry_E, keys_E)


def _rng_to_array(rng: np.random.Generator) -> np.ndarray:
    """numpy PCG64 state -> uint64[6] (state hi/lo, inc hi/lo, has_uint32, uinteger)."""
    st = rng.bit_generator.state
    if st["bit_generator"] != "PCG64":  # pragma: no cover - MujocoEnv always makes PCG64
        raise TypeError(f"cannot checkpoint a {st['bit_generator']} generator")
    mask = (1 << 64) - 1
    s, inc = st["state"]["state"], st["state"]["inc"]
    return np.array([s >> 64, s & mask, inc >> 64, inc & mask, st["has_uint32"], st["uinteger"]], dtype=np.uint64)


def _rng_from_array(a: np.ndarray) -> np.random.Generator:
    v = [int(x) for x in a]
    bg = np.random.PCG64()
    bg.state = {
        "bit_generator": "PCG64",
        "state": {"state": (v[0] << 64) | v[1], "inc": (v[2] << 64) | v[3]},
        "has_uint32": v[4],
        "uinteger": v[5],
    }
    return np.random.Generator(bg)
