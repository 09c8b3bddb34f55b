"""Command-line overrides (`ksimdsl train TASK key=value ...`) parse and validate through the settings schema.

The same rules as the task file's own settings (tests/diagnostics/check_settings.test),
reported at the offending item of the command line.
"""

from __future__ import annotations

import pytest

from fixtures.cartpole_kernel import SPEC as CARTPOLE_SPEC
from ksimdsl.abi import TaskSpec
from ksimdsl.errors import KsimError
from ksimdsl.runtime.training.overrides import apply_overrides, check_items, valid_keys

SPEC = TaskSpec.from_dict(CARTPOLE_SPEC)  # num_envs=64, minibatches=4, dt=ctrl_dt=10ms


def error_text(*items: str) -> str:
    with pytest.raises(KsimError) as err:
        apply_overrides(SPEC, list(items))
    return str(err.value)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("lr=inf", "bad value for 'lr': must be finite, got inf"),
        ("media_every_s=nan", "bad value for 'media_every_s': must be finite, got nan"),
        ("gamma=-5", "bad value for 'gamma': must be at least 0, got -5"),
        ("lr=-1e-3", "bad value for 'lr': must be positive, got -0.001"),
        ("num_envs=0", "bad value for 'num_envs': must be at least 1, got 0"),
        ("seed=1e30", "bad value for 'seed': must be at most 4294967295, got 1e+30"),
        ("num_envs=1e12", "bad value for 'num_envs': must be at most 16777216, got 1000000000000"),
        ("dt=1e-9ms", "bad value for 'dt': must be at least 0.001ms, got 1e-09ms"),
        ("ctrl_dt=1000s", "bad value for 'ctrl_dt': must be at most 10s, got 1000s"),
        ("init_std=0", "bad value for 'init_std': must be positive, got 0"),
        ("hidden=[]", "bad value for 'hidden': needs at least one layer size"),
        ("dist=mixture", "bad value for 'dist': expected normal or mixture(K)"),
        ("activation=swsh", "bad value for 'activation': expected one of elu, relu, tanh, silu, gelu, swish (did you mean 'swish'?)"),
    ],
)
def test_a_bad_value_points_at_its_item(item, message):
    text = error_text("steps=3", item)
    first = text.splitlines()[0]
    key_length = len(item.partition("=")[0])
    assert first == f"command line:1:{len('steps=3 ') + key_length + 2}: error: {message}"


def test_cross_field_rules_point_at_the_item_that_broke_them():
    first = error_text("lr=1e-3", "num_envs=7").splitlines()[0]
    assert first == (
        "command line:1:9: error: num_envs=7 must be a multiple of minibatches=4 (minibatches split the environments)"
    )
    first = error_text("ctrl_dt=7ms", "dt=5ms").splitlines()[0]
    assert first == "command line:1:1: error: ctrl_dt (7ms) must be a whole multiple of dt (5ms)"
    text = error_text("min_std=0.6")  # the task's init_std is 0.5
    assert text.splitlines()[0] == "command line:1:1: error: policy init_std=0.5 is outside [min_std, max_std] = [0.6, 1]"
    assert "num_envs * rollout" in error_text("num_envs=16777216", "rollout=100000", "minibatches=1")


def test_values_take_the_schema_types_and_aliases():
    out = apply_overrides(SPEC, ["activation=swish", "dt=2ms", "dist=mixture(3)", "hidden=64", "lambda=0.9"])
    assert out.policy.activation == "silu" and out.physics.dt == 0.002 and out.physics.substeps == 5
    assert (out.policy.dist, out.policy.mixtures, out.policy.hidden) == ("mixture", 3, (64,))
    assert out.train.lam == 0.9 and out.to_dict()["train"]["lambda"] == 0.9
    assert apply_overrides(out, ["dist=normal"]).policy.mixtures == 1
    assert "substeps" not in valid_keys()  # derived from dt and ctrl_dt, not a setting


def test_check_items_validates_before_any_spec_exists():
    check_items(["engine=mujoco", "lr=1e-3"])
    with pytest.raises(KsimError, match="bad value for 'engine': expected one of auto, mjx, mujoco"):
        check_items(["engine=jax"])
