"""`ksimdsl eval`: score the deterministic policy (the distribution's mode) of a run's latest checkpoint.

`evaluate` runs `episodes` environments side by side, each for exactly one
episode (it ends by a termination or the episode limit; the shared loop
`ksimdsl.runtime.engine.loop.run_episodes`, on the chosen engine), and reports
the returns and lengths of those episodes.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import jax

from ksimdsl.abi import TaskSpec
from ksimdsl.errors import KsimError
from ksimdsl.runtime import engine as engines
from ksimdsl.runtime.rl import ppo
from ksimdsl.runtime.training.checkpoint import load_checkpoint
from ksimdsl.runtime.engine.base import EpisodeResults
from ksimdsl.runtime.engine.loop import run_episodes

__all__ = ["evaluate", "run_episodes", "EpisodeResults"]


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
    results = run_episodes(engines.get(engine), spec, kernels, model_path, policy, episodes=episodes, seed=seed)
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
