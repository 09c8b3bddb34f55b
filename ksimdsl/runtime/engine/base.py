"""The engine interface, and everything about a control step that both engines share.

An engine runs E environments of one task: the physics, the task's generated
kernels, resets and the episode bookkeeping. Two implement it today, each in
its own folder under `ksimdsl/runtime/engine/`:

* `mjx`: MJX + the JAX kernels, pure functions of an `EnvSnapshot` pytree,
  run inside `jax.jit` (`Loop` = `lax.scan` / `lax.while_loop`);
* `mujoco`: C MuJoCo + the numba kernels, stateful numpy buffers stepped by
  native threads (`Loop` = a Python loop).

What the rest of the runtime sees (`Engine`, `Env`, `Collector`):

    engine = ksimdsl.runtime.engine.get("mjx")           # the registry
    env = engine.make_env(spec, kernels, model_path, num_envs=E)
    state = env.reset(seed)                             # seed: int or a JAX key
    state, out = env.step(state, action_EA)             # out: StepOutput
    snap = env.snapshot(state); state = env.restore(snap)
    collector = engine.make_collector(spec, kernels, model_path, num_envs=E)

The episode loops (training rollouts, evaluation, render, bench) are written
once, in `ksimdsl.runtime.engine.loop`, on top of `Env` and `Loop`.

Defined here, once for both engines:

* `StepOutput`: what one control step produced, per env;
* `EnvSnapshot`: the complete state of E envs (the MJX state itself; what the
  C-MuJoCo engine saves and restores);
* `step_outcome`: from the step kernel's terms, weights and termination flags
  and the divergence flags to rewards, failure / success / truncation / done,
  the episode counters and the curriculum, with the array module as a
  parameter (`jax.numpy` inside jit, `numpy` on the host);
* `RolloutStats` / `summarize_step`: per-rollout sums the training loop logs;
* `EpisodeResults`: one finished episode per env (evaluation);
* `EngineDef`: how an engine's folder declares its `ENGINE` (where its Env,
  Collector and bench part live).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, NamedTuple, Protocol, runtime_checkable

import numpy as np

from ksimdsl.abi import MEM_TRAVELLED, TaskSpec
from ksimdsl.errors import KsimError
from ksimdsl.runtime.engine.curriculum import Curriculum
from ksimdsl.runtime.engine.pins import MemPins

__all__ = [
    "Engine",
    "EngineDef",
    "Env",
    "Collector",
    "Loop",
    "StepOutput",
    "EnvSnapshot",
    "EPISODE_STATE",
    "KernelStep",
    "EpisodeCounters",
    "OutcomeRules",
    "step_outcome",
    "finite",
    "RolloutStats",
    "summarize_step",
    "EpisodeResults",
]


# --------------------------------------------------------------------------- data


class StepOutput(NamedTuple):
    """What one control step produced, per env (before any auto-reset unless noted).

    MJX: JAX arrays; C MuJoCo: numpy arrays, freshly allocated by every step.
    """

    reward_E: Any  # float32, sum(weights * terms); 0 where the physics went non-finite
    reward_terms_ER: Any  # float32, unweighted terms
    reward_weights_ER: Any  # float32
    terminations_EK: Any  # bool, per `terminate` entry
    done_E: Any  # bool: failure | success | truncated
    failure_E: Any  # bool: a failure termination (no bootstrap), including NaN resets
    success_E: Any  # bool: a success termination (bootstrap)
    truncated_E: Any  # bool: the episode time limit (bootstrap)
    nan_E: Any  # bool: the physics state diverged (non-finite or C MuJoCo's bad-state warning); reset
    episode_return_E: Any  # float32, return of the episode that ended here (valid where done)
    episode_length_E: Any  # int32, its length in control steps (valid where done)
    final_obs_actor_EO: Any  # float32, observations of the state reached, before any reset
    final_obs_critic_EC: Any
    nonfinite_ER: Any  # bool: reward term r or its weight was NaN or infinite (e.g. log(0)); the env is reset
    nonfinite_obs_E: Any  # bool: an actor or critic observation was NaN or infinite; the env is reset
    metrics_EJ: Any  # float32, the `metric` values of this step (0 where not finite); (E, 0) without a metric block


class EnvSnapshot(NamedTuple):
    """The complete state of E environments; every leaf but `key` has a leading env axis.

    The MJX engine's state IS this pytree; the C-MuJoCo engine keeps it in its
    buffers and `snapshot`/`restore`s it (for checkpoints). Only `data` and
    `key` differ in kind between the engines.
    """

    data: Any  # physics: MJX the batched mjx.Data; C MuJoCo float64 (E, X) mj_getState(mjSTATE_INTEGRATION)
    fields_E: dict[str, Any]  # this episode's randomized model fields, {name: (E, ...)}
    mem_EM: Any  # kernel memory (state variables, prev() slots, commands, ...)
    obs_actor_EO: Any  # observation the policy acts on next
    obs_critic_EC: Any
    level_E: Any  # curriculum level in [0, 1]
    steps_at_level_E: Any  # int32, control steps since the level last changed
    step_E: Any  # int32, control steps taken in the current episode
    episode_return_E: Any  # reward summed over the current episode (C MuJoCo: float64)
    prev_ctrl_EU: Any  # actuator target of the previous control step
    latency_E: Any  # this episode's action latency (s)
    zero_offset_EU: Any  # this episode's joint calibration error (position targets)
    key: Any  # the random stream: MJX uint32[2] JAX key; C MuJoCo uint64[6] numpy PCG64 state


#: The per-env episode state of an `EnvSnapshot`: every field but the physics and the random stream.
EPISODE_STATE = EnvSnapshot._fields[2:-1]


class RolloutStats(NamedTuple):
    """Sums over one rollout of T steps in E envs (all float32 scalars unless noted).

    Episode quantities count episodes that FINISHED during the rollout.
    """

    env_steps: Any  # T * E control steps
    episodes: Any  # finished episodes
    episode_return_sum: Any
    episode_length_sum: Any
    reward_sum: Any  # summed over all T * E steps
    reward_term_sum_R: Any  # unweighted terms, summed over all steps
    reward_weighted_sum_R: Any  # weight * term, summed over all steps
    termination_count_K: Any  # finished episodes in which termination k fired
    truncations: Any  # episodes ended by the time limit
    failures: Any  # episodes ended by a failure (including NaN resets)
    successes: Any
    nan_resets: Any  # envs reset because the physics, a reward term or an observation went non-finite
    level_sum: Any  # curriculum level summed over all steps
    nonfinite_term_count_R: Any  # steps at which reward term r (or its weight) was not finite
    nonfinite_obs_count: Any  # steps at which an observation was not finite
    metric_sum_J: Any  # `metric` values summed over all steps


class EpisodeResults(NamedTuple):
    """One finished episode per env: return_E, length_E (int), termination_EK (bool), truncated_E (bool),
    failure_E (bool: a failure termination, NaN resets included), metric_sum_EJ (each `metric` summed over
    the episode's steps; divided by length_E it is the episode's mean)."""

    return_E: np.ndarray
    length_E: np.ndarray
    termination_EK: np.ndarray
    truncated_E: np.ndarray
    failure_E: np.ndarray
    metric_sum_EJ: np.ndarray


# --------------------------------------------------------------------------- the step outcome


class KernelStep(NamedTuple):
    """What the `step` kernel reported for E envs (any float dtype; cast by `step_outcome`)."""

    reward_terms_ER: Any
    reward_weights_ER: Any  # (E, R) or broadcastable to it
    terminations_EK: Any
    obs_actor_EO: Any
    obs_critic_EC: Any
    metrics_EJ: Any  # (E, J); (E, 0) for a task without a `metric` block
    mem_EM: Any = None  # the next memory (`curriculum distance` reads its `curriculum.travelled` slot)


class EpisodeCounters(NamedTuple):
    """The per-env counters a control step advances (see `EnvSnapshot`)."""

    step_E: Any
    episode_return_E: Any
    level_E: Any
    steps_at_level_E: Any


@dataclass(frozen=True)
class OutcomeRules:
    """The task's static rules for ending episodes: which terminations are successes, the time limit,
    the curriculum (and, for `curriculum distance`, the mem slot of the distance travelled)."""

    success_K: np.ndarray  # bool, per `terminate` entry
    episode_steps: int
    curriculum: Curriculum
    travelled_slot: int | None = None  # offset of `curriculum.travelled` in mem

    @staticmethod
    def from_spec(spec: TaskSpec) -> "OutcomeRules":
        curriculum = Curriculum.from_spec(spec.curriculum)
        slot = None
        if curriculum.kind == "distance":
            slot = next((int(s["offset"]) for s in spec.mem_layout if s["name"] == MEM_TRAVELLED), None)
            if slot is None:
                raise KsimError(f"curriculum distance without the mem slot '{MEM_TRAVELLED}'; recompile the task")
        return OutcomeRules(
            success_K=np.asarray(spec.success, dtype=bool),
            episode_steps=int(spec.episode_steps),
            curriculum=curriculum,
            travelled_slot=slot,
        )

    def travelled_E(self, kernel: "KernelStep") -> Any:
        """How far each env's base travelled from its spawn point (None without `curriculum distance`)."""
        if self.travelled_slot is None:
            return None
        if kernel.mem_EM is None:
            raise KsimError("curriculum distance needs the step kernel's memory (an engine did not pass it)")
        return kernel.mem_EM[:, self.travelled_slot]


def finite(x: Any, xp: ModuleType) -> Any:
    """Non-finite entries (from a diverged physics state) replaced by 0 so they cannot poison the policy."""
    return xp.where(xp.isfinite(x), x, 0.0)


def step_outcome(
    xp: ModuleType, rules: OutcomeRules, kernel: KernelStep, nan_E: Any, counters: EpisodeCounters
) -> tuple[StepOutput, EpisodeCounters]:
    """The outcome of one control step of E envs, identical on both engines (docs/architecture.md).

    A diverged env (`nan_E`) gets zero reward and no termination flags and fails. A reward term,
    weight or observation the kernel computed as NaN or inf (`log(x)` at x = 0) is treated the
    same way: that env's reward is zeroed, it fails and is reset, and the term is counted
    (`nonfinite_ER`), so no non-finite number ever reaches the PPO update.
    Failure beats success; truncation is the time limit when neither fired. Metrics never
    change any of it: a non-finite metric value (or any metric of a diverged env) reads as 0. The
    returned counters are those after the step, before any reset (`episode_return_E`
    keeps the dtype of `counters.episode_return_E`; the output's is float32).
    """
    f32 = xp.float32
    raw_terms_ER = kernel.reward_terms_ER.astype(f32)
    raw_weights_ER = xp.broadcast_to(kernel.reward_weights_ER, raw_terms_ER.shape).astype(f32)
    nonfinite_ER = ~xp.isfinite(raw_terms_ER) | ~xp.isfinite(raw_weights_ER)
    nonfinite_obs_E = ~xp.all(xp.isfinite(kernel.obs_actor_EO), axis=1) | ~xp.all(
        xp.isfinite(kernel.obs_critic_EC), axis=1
    )
    nan_E = nan_E | xp.any(nonfinite_ER, axis=1) | nonfinite_obs_E
    terms_ER = xp.where(nan_E[:, None], 0.0, raw_terms_ER)
    weights_ER = xp.where(nonfinite_ER, 0.0, raw_weights_ER)
    reward_E = xp.sum(terms_ER * weights_ER, axis=1)
    terminations_EK = kernel.terminations_EK.astype(bool) & ~nan_E[:, None]
    success_K = xp.asarray(rules.success_K)
    failure_E = xp.any(terminations_EK & ~success_K, axis=1) | nan_E
    success_E = xp.any(terminations_EK & success_K, axis=1) & ~failure_E
    step_E = counters.step_E + 1
    truncated_E = (step_E >= rules.episode_steps) & ~failure_E & ~success_E
    done_E = failure_E | success_E | truncated_E
    episode_return_E = counters.episode_return_E + reward_E
    level_E, steps_at_level_E = rules.curriculum.on_step(
        counters.level_E,
        counters.steps_at_level_E,
        done_E,
        step_E,
        rules.episode_steps,
        failure_E=failure_E,
        travelled_E=rules.travelled_E(kernel),
        xp=xp,
    )
    output = StepOutput(
        reward_E=reward_E,
        reward_terms_ER=terms_ER,
        reward_weights_ER=weights_ER,
        terminations_EK=terminations_EK,
        done_E=done_E,
        failure_E=failure_E,
        success_E=success_E,
        truncated_E=truncated_E,
        nan_E=nan_E,
        episode_return_E=episode_return_E.astype(f32),
        episode_length_E=step_E,
        final_obs_actor_EO=finite(kernel.obs_actor_EO.astype(f32), xp),
        final_obs_critic_EC=finite(kernel.obs_critic_EC.astype(f32), xp),
        nonfinite_ER=nonfinite_ER,
        nonfinite_obs_E=nonfinite_obs_E,
        metrics_EJ=finite(xp.where(nan_E[:, None], 0.0, kernel.metrics_EJ.astype(f32)), xp).astype(f32),
    )
    return output, EpisodeCounters(step_E, episode_return_E, level_E, steps_at_level_E)


def summarize_step(out: StepOutput, level_E: Any, xp: ModuleType) -> RolloutStats:
    """RolloutStats of ONE control step (sum these over T), or of T * E steps flattened to one axis."""
    f32 = xp.float32
    done_E = out.done_E
    return RolloutStats(
        env_steps=xp.asarray(out.reward_E.shape[0], f32),
        episodes=xp.sum(done_E.astype(f32)),
        episode_return_sum=xp.sum(xp.where(done_E, out.episode_return_E, 0.0)).astype(f32),
        episode_length_sum=xp.sum(xp.where(done_E, out.episode_length_E, 0)).astype(f32),
        reward_sum=xp.sum(out.reward_E).astype(f32),
        reward_term_sum_R=xp.sum(out.reward_terms_ER, axis=0).astype(f32),
        reward_weighted_sum_R=xp.sum(out.reward_terms_ER * out.reward_weights_ER, axis=0).astype(f32),
        termination_count_K=xp.sum(out.terminations_EK & done_E[:, None], axis=0).astype(f32),
        truncations=xp.sum(out.truncated_E).astype(f32),
        failures=xp.sum(out.failure_E).astype(f32),
        successes=xp.sum(out.success_E).astype(f32),
        nan_resets=xp.sum(out.nan_E).astype(f32),
        level_sum=xp.sum(level_E).astype(f32),
        nonfinite_term_count_R=xp.sum(out.nonfinite_ER, axis=0).astype(f32),
        nonfinite_obs_count=xp.sum(out.nonfinite_obs_E).astype(f32),
        metric_sum_J=xp.sum(out.metrics_EJ, axis=0).astype(f32),
    )


# --------------------------------------------------------------------------- the interface


class Loop(Protocol):
    """How an engine's episode loops run: traced into one XLA program (MJX) or step by step in Python.

    `jit` compiles a whole loop program (identity on the host); `jit_step` compiles
    a per-step JAX function called from a host loop (identity inside a traced loop).
    `copy` takes a value out of a state that the next step overwrites in place (host).
    """

    xp: ModuleType

    def jit(self, fn: Callable) -> Callable: ...

    def jit_step(self, fn: Callable) -> Callable: ...

    def scan(self, body: Callable, carry: Any, xs: Any = None, length: int | None = None) -> tuple[Any, Any]: ...

    def while_loop(self, cond: Callable, body: Callable, carry: Any) -> Any: ...

    def copy(self, x: Any) -> Any: ...

    def key(self, seed: int) -> Any: ...


class Env(Protocol):
    """E environments of one task, driven functionally (the C-MuJoCo state is the env itself).

    The state has the episode fields of `EnvSnapshot` as attributes (obs_actor_EO,
    step_E, episode_return_E, level_E, ...).
    """

    spec: TaskSpec
    num_envs: int

    def reset(self, seed: Any) -> Any: ...

    def step(self, state: Any, action_EA: Any) -> tuple[Any, StepOutput]: ...

    def qpos_EQ(self, state: Any) -> Any: ...

    def qvel_EV(self, state: Any) -> Any: ...

    def snapshot(self, state: Any) -> EnvSnapshot: ...

    def restore(self, snapshot: EnvSnapshot) -> Any: ...

    def close(self) -> None: ...


@runtime_checkable
class Collector(Protocol):
    """What the training loop needs from an engine: rollouts of the current policy.

        collector.init_for(ppo_state, key=key) -> CollectorState   (init(key=...) + the actor's carry)
        collector.collect(ppo_state, collector_state, key=key) -> (collector_state, Trajectory, RolloutStats)

    When `jittable`, `collect` is a pure JAX function and one training iteration
    (collect + update) is compiled into one jitted call; otherwise the loop calls
    `collect` from Python and jits only the update. `to_checkpoint(state)` gives a
    pytree of arrays, `from_checkpoint(template, tree)` rebuilds the state from one,
    so that a resumed run continues exactly.
    """

    spec: TaskSpec
    num_envs: int
    jittable: bool

    def init(self, *, key: Any) -> Any: ...

    def init_for(self, ppo_state: Any, *, key: Any) -> Any: ...

    def collect(self, ppo_state: Any, state: Any, *, key: Any) -> tuple[Any, Any, RolloutStats]: ...

    def to_checkpoint(self, state: Any) -> Any: ...

    def from_checkpoint(self, template: Any, tree: Any) -> Any: ...


class Engine(Protocol):
    """One engine (a subpackage of `ksimdsl.runtime.engine` exposing `ENGINE`).

    name: what `engine=` selects; backend: the kernel backend it runs ("jax" |
    "numba"); jittable: its collector runs inside jit; loop: its `Loop`.
    """

    name: str
    backend: str
    jittable: bool
    loop: Loop

    def make_env(
        self,
        spec: TaskSpec,
        kernels: ModuleType,
        model_path: str | Path,
        *,
        num_envs: int,
        threads: int | None = None,
        pins: MemPins | None = None,
    ) -> Env: ...

    def make_collector(
        self, spec: TaskSpec, kernels: ModuleType, model_path: str | Path, *, num_envs: int | None = None
    ) -> Collector: ...

    def check_available(self) -> None:
        """Raise ImportError when this build cannot run the engine."""

    def physics_benchmark(
        self, spec: TaskSpec, kernels: ModuleType, model_path: str | Path, *, envs: int, seed: int
    ) -> Callable[[], Any]:
        """A function doing one physics step of a batch of `envs` (blocking), for `ksimdsl bench`."""


@dataclass(frozen=True)
class EngineDef:
    """An `Engine` declared by where its parts live ("module:name" in the engine's package), imported
    on first use: `env` (the `Env` class), `collector` (the `Collector` class), `physics` (the
    `physics_benchmark` function). The Loop follows `jittable`."""

    name: str
    backend: str
    jittable: bool
    env: str
    collector: str
    physics: str = "bench:physics_benchmark"

    def _part(self, where: str) -> Any:
        module, attr = where.split(":")
        return getattr(importlib.import_module(f"ksimdsl.runtime.engine.{self.name}.{module}"), attr)

    @property
    def loop(self) -> Loop:
        from ksimdsl.runtime.engine.loop import HOST_LOOP, JAX_LOOP

        return JAX_LOOP if self.jittable else HOST_LOOP

    def check_available(self) -> None:
        self._part(self.env)

    def make_env(
        self,
        spec: TaskSpec,
        kernels: ModuleType,
        model_path: str | Path,
        *,
        num_envs: int,
        threads: int | None = None,
        pins: MemPins | None = None,
    ) -> Env:
        return self._part(self.env)(spec, kernels, model_path, num_envs=num_envs, threads=threads, pins=pins)

    def make_collector(
        self, spec: TaskSpec, kernels: ModuleType, model_path: str | Path, *, num_envs: int | None = None
    ) -> Collector:
        return self._part(self.collector)(spec, kernels, model_path, num_envs=num_envs)

    def physics_benchmark(
        self, spec: TaskSpec, kernels: ModuleType, model_path: str | Path, *, envs: int, seed: int
    ) -> Callable[[], Any]:
        return self._part(self.physics)(spec, kernels, model_path, envs=envs, seed=seed)
