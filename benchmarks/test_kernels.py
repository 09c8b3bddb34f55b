"""Kernel benchmarks of tasks/walk.ksim: generated kernels (JAX, numba; with and without CSE)
against the hand-written ksim-style modular baseline, plus physics and env throughput.

    .venv/bin/pytest benchmarks/test_kernels.py                # pytest-benchmark timings
    .venv/bin/python benchmarks/test_kernels.py --envs 1024    # one run, all ratios, Markdown for README

`test_baseline_matches_the_generated_kernel` checks that the baseline computes
the same observations, rewards, terminations and memory as the generated
kernel, so the timings compare equal work.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_walk import make_walk_step  # noqa: E402

from ksimdsl.abi import TaskSpec  # noqa: E402
from ksimdsl.codegen import compile_task  # noqa: E402
from ksimdsl.runtime.tools.bench import (  # noqa: E402
    BenchConfig,
    KernelVariant,
    bench_task,
    copy_floor,
    format_report,
    in_rollout,
    make_inputs,
    numba_step_args,
)
from ksimdsl.runtime.engine.model import default_pose, load_model  # noqa: E402
from ksimdsl.runtime.loader import load_module  # noqa: E402

TASK = REPO / "tasks" / "walk.ksim"
MODEL = REPO / "tasks" / "models" / "humanoid.xml"
ENVS = int(os.environ.get("KSIMDSL_BENCH_ENVS", "256"))


def walk_variants() -> list[KernelVariant]:
    """walk.ksim compiled for both backends, with and without CSE."""
    out = []
    for backend in ("jax", "numba"):
        for cse in (True, False):
            source = compile_task(str(TASK), backend=backend, cse=cse).source
            out.append(KernelVariant(f"{backend}/{'cse' if cse else 'no-cse'}", backend, cse, source))
    return out


def walk_baseline(spec: TaskSpec):
    qpos0, _ = default_pose(load_model(spec, MODEL))
    return make_walk_step(spec, np.asarray(qpos0[7:], np.float64))


@pytest.fixture(scope="module")
def setup():
    variants = {v.name: v for v in walk_variants()}
    modules = {name: load_module(v.source, f"bench_walk_{name}") for name, v in variants.items()}
    spec = TaskSpec.from_dict(modules["numba/cse"].SPEC)
    inputs = make_inputs(spec, modules["numba/cse"], MODEL, envs=ENVS)
    return spec, modules, inputs


def test_baseline_matches_the_generated_kernel(setup):
    spec, modules, inputs = setup
    # exercise every branch: first steps, command resampling, pushes, all observation delays
    offset = {m["name"]: int(m["offset"]) for m in spec.mem_layout}
    mem_EM = inputs.mem_EM.copy()
    env_E = np.arange(len(mem_EM))
    mem_EM[env_E % 3 == 0, offset["first"]] = 1.0
    mem_EM[env_E % 4 == 1, offset["cmd.vel.timer"]] = 1.0
    mem_EM[env_E % 5 == 2, offset["event.push.timer"]] = 1.0
    mem_EM[:, offset["delay.gravity"]] = env_E % 3
    level_E = np.linspace(0.0, 1.0, len(mem_EM))
    inputs = dataclasses.replace(inputs, mem_EM=mem_EM, level_E=level_E)
    args = inputs.jax_args()
    want = jax.jit(jax.vmap(modules["jax/cse"].step))(*args)
    got = jax.jit(jax.vmap(walk_baseline(spec)))(*args)
    for key in ("actor", "critic", "reward_terms", "reward_weights", "mem", "qvel"):
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(want[key]), rtol=2e-4, atol=2e-4, err_msg=key)
    np.testing.assert_array_equal(np.asarray(got["terminations"]), np.asarray(want["terminations"]))


LOOP_CALLS = 20


def _jax_step(spec, modules, inputs, name):
    if name == "baseline":
        return walk_baseline(spec)
    if name == "copy floor":
        return copy_floor(modules["jax/cse"].step, inputs)
    return modules[name].step


@pytest.mark.parametrize("name", ["jax/cse", "jax/no-cse", "baseline", "copy floor"])
def test_jax_step_kernel(benchmark, setup, name):
    """LOOP_CALLS chained kernel calls in one jitted loop, as in a rollout (see `in_rollout`)."""
    spec, modules, inputs = setup
    args = inputs.jax_args()
    fn = in_rollout(_jax_step(spec, modules, inputs, name), LOOP_CALLS)
    jax.block_until_ready(fn(*args))
    benchmark.group = f"walk step kernel, {ENVS} envs, {LOOP_CALLS} calls in a jitted loop"
    benchmark(lambda: jax.block_until_ready(fn(*args)))


@pytest.mark.parametrize("name", ["numba/cse", "numba/no-cse"])
def test_numba_step_kernel(benchmark, setup, name):
    spec, modules, inputs = setup
    args = numba_step_args(spec, inputs)
    modules[name].step(*args)
    benchmark.group = f"walk step kernel (numba, batched), {ENVS} envs, one call"
    benchmark(lambda: modules[name].step(*args))


@pytest.mark.parametrize("name", ["jax/cse", "jax/no-cse", "baseline"])
def test_jax_trace_and_compile(benchmark, setup, name):
    spec, modules, inputs = setup
    step = _jax_step(spec, modules, inputs, name)
    args = inputs.jax_args()
    benchmark.group = "walk step kernel: jit trace + XLA compile"
    benchmark.pedantic(lambda: jax.jit(jax.vmap(step)).lower(*args).compile(), rounds=3, iterations=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    args = parser.parse_args(argv)
    variants = walk_variants()
    spec = TaskSpec.from_dict(load_module(variants[-1].source, "bench_walk_spec").SPEC)
    report = bench_task(
        spec,
        model_path=MODEL,
        variants=variants,
        config=BenchConfig(envs=args.envs, repeats=args.repeats),
        baselines={"baseline (ksim-style)": walk_baseline(spec)},
        progress=lambda msg: print(f"... {msg}", file=sys.stderr, flush=True),
    )
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    jax.config.update("jax_platforms", os.environ.get("JAX_PLATFORMS", "cpu") or "cpu")
    sys.exit(main())
