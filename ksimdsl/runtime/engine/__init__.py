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

__all__ = ["get", "names", "resolve", "backend_of", "AUTO"]

#: The engine setting that lets the machine choose (see `resolve`).
AUTO = "auto"
#: Preference of `resolve("auto")` on a CPU-only machine, then on an accelerator.
_CPU_FIRST = ("mujoco", "mjx")
_ACCELERATOR_FIRST = ("mjx", "mujoco")


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


def resolve(name: str) -> str:
    """`auto` -> the first available engine (`mjx` on an accelerator, else the CPU MuJoCo engine);
    any other name is checked and returned."""
    _check(name, allow_auto=True)
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
