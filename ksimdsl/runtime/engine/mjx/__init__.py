"""The MJX engine: MJX physics and the task's JAX kernels, all inside jit (GPU/TPU or CPU).

`env.MjxEnv` steps E envs as pure functions of an `EnvSnapshot`; `collect.MjxCollector` runs a
training rollout as one `lax.scan`; `bench.py` is the engine's part of `ksimdsl bench`.
"""

from ksimdsl.runtime.engine.base import EngineDef

BACKEND = "jax"  # the kernel backend this engine runs
ENGINE = EngineDef("mjx", BACKEND, jittable=True, env="env:MjxEnv", collector="collect:MjxCollector")
