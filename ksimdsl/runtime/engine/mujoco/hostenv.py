"""The C-MuJoCo engine's `base.Env`: the functional reset / step the shared episode loops drive."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ksimdsl.abi import TaskSpec
from ksimdsl.runtime.engine.base import EnvSnapshot, StepOutput
from ksimdsl.runtime.engine.mujoco.env import MujocoEnv
from ksimdsl.runtime.engine.pins import MemPins

__all__ = ["HostEnv"]


class HostEnv:
    """The `base.Env` protocol over a `MujocoEnv`, for the shared episode loops: the state IS the env.

    `reset(seed)` reseeds the env's random stream (an int, or a JAX key's bits) and resets every env;
    `step(env, action_EA)` steps it in place and returns it with the step's output.
    """

    def __init__(
        self,
        spec: TaskSpec,
        kernels: ModuleType,
        model_path: str | Path,
        *,
        num_envs: int,
        threads: int | None = None,
        pins: MemPins | None = None,
    ):
        self.env = MujocoEnv(spec, kernels, model_path, num_envs=num_envs, threads=threads, pins=pins)
        self.spec = spec
        self.num_envs = self.env.num_envs

    def reset(self, seed: Any) -> MujocoEnv:
        self.env.reseed(seed)
        self.env.reset_all()
        return self.env

    def step(self, state: MujocoEnv, action_EA: Any) -> tuple[MujocoEnv, StepOutput]:
        return state, state.step(action_EA)

    def qpos_EQ(self, state: MujocoEnv) -> np.ndarray:
        return np.stack([d.qpos for d in state.datas])

    def qvel_EV(self, state: MujocoEnv) -> np.ndarray:
        return np.stack([d.qvel for d in state.datas])

    def snapshot(self, state: MujocoEnv) -> EnvSnapshot:
        return state.snapshot()

    def restore(self, snapshot: EnvSnapshot) -> MujocoEnv:
        self.env.restore(snapshot)
        return self.env

    def close(self) -> None:
        self.env.close()
