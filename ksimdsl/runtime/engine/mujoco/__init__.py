"""The C-MuJoCo engine: C MuJoCo physics and the task's numba kernels, on the CPU's native threads.

    env.py           MujocoEnv: E envs in numpy buffers, stepped in chunks by worker threads;
                     HostEnv: the functional `Env` the shared loops drive
    collect.py       MujocoCollector: training rollouts (the shared loop on the host)
    cstep.py         numba functions that step many MjData without the GIL
    numba_policy.py  the MLP actor's forward pass in numba (HostActor)
    kernel_args.py   the numba kernels' positional arguments, from a declared table
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from ksimdsl.abi import TaskSpec

#: The kernel backend this engine runs.
BACKEND = "numba"


class MujocoEngine:
    """`ksimdsl.runtime.engine.base.Engine` on C MuJoCo."""

    name = "mujoco"
    backend = BACKEND
    jittable = False

    @property
    def loop(self) -> Any:
        from ksimdsl.runtime.engine.loop import HOST_LOOP

        return HOST_LOOP

    def check_available(self) -> None:
        from ksimdsl.runtime.engine.mujoco import env  # noqa: F401  (numba, libmujoco)

    def make_env(
        self, spec: TaskSpec, kernels: ModuleType, model_path: str | Path, *, num_envs: int, threads: int | None = None
    ) -> Any:
        from ksimdsl.runtime.engine.mujoco.env import HostEnv, MujocoEnv

        return HostEnv(MujocoEnv(spec, kernels, model_path, num_envs=num_envs, threads=threads))

    def make_collector(
        self, spec: TaskSpec, kernels: ModuleType, model_path: str | Path, *, num_envs: int | None = None
    ) -> Any:
        from ksimdsl.runtime.engine.mujoco.collect import MujocoCollector

        return MujocoCollector(spec, kernels, model_path, num_envs=num_envs)

    def physics_benchmark(
        self, spec: TaskSpec, kernels: ModuleType, model_path: str | Path, *, envs: int, seed: int
    ) -> Callable[[], Any]:
        """One physics step of the batch: E sequential mj_step calls (one thread), near the default pose."""
        import mujoco
        import numpy as np

        from ksimdsl.runtime.engine.model import default_pose, load_model

        model = load_model(spec, model_path)
        qpos0, _ = default_pose(model)
        rng = np.random.default_rng(seed)
        datas = []
        for _ in range(envs):
            d = mujoco.MjData(model)
            d.qpos[:] = qpos0
            d.qvel[:] = 0.05 * rng.standard_normal(model.nv)
            mujoco.mj_forward(model, d)
            datas.append(d)

        def run() -> None:
            for d in datas:
                mujoco.mj_step(model, d)

        return run


ENGINE = MujocoEngine()
