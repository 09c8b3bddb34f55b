"""The MJX engine's part of `ksimdsl bench`."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import jax

from ksimdsl.abi import TaskSpec
from ksimdsl.runtime.engine.mjx.env import MjxEnv
from ksimdsl.runtime.engine.mjx.mjximport import import_mjx

mjx = import_mjx()

__all__ = ["physics_benchmark"]


def physics_benchmark(
    spec: TaskSpec, kernels: ModuleType, model_path: str | Path, *, envs: int, seed: int
) -> Callable[[], Any]:
    """One physics step of the batch, blocking: `jit(vmap(mjx.step))` from reset states (the task's `physics impl`)."""
    env = MjxEnv(spec, kernels, model_path, num_envs=envs)
    data = jax.jit(env.reset)(jax.random.PRNGKey(seed)).data

    def one(d: Any) -> Any:
        with env.physics.collisions():
            return mjx.step(env.model, d)

    step = jax.jit(jax.vmap(one))
    return lambda: jax.block_until_ready(step(data))
