"""The MJX engine: MJX physics and the task's JAX kernels, all inside jit (GPU/TPU or CPU).

    env.py      MjxEnv: reset / step of E envs as pure functions of an EnvSnapshot
    collect.py  MjxCollector: training rollouts as one lax.scan
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from ksimdsl.abi import TaskSpec

#: The kernel backend this engine runs.
BACKEND = "jax"


class MjxEngine:
    """`ksimdsl.runtime.engine.base.Engine` on MJX."""

    name = "mjx"
    backend = BACKEND
    jittable = True

    @property
    def loop(self) -> Any:
        from ksimdsl.runtime.engine.loop import JAX_LOOP

        return JAX_LOOP

    def check_available(self) -> None:
        from ksimdsl.runtime.engine.mjx import env  # noqa: F401

    def make_env(
        self, spec: TaskSpec, kernels: ModuleType, model_path: str | Path, *, num_envs: int, threads: int | None = None
    ) -> Any:
        from ksimdsl.runtime.engine.mjx.env import MjxEnv

        return MjxEnv(spec, kernels, model_path, num_envs=num_envs)

    def make_collector(
        self, spec: TaskSpec, kernels: ModuleType, model_path: str | Path, *, num_envs: int | None = None
    ) -> Any:
        from ksimdsl.runtime.engine.mjx.collect import MjxCollector

        return MjxCollector(spec, kernels, model_path, num_envs=num_envs)

    def physics_benchmark(
        self, spec: TaskSpec, kernels: ModuleType, model_path: str | Path, *, envs: int, seed: int
    ) -> Callable[[], Any]:
        """One physics step of the batch, blocking: `jit(vmap(mjx.step))` from reset states."""
        import jax
        from mujoco import mjx

        from ksimdsl.runtime.engine.mjx.env import MjxEnv

        env = MjxEnv(spec, kernels, model_path, num_envs=envs)
        data = jax.jit(env.reset)(jax.random.PRNGKey(seed)).data
        step = jax.jit(jax.vmap(lambda d: mjx.step(env.model, d)))
        return lambda: jax.block_until_ready(step(data))


ENGINE = MjxEngine()
