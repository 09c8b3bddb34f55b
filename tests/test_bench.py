"""`ksimdsl bench` machinery on a small batch: the in-rollout timing loop, the copy floor, the report."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from ksimdsl.abi import TaskSpec
from ksimdsl.codegen import compile_task
from ksimdsl.errors import KsimError
from ksimdsl.runtime.tools.bench import (
    FLOOR,
    BenchConfig,
    KernelVariant,
    bench_task,
    copy_floor,
    format_report,
    in_rollout,
    make_inputs,
)
from ksimdsl.runtime.loader import load_module

REPO = Path(__file__).resolve().parents[1]
TASK = REPO / "tasks" / "cartpole.ksim"
MODEL = REPO / "tasks" / "models" / "cartpole.xml"


@pytest.fixture(scope="module")
def cartpole():
    variants = [
        KernelVariant(name, backend, cse, compile_task(str(TASK), backend=backend, cse=cse).source)
        for backend in ("jax", "numba")
        for cse, name in ((True, f"{backend}/cse"), (False, f"{backend}/no-cse"))
    ]
    jax_mod = load_module(variants[0].source, "test_bench_cartpole_jax")
    numba_mod = load_module(variants[2].source, "test_bench_cartpole_numba")
    spec = TaskSpec.from_dict(numba_mod.SPEC)
    inputs = make_inputs(spec, numba_mod, MODEL, envs=6)
    return variants, spec, jax_mod, inputs


def test_one_loop_call_is_one_vmapped_step(cartpole):
    _, _, jax_mod, inputs = cartpole
    args = inputs.jax_args()
    want = jax.jit(jax.vmap(jax_mod.step))(*args)
    got = in_rollout(jax_mod.step, 1)(*args)
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]), err_msg=key)


def test_chained_calls_feed_memory_forward(cartpole):
    _, _, jax_mod, inputs = cartpole
    args = inputs.jax_args()
    one = in_rollout(jax_mod.step, 1)(*args)
    two = in_rollout(jax_mod.step, 2)(*args)
    # the second call sees the first call's memory (prev(action), ...) and rolled inputs: different outputs
    assert not np.array_equal(np.asarray(one["actor"]), np.asarray(two["actor"]))


def test_copy_floor_has_the_kernels_outputs_and_no_arithmetic(cartpole):
    _, _, jax_mod, inputs = cartpole
    args = inputs.jax_args()
    want = jax.vmap(jax_mod.step)(*args)
    floor = copy_floor(jax_mod.step, inputs)
    got = jax.vmap(floor)(*args)
    assert {k: (v.shape, v.dtype) for k, v in got.items()} == {k: (v.shape, v.dtype) for k, v in want.items()}
    # every output element is one of the inputs' values, unchanged
    env0 = jax.tree.leaves(jax.tree.map(lambda a: a[0], args))
    values = set(np.concatenate([np.ravel(np.asarray(x, np.float32)) for x in env0]))
    assert set(np.ravel(np.asarray(got["actor"][0]))) <= values


def test_report_measures_every_variant_against_the_floor(cartpole):
    variants, spec, _, _ = cartpole
    config = BenchConfig(envs=6, repeats=1, warmup=0, loop_calls=2, env_steps=1, engines=("mujoco",))
    report = bench_task(spec, model_path=MODEL, variants=variants, config=config)
    kernels = report["kernels"]
    assert set(kernels) == {"jax/cse", "jax/no-cse", "numba/cse", "numba/no-cse", FLOOR}
    assert all(k["time_s"] > 0 for k in kernels.values())
    assert all(k["call_s"] > 0 and k["compile_s"] > 0 for k in kernels.values() if k["backend"] == "jax")
    ratios = report["ratios"]
    assert {
        "jax/cse kernel / copy floor",
        "jax/cse / jax/no-cse compile time",
        "numba/cse kernel / mujoco physics step",
    } <= set(ratios)
    assert report["env_steps_per_s"]["mujoco"] > 0 and "mjx" not in report["env_steps_per_s"]
    assert report["env_first_step_s"]["mujoco"] > 0 and set(report["env_first_step_s"]) == {"mujoco"}
    text = format_report(report)
    assert "| copy floor |" in text and "`cartpole`: 6 envs" in text
    assert "first control step (compile)" in text


def test_bad_config_is_a_user_error():
    with pytest.raises(KsimError, match="loop_calls"):
        BenchConfig(loop_calls=0)
    with pytest.raises(KsimError, match="unknown engine"):
        BenchConfig(engines=("gpu",))
