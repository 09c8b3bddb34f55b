"""The engines, and the one registry that finds them.

Every subpackage of this package is an engine: `mjx/` (MJX + JAX kernels) and
`mujoco/` (C MuJoCo + numba kernels). A subpackage exposes `ENGINE`, an object
implementing `ksimdsl.runtime.engine.base.Engine`; adding an engine means adding
one folder here. The shared pieces live next to them:

    base.py        the Engine / Env / Collector / Loop interfaces, StepOutput, EnvSnapshot,
                   the step outcome, RolloutStats, EpisodeResults
    loop.py        the episode loops, written once: rollouts for training, evaluation
                   episodes, render recordings, env-steps/s
    actuators.py   actions -> ctrl, the per-episode actuator draws
    curriculum.py  curriculum levels
    model.py       loading the MJCF model with the task's physics settings

    engine.get("mujoco")        -> the Engine (KsimError for an unknown or unavailable engine)
    engine.resolve("auto")      -> "mjx" on an accelerator, else "mujoco" when available
    engine.resolve("auto", impl="warp") -> "mjx" (MuJoCo Warp is an MJX implementation)
    engine.resolve_impl("auto", devices=0) -> "warp" on one NVIDIA GPU with warp-lang, else "jax"
    engine.names()              -> ("mjx", "mujoco")

Importing this package is cheap: engines are imported when first asked for.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import TYPE_CHECKING

from ksimdsl.errors import KsimError

if TYPE_CHECKING:
    from ksimdsl.runtime.engine.base import Engine

__all__ = ["get", "names", "resolve", "resolve_impl", "backend_of", "has_cuda_gpu", "AUTO", "AUTO_PICKS_WARP"]

#: The engine setting that lets the machine choose (see `resolve`).
AUTO = "auto"
#: Preference of `resolve("auto")` on a CPU-only machine, then on an accelerator.
_CPU_FIRST = ("mujoco", "mjx")
_ACCELERATOR_FIRST = ("mjx", "mujoco")
#: `impl=auto` picks MuJoCo Warp on a single NVIDIA GPU (when warp-lang is installed). MuJoCo's
#: documentation reports Warp faster than MJX's JAX implementation on nearly every workload there;
#: benchmarks/gpu_warp.py measures it for ksimdsl's tasks (README.md, "MJX implementations").
AUTO_PICKS_WARP = True


@cache
def names() -> tuple[str, ...]:
    """Every engine's name (the subpackages of this package), sorted."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg))


def _check(name: str, *, allow_auto: bool = False) -> None:
    if name in names() or (allow_auto and name == AUTO):
        return
    expected = ((AUTO,) if allow_auto else ()) + names()
    listed = ", ".join(expected[:-1]) + f" or {expected[-1]}" if len(expected) > 1 else expected[0]
    raise KsimError(f"unknown engine '{name}' (expected {listed})")


def get(name: str) -> "Engine":
    """The engine called `name`. KsimError when there is none, or it cannot run in this build."""
    _check(name)
    try:
        module = importlib.import_module(f"{__name__}.{name}")
        module.ENGINE.check_available()
    except ImportError:
        others = [n for n in names() if n != name]
        raise KsimError(
            f"engine={name} is not available in this build of ksimdsl" + (f"; use engine={others[0]}" if others else "")
        ) from None
    return module.ENGINE


def backend_of(name: str) -> str:
    """The kernel backend ("jax" | "numba") engine `name` runs (without importing it)."""
    _check(name)
    return importlib.import_module(f"{__name__}.{name}").BACKEND


def has_accelerator() -> bool:
    """True when JAX sees a GPU or TPU."""
    import jax

    try:
        return any(d.platform in ("gpu", "cuda", "rocm", "tpu") for d in jax.devices())
    except RuntimeError:
        return False


def has_cuda_gpu() -> bool:
    """True when JAX sees an NVIDIA (CUDA) GPU."""
    import jax

    try:
        return len(jax.devices("cuda")) > 0
    except RuntimeError:
        return False


def resolve(name: str, *, impl: str = AUTO) -> str:
    """`auto` -> the first available engine (`mjx` on an accelerator, else the CPU MuJoCo engine;
    `mjx` whenever `impl` (the task's `physics impl`) is warp); any other name is checked and returned.
    engine=mujoco with impl=warp is a KsimError (Warp is an MJX implementation)."""
    _check(name, allow_auto=True)
    if impl == "warp" and name != "mjx":
        if name == "mujoco":
            raise KsimError(
                "physics impl=warp is an implementation of the MJX engine, but engine=mujoco runs C MuJoCo; "
                "use engine=mjx (or auto) with impl=warp, or impl=jax"
            )
        get("mjx")
        return "mjx"
    if name != AUTO:
        return name
    order = _ACCELERATOR_FIRST if has_accelerator() else _CPU_FIRST
    for candidate in order:
        try:
            get(candidate)
        except KsimError:
            continue
        return candidate
    raise KsimError("no engine is available in this build of ksimdsl")  # pragma: no cover


def resolve_impl(impl: str, *, devices: int = 1) -> str:
    """The MJX implementation a run uses: "jax" | "warp" (the task's `physics impl`, resolved).

    `auto` -> warp on an NVIDIA GPU when warp-lang is installed and the run uses one device
    (`devices`: the train setting, 0 = all local devices), else jax; on the CPU auto never picks
    warp. An explicit `warp` must be installed and run on a CUDA GPU or the CPU (KsimError).
    """
    if impl not in (AUTO, "jax", "warp"):
        raise KsimError(f"unknown physics impl '{impl}' (expected auto, jax or warp)")
    if impl == "jax":
        return "jax"
    from ksimdsl.runtime.engine.mjx.mjximport import warp_installed

    if impl == AUTO:
        import jax

        one_device = (devices == 1 or jax.local_device_count() == 1) and jax.process_count() == 1
        return "warp" if AUTO_PICKS_WARP and one_device and has_cuda_gpu() and warp_installed() else "jax"
    if not warp_installed():
        raise KsimError(
            "physics impl=warp needs MuJoCo Warp (warp-lang), which is not installed: "
            "pip install 'ksimdsl[warp]' (or 'mujoco-mjx[warp]'), or use impl=jax"
        )
    import jax

    platform = jax.local_devices()[0].platform
    if platform != "cpu" and not has_cuda_gpu():
        raise KsimError(f"physics impl=warp runs on NVIDIA GPUs or the CPU, not on this machine's {platform}; use impl=jax")
    return "warp"
