"""The C-MuJoCo engine's part of `ksimdsl bench`."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Callable

import mujoco
import numpy as np

from ksimdsl.abi import TaskSpec
from ksimdsl.runtime.engine.model import default_pose, load_model

__all__ = ["physics_benchmark"]


def physics_benchmark(
    spec: TaskSpec, kernels: ModuleType, model_path: str | Path, *, envs: int, seed: int
) -> Callable[[], None]:
    """One physics step of the batch: E sequential mj_step calls (one thread), near the default pose."""
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
