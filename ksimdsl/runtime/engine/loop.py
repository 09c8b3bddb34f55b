"""The episode loops, written once for every engine.

Each loop is plain code over an `Env` (reset / step / qpos_EQ) and the engine's
`Loop` (how loops run):

* `JAX_LOOP` (MJX): `lax.scan` / `lax.while_loop`, the whole loop traced into one
  jitted program;
* `HOST_LOOP` (C MuJoCo): the same body called step by step from Python, with
  the per-step JAX policy call jitted on its own and the records stacked in numpy.

The loops:

* `collect_rollout`: T steps of the stochastic policy for training (what both
  collectors' `collect` is); the engine supplies the policy step (`RolloutPolicyStep`);
* `run_episodes`: the deterministic policy for one episode in each of E envs (eval);
* `Recording`: one env's joint positions and velocities, episode time and return
  after every control step (render, record), through `OneEnvPolicyStep`, the policy step of ONE env
  (act, step, reset the actor's carry after a done) that the live viewer shares;
* `env_steps_per_s`: the engine's whole control step, timed (bench).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from ksimdsl.abi import TaskSpec
from ksimdsl.runtime.rl import ppo
from ksimdsl.runtime.engine.base import Engine, EpisodeResults, RolloutStats, StepOutput, summarize_step
from ksimdsl.runtime.engine.pins import MemPins

__all__ = [
    "JaxLoop",
    "HostLoop",
    "JAX_LOOP",
    "HOST_LOOP",
    "RolloutCarry",
    "RolloutPolicyStep",
    "policy_step",
    "collect_rollout",
    "run_episodes",
    "OneEnvPolicyStep",
    "Recorded",
    "Recording",
    "env_steps_per_s",
    "EnvStepTiming",
]


# --------------------------------------------------------------------------- how loops run


class JaxLoop:
    """Loops traced by JAX: the whole loop is one XLA program (`jit` it)."""

    xp: ModuleType = jnp

    def jit(self, fn: Callable) -> Callable:
        return jax.jit(fn)

    def jit_step(self, fn: Callable) -> Callable:
        return fn  # traced into the loop's program

    def scan(self, body: Callable, carry: Any, xs: Any = None, length: int | None = None) -> tuple[Any, Any]:
        return jax.lax.scan(body, carry, xs, length=length)

    def while_loop(self, cond: Callable, body: Callable, carry: Any) -> Any:
        return jax.lax.while_loop(cond, body, carry)

    def copy(self, x: Any) -> Any:
        return x  # values are immutable

    def key(self, seed: int) -> jax.Array:
        return jax.random.PRNGKey(seed)

    def block(self, tree: Any) -> Any:
        return jax.block_until_ready(tree)

    def to_jax(self, x: Any) -> Any:
        return x

    def step_stats(self, out: StepOutput, level_E: Any) -> RolloutStats:
        """What a rollout step keeps for the rollout's statistics: its sums."""
        return summarize_step(out, level_E, jnp)

    def rollout_stats(self, stats_T: RolloutStats) -> RolloutStats:
        return jax.tree.map(lambda x: jnp.sum(x, axis=0), stats_T)


class HostLoop:
    """Loops run by Python, one step at a time, on an engine whose state the step updates in place."""

    xp: ModuleType = np

    def jit(self, fn: Callable) -> Callable:
        return fn

    def jit_step(self, fn: Callable) -> Callable:
        return jax.jit(fn)

    def scan(self, body: Callable, carry: Any, xs: Any = None, length: int | None = None) -> tuple[Any, Any]:
        records = []
        for x in [None] * length if xs is None else xs:  # iterating a JAX array unstacks it at once
            carry, record = body(carry, x)
            records.append(record)
        return carry, jax.tree.map(lambda *leaves: np.stack(leaves), *records)

    def while_loop(self, cond: Callable, body: Callable, carry: Any) -> Any:
        while cond(carry):
            carry = body(carry)
        return carry

    def copy(self, x: Any) -> Any:
        return np.array(x, copy=True)  # the next step overwrites the env's buffers

    def key(self, seed: int) -> int:
        return seed

    def block(self, tree: Any) -> Any:
        return tree

    def to_jax(self, x: Any) -> Any:
        return jnp.asarray(x)

    def step_stats(self, out: StepOutput, level_E: Any) -> tuple[StepOutput, Any]:
        """What a rollout step keeps for the rollout's statistics: the outputs (summed once at the end)."""
        return out, level_E

    def rollout_stats(self, stats_T: tuple[StepOutput, Any]) -> RolloutStats:
        """`summarize_step` over all T * E steps at once."""
        out_T, level_TE = stats_T
        # explicit T * E: a task without `terminate` has (T, E, 0) flags, whose -1 numpy cannot infer
        flat = jax.tree.map(lambda x: x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:]), out_T)
        stats = summarize_step(flat, level_TE.reshape(-1), np)
        return RolloutStats(*(jnp.asarray(np.asarray(x, np.float32)) for x in stats))


JAX_LOOP = JaxLoop()
HOST_LOOP = HostLoop()


# --------------------------------------------------------------------------- training rollouts


class RolloutCarry(NamedTuple):
    """What a rollout carries from step to step."""

    env: Any  # the env state
    carry_E: Any  # actor carry, (E, *carry)
    reset_E: Any  # bool: the carry must be reset before the next step (an episode just ended)


class RolloutPolicyStep(Protocol):
    """The engine's policy step: act in every env and step them.

    (env, carry_E, reset_E, key) -> (env, StepOutput, action_EA, log_prob_E, carry_E)
    """

    def __call__(self, env: Any, carry_E: Any, reset_E: Any, key: Any) -> tuple[Any, StepOutput, Any, Any, Any]: ...


class _StepRecord(NamedTuple):
    obs_actor_EO: Any
    obs_critic_EC: Any
    final_obs_critic_EC: Any
    action_EA: Any
    log_prob_E: Any
    reward_E: Any
    done_E: Any
    failure_E: Any
    reset_E: Any
    amp_feat_EF: Any = None  # AMP features of the state the step started from (None without `amp`)


def policy_step(model: Any, norm_a: Any, obs_actor_EO: Any, carry_E: Any, reset_E: Any, key: jax.Array):
    """One batched stochastic actor step: (action_EA, log_prob_E, carry_E) (JAX)."""
    carry_E = jax.vmap(ppo.reset_carry, in_axes=(None, 0, 0))(model, carry_E, reset_E)
    keys_E = jax.random.split(key, obs_actor_EO.shape[0])
    return jax.vmap(lambda o, c, k: ppo.act(model, norm_a, o, c, key=k))(obs_actor_EO, carry_E, keys_E)


def amp_features(
    spec: TaskSpec, xp: ModuleType, qpos_EQ: Callable[[Any], Any], qvel_EV: Callable[[Any], Any]
) -> Callable[[Any], Any] | None:
    """env state -> the AMP features phi_EF of its state, for a task with an `amp` block (else None)."""
    if spec.amp is None:
        return None
    from ksimdsl.runtime.rl.amp import state_features

    phi = state_features(spec.amp, xp)
    return lambda state: phi(qpos_EQ(state), qvel_EV(state))


def collect_rollout(
    loop: JaxLoop | HostLoop,
    step: RolloutPolicyStep,
    start: RolloutCarry,
    keys_T: jax.Array,
    features: Callable[[Any], Any] | None = None,
) -> tuple[RolloutCarry, ppo.Trajectory, RolloutStats]:
    """T = len(keys_T) policy steps from `start`: the trajectory PPO consumes and the rollout's sums.

    `features` (env state -> phi_EF, a task's `amp` block) records the AMP features of every state.
    """

    def body(carry: RolloutCarry, key: jax.Array):
        env = carry.env
        feat_EF = None if features is None else loop.copy(features(env))
        obs_actor_EO, obs_critic_EC = loop.copy(env.obs_actor_EO), loop.copy(env.obs_critic_EC)
        level_E = loop.copy(env.level_E)
        env, out, action_EA, log_prob_E, carry_E = step(env, carry.carry_E, carry.reset_E, key)
        record = _StepRecord(
            obs_actor_EO=obs_actor_EO,
            obs_critic_EC=obs_critic_EC,
            final_obs_critic_EC=out.final_obs_critic_EC,
            action_EA=action_EA,
            log_prob_E=log_prob_E,
            reward_E=out.reward_E,
            done_E=out.done_E,
            failure_E=out.failure_E,
            reset_E=carry.reset_E,
            amp_feat_EF=feat_EF,
        )
        return RolloutCarry(env, carry_E, out.done_E), (record, loop.step_stats(out, level_E))

    end, (rec, stats_T) = loop.scan(body, start, keys_T)
    amp: dict[str, Any] = {}
    if features is not None:
        # phi of the state each step reached: the next step's start; for a step that ended an episode
        # this is the next episode's first state, which the AMP update masks out (done_TE)
        feat_TEF = loop.to_jax(rec.amp_feat_EF)
        last_EF = loop.to_jax(loop.copy(features(end.env)))
        amp = {"amp_feat_TEF": feat_TEF, "amp_next_TEF": jnp.concatenate([feat_TEF[1:], last_EF[None]], axis=0)}
    traj = ppo.Trajectory(
        obs_actor_TEO=loop.to_jax(rec.obs_actor_EO),
        obs_critic_TEC=loop.to_jax(rec.obs_critic_EC),
        final_obs_critic_TEC=loop.to_jax(rec.final_obs_critic_EC),
        action_TEA=loop.to_jax(rec.action_EA),
        log_prob_TE=loop.to_jax(rec.log_prob_E),
        reward_TE=loop.to_jax(rec.reward_E),
        done_TE=loop.to_jax(rec.done_E),
        failure_TE=loop.to_jax(rec.failure_E),
        carry_E=start.carry_E,  # before step 0's reset; reset_TE[0] replays that reset
        reset_TE=loop.to_jax(rec.reset_E),
        **amp,
    )
    return end, traj, loop.rollout_stats(stats_T)


# --------------------------------------------------------------------------- evaluation episodes


class _EpisodeLoop(NamedTuple):
    env: Any
    carry_E: Any
    finished_E: Any
    return_E: Any
    length_E: Any
    termination_EK: Any
    truncated_E: Any
    failure_E: Any
    metric_sum_EJ: Any  # summed over the first episode's steps
    t: Any


def _act_batch(policy: ppo.Policy, obs_EO: Any, carry_E: Any) -> tuple[Any, Any]:
    return jax.vmap(lambda p, o, c: p(o, c), in_axes=(None, 0, 0))(policy, obs_EO, carry_E)


def run_episodes(
    engine: Engine,
    spec: TaskSpec,
    kernels: ModuleType,
    model_path: str | Path,
    policy: ppo.Policy,
    *,
    episodes: int,
    seed: int = 0,
    threads: int | None = None,
    pins: MemPins | None = None,
) -> EpisodeResults:
    """Run `policy` (deterministic) for one episode in each of `episodes` envs of `engine`.

    Every env's first episode is recorded (its return, length, terminations and the
    sum of every `metric` over its steps, the last one included); envs that finish
    early keep stepping (auto-reset) until all are done or `episode_steps` control
    steps have passed. `pins` hold kernel memory fixed in every env (a fixed command,
    events off: `ksimdsl.runtime.engine.pins`); a shorter `spec.episode_steps`
    shortens the episodes.
    """
    loop, xp = engine.loop, engine.loop.xp
    env = engine.make_env(spec, kernels, model_path, num_envs=episodes, threads=threads, pins=pins)
    act = loop.jit_step(_act_batch)
    num_terms = len(spec.terminations)

    def cond(s: _EpisodeLoop) -> Any:
        return ~xp.all(s.finished_E) & (s.t < spec.episode_steps)

    def body(policy: ppo.Policy, s: _EpisodeLoop) -> _EpisodeLoop:
        action_EA, carry_E = act(policy, s.env.obs_actor_EO, s.carry_E)
        env_state, out = env.step(s.env, action_EA)
        first_E = out.done_E & ~s.finished_E
        running_E = ~s.finished_E
        return _EpisodeLoop(
            env=env_state,
            carry_E=carry_E,
            finished_E=s.finished_E | out.done_E,
            return_E=xp.where(first_E, out.episode_return_E, s.return_E),
            length_E=xp.where(first_E, out.episode_length_E, s.length_E),
            termination_EK=xp.where(first_E[:, None], out.terminations_EK, s.termination_EK),
            truncated_E=xp.where(first_E, out.truncated_E, s.truncated_E),
            failure_E=xp.where(first_E, out.failure_E, s.failure_E),
            metric_sum_EJ=s.metric_sum_EJ + xp.where(running_E[:, None], out.metrics_EJ, 0.0),
            t=s.t + 1,
        )

    def run(key: Any, policy: ppo.Policy) -> _EpisodeLoop:
        carry = policy.initial_carry()
        start = _EpisodeLoop(
            env=env.reset(key),
            carry_E=jnp.broadcast_to(carry, (episodes,) + carry.shape),
            finished_E=xp.zeros((episodes,), bool),
            return_E=xp.zeros((episodes,), xp.float32),
            length_E=xp.zeros((episodes,), xp.int32),
            termination_EK=xp.zeros((episodes, num_terms), bool),
            truncated_E=xp.zeros((episodes,), bool),
            failure_E=xp.zeros((episodes,), bool),
            metric_sum_EJ=xp.zeros((episodes, len(spec.metrics)), xp.float32),
            t=xp.zeros((), xp.int32),
        )
        return loop.while_loop(cond, lambda s: body(policy, s), start)

    try:
        final = loop.jit(run)(loop.key(seed), policy)
        return EpisodeResults(
            return_E=np.asarray(final.return_E),
            length_E=np.asarray(final.length_E),
            termination_EK=np.asarray(final.termination_EK),
            truncated_E=np.asarray(final.truncated_E),
            failure_E=np.asarray(final.failure_E),
            metric_sum_EJ=np.asarray(final.metric_sum_EJ),
        )
    finally:
        env.close()


# --------------------------------------------------------------------------- render recordings


class OneEnvPolicyStep:
    """ONE env's control step with a policy (render's `Recording`, the live viewer).

    step(policy, state, carry, key=None) -> (state, StepOutput, carry): the policy acts on env 0's
    observation (its mode; a sample when `key` is given), the env steps (and auto-resets a done
    episode), and the actor's carry is reset where the episode ended. `policy` is anything with
    `ppo.Policy`'s interface (`__call__`, `initial_carry`, `reset_carry`).
    """

    def __init__(self, loop: JaxLoop | HostLoop, env: Any):
        self.env = env
        self._act = loop.jit_step(_act_one)
        self._reset_carry = loop.jit_step(_reset_one)

    def __call__(self, policy: Any, state: Any, carry: Any, key: Any = None) -> tuple[Any, StepOutput, Any]:
        action_A, carry = self._act(policy, state.obs_actor_EO[0], carry, key)
        state, out = self.env.step(state, action_A[None])
        return state, out, self._reset_carry(policy, carry, out.done_E[0])


def _act_one(policy: Any, obs_O: Any, carry: Any, key: Any) -> tuple[Any, Any]:
    return policy(obs_O, carry, key=key)


def _reset_one(policy: Any, carry: Any, done: Any) -> Any:
    return policy.reset_carry(carry, done)


class Recorded(NamedTuple):
    """One env's states, T = control steps + 1 (the reset state first): joint positions and
    velocities, control steps into the episode and its return so far after every step (after the
    auto-reset where an episode ended), whether an episode ended there and that episode's return,
    and the kernel memory (`SPEC["mem_layout"]`: the reference's start phase `ref.start`, ...)."""

    qpos_TQ: np.ndarray
    qvel_TV: np.ndarray
    step_T: np.ndarray
    return_T: np.ndarray
    done_T: np.ndarray
    final_return_T: np.ndarray
    mem_TM: np.ndarray


class Recording:
    """Steps ONE env of `engine` with a policy's mode for `steps` control steps, auto-resetting like
    training does; reusable (on MJX the recording compiles once).

    `record(policy, seed)` -> `Recorded`. `pins` hold kernel memory fixed (a command, events off:
    `ksimdsl.runtime.engine.pins`).
    """

    def __init__(
        self,
        engine: Engine,
        spec: TaskSpec,
        kernels: ModuleType,
        model_path: str | Path,
        *,
        steps: int,
        pins: MemPins | None = None,
    ):
        self.loop = engine.loop
        self.env = engine.make_env(spec, kernels, model_path, num_envs=1, threads=1, pins=pins)
        self.steps = int(steps)
        self._run = self.loop.jit(self._program)
        self._step = OneEnvPolicyStep(self.loop, self.env)

    def _program(self, policy: ppo.Policy, key: Any) -> tuple[Any, ...]:
        env, loop, xp = self.env, self.loop, self.loop.xp
        state = env.reset(key)

        def observe(state: Any) -> tuple[Any, Any, Any, Any]:
            return env.qpos_EQ(state)[0], env.qvel_EV(state)[0], state.step_E[0], state.episode_return_E[0]

        def memory(state: Any) -> Any:
            return xp.array(state.mem_EM[0])  # a copy: the C engine's memory changes in place

        def step(carry: tuple[Any, Any], _: Any):
            state, actor_carry = carry
            state, out, actor_carry = self._step(policy, state, actor_carry)
            return (state, actor_carry), (*observe(state), out.done_E[0], out.episode_return_E[0], memory(state))

        first = (*observe(state), xp.zeros((), bool), xp.zeros((), xp.float32), memory(state))
        _, records = loop.scan(step, (state, policy.initial_carry()), None, length=self.steps)
        return tuple(xp.concatenate([xp.asarray(a)[None].astype(b_T.dtype), b_T]) for a, b_T in zip(first, records))

    def record(self, policy: ppo.Policy, *, seed: int = 0) -> Recorded:
        return Recorded(*(np.asarray(x) for x in self._run(policy, self.loop.key(seed))))

    def close(self) -> None:
        self.env.close()


# --------------------------------------------------------------------------- throughput


@dataclass(frozen=True)
class EnvStepTiming:
    """`env_steps_per_s`: steady env-steps/s and the first call's seconds (compilation included)."""

    steps_per_s: float
    first_step_s: float


def env_steps_per_s(
    engine: Engine, spec: TaskSpec, kernels: ModuleType, model_path: str | Path, *, envs: int, steps: int, seed: int
) -> EnvStepTiming:
    """Env-steps/s of `engine`'s whole control step (physics substeps, kernels, resets), zero actions,
    and the seconds of its first call (MJX: tracing and XLA compilation of the jitted step)."""
    loop, xp = engine.loop, engine.loop.xp
    env = engine.make_env(spec, kernels, model_path, num_envs=envs)
    try:
        state = loop.jit(env.reset)(loop.key(seed))
        action_EA = xp.zeros((envs, spec.action_size), xp.float32)
        step = loop.jit(env.step)
        loop.block(state)
        t0 = time.perf_counter()
        state = loop.block(step(state, action_EA)[0])
        first_step_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(steps):
            state, _ = step(state, action_EA)
        loop.block(state)
        return EnvStepTiming(envs * steps / (time.perf_counter() - t0), first_step_s)
    finally:
        env.close()
