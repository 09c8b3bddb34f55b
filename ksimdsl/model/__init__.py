"""The MJCF model a task runs on, below the compiler and the runtime (both import it).

* `sources`: where a model path as written in a task points (a file, `pkg:`, `menagerie:`);
* `compose`: what a task adds to a bare model (floor, motors, IMUs, a default pose,
  collision filtering), applied with `mujoco.MjSpec`.

Nothing here imports lark, sympy or jax.
"""
