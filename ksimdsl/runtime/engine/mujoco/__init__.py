"""The C-MuJoCo engine: C MuJoCo physics and the task's numba kernels, on the CPU's native threads.

    env.py           MujocoEnv: E envs in numpy buffers, stepped in chunks by worker threads
    hostenv.py       HostEnv: the functional `Env` the shared episode loops drive
    collect.py       MujocoCollector: training rollouts (the shared loop on the host)
    cstep.py         numba functions that step many MjData without the GIL
    numba_policy.py  the MLP actor's forward pass in numba (HostActor)
    kernel_args.py   the numba kernels' positional arguments, from a declared table
    bench.py         its part of `ksimdsl bench`
"""

from ksimdsl.runtime.engine.base import EngineDef

BACKEND = "numba"  # the kernel backend this engine runs
ENGINE = EngineDef("mujoco", BACKEND, jittable=False, env="hostenv:HostEnv", collector="collect:MujocoCollector")
