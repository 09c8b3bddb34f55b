"""`ksimdsl eval`: score the deterministic policy (the distribution's mode) of a run's latest checkpoint.

`evaluate` runs `episodes` environments side by side, each for exactly one
episode (it ends by a termination or the episode limit), and reports the
returns and lengths of those episodes.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ksimdsl.abi import TaskSpec
from ksimdsl.errors import KsimError
from ksimdsl.runtime import ppo
from ksimdsl.runtime.checkpoint import load_checkpoint
from ksimdsl.runtime.mjx_env import MjxEnv

__all__ = ["evaluate", "run_episodes_mjx", "EpisodeResults"]


class EpisodeResults(NamedTuple):
    """One finished episode per env: return_E, length_E (int), termination_EK (bool), truncated_E (bool)."""

    return_E: np.ndarray
    length_E: np.ndarray
    termination_EK: np.ndarray
    truncated_E: np.ndarray


def run_episodes_mjx(
    spec: TaskSpec, kernels: ModuleType, model_path: str | Path, policy: ppo.Policy, *, episodes: int, seed: int = 0
) -> EpisodeResults:
    """Run `policy` (deterministic) for one episode in each of `episodes` MJX envs."""
    env = MjxEnv(spec, kernels, model_path, num_envs=episodes)
    num_terms = len(spec.terminations)

    class Loop(NamedTuple):
        env: Any
        carry_E: jax.Array
        finished_E: jax.Array
        return_E: jax.Array
        length_E: jax.Array
        termination_EK: jax.Array
        truncated_E: jax.Array
        t: jax.Array

    def cond(loop: Loop) -> jax.Array:
        return ~jnp.all(loop.finished_E) & (loop.t < spec.episode_steps)

    def body(policy: ppo.Policy, loop: Loop) -> Loop:
        action_EA, carry_E = jax.vmap(policy)(loop.env.obs_actor_EO, loop.carry_E)
        env_state, out = env.step(loop.env, action_EA)
        first = out.done_E & ~loop.finished_E
        return Loop(
            env=env_state,
            carry_E=carry_E,
            finished_E=loop.finished_E | out.done_E,
            return_E=jnp.where(first, out.episode_return_E, loop.return_E),
            length_E=jnp.where(first, out.episode_length_E, loop.length_E),
            termination_EK=jnp.where(first[:, None], out.terminations_EK, loop.termination_EK),
            truncated_E=jnp.where(first, out.truncated_E, loop.truncated_E),
            t=loop.t + 1,
        )

    @jax.jit
    def run(key: jax.Array, policy: ppo.Policy) -> Loop:
        carry = policy.initial_carry()
        start = Loop(
            env=env.reset(key),
            carry_E=jnp.broadcast_to(carry, (episodes,) + carry.shape),
            finished_E=jnp.zeros((episodes,), bool),
            return_E=jnp.zeros((episodes,), jnp.float32),
            length_E=jnp.zeros((episodes,), jnp.int32),
            termination_EK=jnp.zeros((episodes, num_terms), bool),
            truncated_E=jnp.zeros((episodes,), bool),
            t=jnp.zeros((), jnp.int32),
        )
        return jax.lax.while_loop(cond, lambda loop: body(policy, loop), start)

    final = jax.device_get(run(jax.random.PRNGKey(seed), policy))
    return EpisodeResults(
        return_E=np.asarray(final.return_E),
        length_E=np.asarray(final.length_E),
        termination_EK=np.asarray(final.termination_EK),
        truncated_E=np.asarray(final.truncated_E),
    )


def evaluate(
    spec: TaskSpec,
    kernels: ModuleType,
    *,
    model_path: str | Path,
    run_dir: str | Path,
    episodes: int = 10,
    engine: str = "mjx",
    seed: int = 0,
) -> dict[str, Any]:
    """Load the newest checkpoint of `run_dir` and score its deterministic policy.

    Returns {episodes, mean_return, std_return, min_return, max_return, mean_length,
    returns, lengths, terminations {name: count}, truncations, iteration, env_steps, engine}.
    """
    if episodes < 1:
        raise KsimError(f"--episodes must be at least 1, got {episodes}")
    template = ppo.init_ppo_from_spec(spec, key=jax.random.PRNGKey(0))
    ckpt = load_checkpoint(run_dir, {"ppo": template}, spec=spec)
    policy = ppo.make_policy(ckpt.trees["ppo"])
    if engine == "mjx":
        results = run_episodes_mjx(spec, kernels, model_path, policy, episodes=episodes, seed=seed)
    elif engine == "mujoco":
        try:
            from ksimdsl.runtime.mujoco_collect import run_episodes_mujoco
        except ImportError:
            raise KsimError("engine=mujoco is not available in this build of ksimdsl; use engine=mjx") from None
        results = run_episodes_mujoco(spec, kernels, model_path, policy, episodes=episodes, seed=seed)
    else:
        raise KsimError(f"unknown engine '{engine}' (expected mjx or mujoco)")
    returns = results.return_E.astype(float)
    lengths = results.length_E.astype(int)
    return {
        "episodes": int(episodes),
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "min_return": float(returns.min()),
        "max_return": float(returns.max()),
        "mean_length": float(lengths.mean()),
        "returns": [float(r) for r in returns],
        "lengths": [int(n) for n in lengths],
        "terminations": {name: int(results.termination_EK[:, k].sum()) for k, name in enumerate(spec.terminations)},
        "truncations": int(results.truncated_E.sum()),
        "iteration": ckpt.meta.iteration,
        "env_steps": ckpt.meta.env_steps,
        "engine": engine,
    }
