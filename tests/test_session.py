"""The glue between compiler and runtime: overrides that change compiled constants recompile the task."""

from __future__ import annotations

from pathlib import Path

import pytest

from ksimdsl.errors import KsimError
from ksimdsl.session import load_task

WALK = str(Path(__file__).resolve().parents[1] / "tasks" / "walk.ksim")


def test_ctrl_dt_override_recompiles_everything_derived_from_it() -> None:
    base = load_task(WALK, overrides=["engine=mjx"])
    fast = load_task(WALK, overrides=["engine=mjx", "ctrl_dt=0.01"])
    assert (base.spec.physics.ctrl_dt, base.spec.substeps, base.spec.episode_steps) == (0.02, 4, 1000)
    # `episode 20s` and every timer follow the new control step; the kernels fold the new ctrl_dt
    assert (fast.spec.physics.ctrl_dt, fast.spec.substeps, fast.spec.episode_steps) == (0.01, 2, 2000)
    assert "'ctrl_dt': 0.01," in fast.source and "'ctrl_dt': 0.02," in base.source
    assert "'episode_steps': 2000," in fast.source


def test_physics_override_that_does_not_divide_is_a_user_error() -> None:
    with pytest.raises(KsimError, match=r"ctrl_dt \(7ms\) must be a whole multiple of dt \(5ms\)"):
        load_task(WALK, overrides=["engine=mjx", "ctrl_dt=0.007"])
