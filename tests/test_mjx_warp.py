"""MJX's Warp implementation (`physics impl=warp`): parity with impl=jax on the CPU, and its rules.

The parity test steps tests/data/warp_contact.ksim (a ball with a foot,
tests/data/contact_ball.xml, drops onto the floor and is pushed around; it
observes `contact`, `contact_force` and `com_inertia`, ends episodes after 12
steps or when pushed away, and randomizes `geom_friction`) on both
implementations from the same initial state with the same actions, noise-free
(every kernel draw zero, as in test_engine_parity.py), for STEPS control steps
of ENVS envs. The solver runs SOLVER_ITERATIONS Newton and line-search
iterations: with the task's few iterations the two solvers stop at different
points of their searches, and a falling body amplifies that (measured on the
walker: observations apart by ~1 after the first impact with iterations=4
ls_iterations=8, within 5e-5 with 50).

Measured (CPU, mujoco-mjx 3.17.0, warp-lang 1.18.0): observations within
6e-5 (contact forces; everything else within 1e-6), rewards within 2e-8,
contact flags and dones identical (two resets per env). The tolerances below
leave room for other CPUs.

Cost: the MuJoCo model is small (sphere-plane contacts only) so that both
implementations compile quickly; Warp compiles its CPU kernels with its bundled
LLVM on first use, cold in CI (conftest.py points WARP_CACHE_PATH into the test
cache). The whole parity test used 84 s of CPU time (78.8 s user + 4.8 s system:
JAX compile, Warp's cold kernel build, stepping) on this project's 2-core
machine, so it is marked slow and kept to 2 envs and 20 steps.
"""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fixtures.probe import split_obs
from ksimdsl.abi import TaskSpec
from ksimdsl.codegen import compile_task
from ksimdsl.errors import KsimError, Source
from ksimdsl.frontend.check import check_source
from ksimdsl.runtime import engine as engines
from ksimdsl.runtime.engine.mjx import mjximport
from ksimdsl.settings.warp import WARP_PER_ENV_FIELDS, warp_field_problem

REPO = Path(__file__).resolve().parents[1]
TASK = REPO / "tests" / "data" / "warp_contact.ksim"
BALL = REPO / "tests" / "data" / "contact_ball.xml"  # the parity task's model
WALKER = REPO / "tasks" / "models" / "walker.xml"
ENVS = 2
STEPS = 20
SOLVER_ITERATIONS = 10
OBS_ATOL = 2e-3
REWARD_ATOL = 1e-3

needs_warp = pytest.mark.skipif(not mjximport.warp_installed(), reason="warp-lang is not installed (the warp extra)")


# --------------------------------------------------------------------------- importing mjx


def test_drop_noise_forwards_every_line_but_the_warp_missing_ones():
    out = io.StringIO()
    sink = mjximport._DropNoise(out)
    # print() writes its arguments, separators and end separately
    for piece in ("Failed to import warp:", " ", "No module named 'warp'", "\n", "kept ", "line\n", "Failed to import "):
        sink.write(piece)
    sink.write("warp: something else broke\nFailed to import mujoco_warp: No module named 'warp'\ntail")
    sink.finish()
    assert out.getvalue() == "kept line\nFailed to import warp: something else broke\ntail"


def test_import_mjx_is_silent_when_warp_is_missing():
    probe = textwrap.dedent(
        """
        import sys
        class NoWarp:
            def find_spec(self, name, path=None, target=None):
                if name == "warp" or name.startswith("warp."):
                    raise ModuleNotFoundError("No module named 'warp'", name="warp")
        sys.meta_path.insert(0, NoWarp())
        print("before")
        from ksimdsl.runtime.engine.mjx.mjximport import import_mjx, warp_installed
        mjx = import_mjx()
        print("mjx", hasattr(mjx, "step"), "warp", warp_installed())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["before", "mjx True warp False"]


# --------------------------------------------------------------------------- choosing the implementation


def test_auto_never_picks_warp_on_the_cpu():
    assert jax.local_devices()[0].platform == "cpu"
    assert engines.resolve_impl("auto") == "jax"
    assert engines.resolve_impl("jax") == "jax"
    assert engines.resolve("auto") == "mujoco"  # engine auto on the CPU stays C MuJoCo


def test_auto_picks_warp_on_one_nvidia_gpu(monkeypatch):
    monkeypatch.setattr(engines, "has_cuda_gpu", lambda: True)
    monkeypatch.setattr(mjximport, "warp_installed", lambda: True)
    assert engines.resolve_impl("auto", devices=1) == "warp"
    monkeypatch.setattr(jax, "local_device_count", lambda: 4)
    assert engines.resolve_impl("auto", devices=0) == "jax"  # all 4 GPUs: Warp runs on one device
    assert engines.resolve_impl("auto", devices=1) == "warp"
    monkeypatch.setattr(mjximport, "warp_installed", lambda: False)
    assert engines.resolve_impl("auto", devices=1) == "jax"
    with pytest.raises(KsimError, match=r"impl=warp needs MuJoCo Warp.*pip install 'ksimdsl\[warp\]'"):
        engines.resolve_impl("warp")


def test_impl_warp_means_the_mjx_engine():
    assert engines.resolve("auto", impl="warp") == "mjx"
    assert engines.resolve("mjx", impl="warp") == "mjx"
    with pytest.raises(KsimError, match="impl=warp is an implementation of the MJX engine"):
        engines.resolve("mujoco", impl="warp")


@needs_warp
def test_impl_on_the_command_line_picks_the_engine():
    from ksimdsl.session import load_task

    cartpole = str(REPO / "tasks" / "cartpole.ksim")
    task = load_task(cartpole, overrides=["impl=warp"])
    assert (task.engine, task.spec.physics.impl, task.describe_engine()) == ("mjx", "warp", "mjx (impl warp)")
    assert load_task(cartpole, overrides=["engine=mjx"]).spec.physics.impl == "jax"  # auto, resolved on the CPU
    with pytest.raises(KsimError, match="engine=mujoco runs C MuJoCo"):
        load_task(cartpole, overrides=["impl=warp", "engine=mujoco"])


def test_a_checkpoint_does_not_depend_on_the_mjx_implementation():
    from fixtures.cartpole_kernel import SPEC
    from ksimdsl.runtime.training.checkpoint import spec_hash

    spec = TaskSpec.from_dict(SPEC)
    warp = spec.with_overrides(physics=dataclasses.replace(spec.physics, impl="warp", naconmax=8, njmax=32))
    longer = spec.with_overrides(physics=dataclasses.replace(spec.physics, iterations=9))
    assert spec_hash(warp) == spec_hash(spec) != spec_hash(longer)


def _check(tmp_path: Path, body: str):
    text = textwrap.dedent(
        f"""
        task t "x"
        model "{WALKER}"
        actuators ctrl
        observe actor
            q = qpos
        reward
            up 1.0 : body_up("torso").z
        """
    ) + textwrap.dedent(body)
    path = tmp_path / "t.ksim"
    path.write_text(text)
    return check_source(Source(str(path), text))


def test_checker_reports_what_warp_cannot_run(tmp_path):
    assert _check(tmp_path, "physics impl=warp naconmax=8 njmax=64\nrandomize\n    geom_friction *= uniform(0.5, 1.5)\n")
    with pytest.raises(KsimError) as err:
        _check(tmp_path, "physics impl=warp\nengine mujoco\n")
    assert "impl=warp is an implementation of the MJX engine" in str(err.value)
    assert ":9:14: error:" in str(err.value)  # at `warp`
    with pytest.raises(KsimError) as err:
        _check(tmp_path, "physics impl=warp\nrandomize\n    dof_length *= uniform(0.5, 1.5)\n")
    assert "MuJoCo Warp cannot randomize model field 'dof_length' per environment" in str(err.value)
    assert ":11:5: error:" in str(err.value)  # at the randomizer
    assert _check(tmp_path, "physics impl=jax\nrandomize\n    dof_length *= uniform(0.5, 1.5)\n")


@needs_warp
def test_warp_keeps_every_listed_field_per_env():
    from mujoco.mjx.warp import types as warp_types

    batched = {k for k, v in warp_types._BATCH_DIM["Model"].items() if v}
    assert WARP_PER_ENV_FIELDS <= batched
    assert {"geom_friction", "body_mass", "dof_armature", "dof_damping"} <= WARP_PER_ENV_FIELDS  # walk.ksim's
    assert warp_field_problem("geom_friction") is None and "dof_length" in warp_field_problem("dof_length")


# --------------------------------------------------------------------------- parity with impl=jax


def _noise_free(kernels) -> types.SimpleNamespace:
    def wrap(fn):
        return lambda *args: fn(*args[:-2], jnp.zeros_like(args[-2]), jnp.zeros_like(args[-1]))

    return types.SimpleNamespace(reset=wrap(kernels.reset), observe=wrap(kernels.observe), step=wrap(kernels.step))


def _run(spec: TaskSpec, kernels, impl: str, actions_TEA: np.ndarray):
    from ksimdsl.runtime.engine.mjx.env import MjxEnv

    physics = dataclasses.replace(spec.physics, impl=impl, iterations=SOLVER_ITERATIONS, ls_iterations=SOLVER_ITERATIONS)
    env = MjxEnv(spec.with_overrides(physics=physics), kernels, BALL, num_envs=actions_TEA.shape[1])
    assert env.impl == impl
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    rec = []
    for action_EA in actions_TEA:
        state, out = step(state, jnp.asarray(action_EA))
        rec.append(jax.device_get((out.final_obs_actor_EO, out.reward_E, out.done_E)))
    return env, [np.stack(x) for x in zip(*rec)]


@needs_warp
@pytest.mark.slow
def test_warp_matches_jax_on_a_contact_task():
    from ksimdsl.runtime.loader import load_module

    compiled = compile_task(str(TASK), backend="jax")
    spec = TaskSpec.from_dict(compiled.spec)
    kernels = _noise_free(load_module(compiled.source, "warp_contact:jax"))
    actions_TEA = np.random.default_rng(0).uniform(-1, 1, (STEPS, ENVS, spec.action_size)).astype(np.float32)
    _, (obs_j, rew_j, done_j) = _run(spec, kernels, "jax", actions_TEA)
    env_w, (obs_w, rew_w, done_w) = _run(spec, kernels, "warp", actions_TEA)
    assert env_w.physics.sizes is not None and env_w.physics.sizes.naconmax >= 1
    parts_j, parts_w = split_obs(spec, obs_j), split_obs(spec, obs_w)
    assert parts_j["feet"].any() and parts_j["push"].max() > 0.05  # the feet do touch the floor
    assert done_j.any()  # and episodes end (then reset) within the test
    np.testing.assert_array_equal(parts_w["feet"], parts_j["feet"])
    np.testing.assert_array_equal(done_w, done_j)
    for name in parts_j:
        np.testing.assert_allclose(parts_w[name], parts_j[name], atol=OBS_ATOL, err_msg=name)
    np.testing.assert_allclose(rew_w, rew_j, atol=REWARD_ATOL)
