"""Engine benchmarks: env-steps/s of the FULL training loop on C MuJoCo (`engine=mujoco`) and on
MJX (`engine=mjx`), for the cart-pole, the planar walker and the humanoid (standing and walking),
and (`--tasks go1 go1_rough g1`) the Unitree Go1 on flat and rough ground and the G1, against raw physics.

    .venv/bin/pytest benchmarks/test_engines.py                 # pytest-benchmark, one case per task/engine
    .venv/bin/python benchmarks/test_engines.py --envs 128      # one run, every number, Markdown table

Measured in one process, on the same machine:

* `train sps`: `ksimdsl.runtime.training.train.train` (rollout + jitted PPO update +
  logging, exactly what `ksimdsl train` runs) for a few iterations; the median
  control-steps/s of the iterations after the first (which compiles);
* `first iteration`: seconds from creating the collector to the end of the
  first training iteration (JAX compilation and numba cache loads included;
  set JAX_COMPILATION_CACHE_DIR to let JAX reuse its compiled update);
* `collect sps`: the C-MuJoCo rollout alone (`MujocoCollector.collect`);
* raw physics on 2 threads, from the same reset states, with each env's
  `ctrl` held: `mj_step` through the engine's own native threads
  (`MujocoEnv.physics_only`, no kernels, no policy) and MuJoCo's
  `rollout.Rollout(nthread=2)` as an independent reference.

Physics-steps/s = control-steps/s x substeps. Goals of the C-MuJoCo engine
(issue "engine mujoco"): >= 3x MJX's train sps on the walker and the humanoid
on a 2-core CPU; >= 70% of raw 2-thread physics throughput on the humanoid. Rough terrain (issue
"locomotion toolbox"): go1_rough's train sps >= 70% of go1's on each engine, printed as a ratio of
the same run when both are measured.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import mujoco
import numpy as np
import pytest
from mujoco import rollout

REPO = Path(__file__).resolve().parents[1]

from ksimdsl.abi import TaskSpec  # noqa: E402
from ksimdsl.codegen import compile_checked  # noqa: E402
from ksimdsl.frontend.check import check_file  # noqa: E402
from ksimdsl.runtime.rl import ppo  # noqa: E402
from ksimdsl.runtime.engine.mjx.collect import MjxCollector  # noqa: E402
from ksimdsl.runtime.engine.mujoco.collect import MujocoCollector  # noqa: E402
from ksimdsl.runtime.engine.mujoco.env import MujocoEnv  # noqa: E402
from ksimdsl.runtime.loader import load_module  # noqa: E402
from ksimdsl.runtime.training.train import RunPlan, train  # noqa: E402

TASKS = {"cartpole": "cartpole.ksim", "walker": "walker.ksim", "humanoid": "stand.ksim", "walk": "walk.ksim"}
#: The robots people own (mjlab 1.6.0 asset zoo) and the Go1 on rough terrain: `--tasks go1 go1_rough g1`.
ROBOT_TASKS = {"go1": "go1_walk.ksim", "go1_rough": "go1_rough.ksim", "g1": "g1_walk.ksim"}
ALL_TASKS = {**TASKS, **ROBOT_TASKS}
ENVS = int(os.environ.get("KSIMDSL_BENCH_ENVS", "128"))
ITERATIONS = int(os.environ.get("KSIMDSL_BENCH_ITERATIONS", "4"))
THREADS = 2


@dataclass(frozen=True)
class Task:
    name: str
    spec_jax: TaskSpec
    spec_numba: TaskSpec
    source_jax: str
    source_numba: str
    model_path: Path


def load_task(name: str, envs: int, rollout_len: int | None = None) -> Task:
    path = REPO / "tasks" / ALL_TASKS[name]
    checked = check_file(str(path))
    jax_task = compile_checked(checked, backend="jax")
    numba_task = compile_checked(checked, backend="numba")

    def sized(spec: dict) -> TaskSpec:
        s = TaskSpec.from_dict(spec)
        train_cfg = {"num_envs": envs, "steps": ITERATIONS, "checkpoint_every": 0}
        if rollout_len:
            train_cfg["rollout"] = rollout_len
        train_cfg["minibatches"] = min(s.train.minibatches, envs)
        return s.with_overrides(train=dataclasses.replace(s.train, **train_cfg))

    spec_jax = sized(jax_task.spec)
    return Task(
        name=name,
        spec_jax=spec_jax,
        spec_numba=sized(numba_task.spec),
        source_jax=jax_task.source,
        source_numba=numba_task.source,
        model_path=Path(checked.model.resolved_path),  # `pkg:` and `menagerie:` sources resolved
    )


def train_sps(task: Task, engine: str) -> dict[str, float]:
    """Run the training loop for ITERATIONS iterations; median control-steps/s after the first."""
    t0 = time.monotonic()
    if engine == "mujoco":
        spec = task.spec_numba
        kernels = load_module(task.source_numba, f"{task.name}:numba")
        collector = MujocoCollector(spec, kernels, task.model_path, threads=THREADS)
    else:
        spec = task.spec_jax
        kernels = load_module(task.source_jax, f"{task.name}:jax")
        collector = MjxCollector(spec, kernels, task.model_path)
    with tempfile.TemporaryDirectory() as tmp:
        train(spec, kernels, model_path=task.model_path, engine=engine, plan=RunPlan(Path(tmp) / "run", progress=False),
              collector=collector)  # fmt: skip
        records = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    elapsed = time.monotonic() - t0
    steady = [r["sps"] for r in records[1:]] or [records[0]["sps"]]
    return {
        "train_sps": statistics.median(steady),
        # from creating the collector to the end of iteration 1 (+ the final checkpoint, a few ms)
        "first_iteration_s": elapsed - (records[-1]["wall_s"] - records[0]["wall_s"]),
        "substeps": spec.substeps,
    }


def collect_sps(task: Task, envs: int) -> float:
    """Control-steps/s of the C-MuJoCo rollout alone (after one warm-up rollout)."""
    spec = task.spec_numba
    kernels = load_module(task.source_numba, f"{task.name}:numba")
    collector = MujocoCollector(spec, kernels, task.model_path, threads=THREADS)
    key = jax.random.PRNGKey(0)
    state = ppo.init_ppo_from_spec(spec, key=key)
    cstate = collector.init_for(state, key=key)
    cstate, _, _ = collector.collect(state, cstate, key=key)
    t = time.perf_counter()
    for i in range(2):
        cstate, traj, _ = collector.collect(state, cstate, key=jax.random.PRNGKey(i))
    jax.block_until_ready(traj)
    collector.env.close()
    return 2 * collector.rollout * envs / (time.perf_counter() - t)


def raw_physics(task: Task, envs: int, steps: int = 64) -> dict[str, float]:
    """Physics-steps/s of plain mj_step on 2 threads from the tasks' reset states, ctrl held."""
    spec = task.spec_numba
    kernels = load_module(task.source_numba, f"{task.name}:numba")
    env = MujocoEnv(spec, kernels, task.model_path, num_envs=envs, threads=THREADS)
    env.reset_all()
    states = np.stack([_state(env, e) for e in range(envs)])
    ctrl_ESU = np.repeat(env.prev_ctrl_EU[:, None, :], spec.substeps, axis=1)
    env.physics_only(ctrl_ESU)
    t = time.perf_counter()
    for _ in range(steps):
        env.physics_only(ctrl_ESU)
    engine_threads = steps * envs * spec.substeps / (time.perf_counter() - t)
    env.close()

    models = [copy.copy(env.model_of(e)) for e in range(envs)]  # model_of's model is reused
    nstep = steps * spec.substeps
    control = np.repeat(env.prev_ctrl_EU[:, None, :], nstep, axis=1)
    datas = [mujoco.MjData(models[0]) for _ in range(THREADS)]
    with rollout.Rollout(nthread=THREADS) as runner:
        runner.rollout(models, datas, states, control[:, :1])
        t = time.perf_counter()
        runner.rollout(models, datas, states, control)
        reference = envs * nstep / (time.perf_counter() - t)
    return {"raw_engine_threads": engine_threads, "raw_rollout": reference}


def _state(env: MujocoEnv, e: int) -> np.ndarray:
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    out = np.empty(mujoco.mj_stateSize(env.model_of(e), spec))
    mujoco.mj_getState(env.model_of(e), env.datas[e], out, spec)
    return out


# --------------------------------------------------------------------------- pytest-benchmark


@pytest.fixture(scope="module", params=list(TASKS))
def task(request) -> Task:
    return load_task(request.param, ENVS)


@pytest.mark.parametrize("engine", ["mujoco", "mjx"])
def test_train_loop(benchmark, task, engine):
    result = benchmark.pedantic(lambda: train_sps(task, engine), rounds=1, iterations=1)
    benchmark.extra_info.update(task=task.name, engine=engine, envs=ENVS, **result)
    assert result["train_sps"] > 0


def test_raw_physics(benchmark, task):
    result = benchmark.pedantic(lambda: raw_physics(task, ENVS), rounds=1, iterations=1)
    benchmark.extra_info.update(task=task.name, envs=ENVS, substeps=task.spec_numba.substeps, **result)
    assert result["raw_rollout"] > 0


# --------------------------------------------------------------------------- one-shot report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=ENVS)
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(ALL_TASKS))
    parser.add_argument("--skip-mjx", action="store_true", help="measure only the C-MuJoCo engine")
    args = parser.parse_args()
    rows = []
    for name in args.tasks:
        task = load_task(name, args.envs)
        S = task.spec_numba.substeps
        c = train_sps(task, "mujoco")
        m = None if args.skip_mjx else train_sps(task, "mjx")
        col = collect_sps(task, args.envs)
        raw = raw_physics(task, args.envs)
        rows.append((name, S, c, m, col, raw))
        print(f"{name}: done", file=sys.stderr, flush=True)
    print(f"\nenvs={args.envs}, rollout per task file, {THREADS} physics threads, machine: {os.cpu_count()} CPUs\n")
    print("| task | substeps | mujoco train sps | mjx train sps | mujoco / mjx | mujoco collect sps "
          "| collect physics-steps/s | raw 2-thread mj_step (engine threads / rollout) | collect / raw "
          "| first iteration mujoco / mjx |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, S, c, m, col, raw in rows:
        ratio = f"{c['train_sps'] / m['train_sps']:.1f}x" if m else "-"
        msps = f"{m['train_sps']:,.0f}" if m else "-"
        mfirst = f"{m['first_iteration_s']:.1f} s" if m else "-"
        best_raw = max(raw["raw_engine_threads"], raw["raw_rollout"])
        print(
            f"| {name} | {S} | {c['train_sps']:,.0f} | {msps} | {ratio} | {col:,.0f} | {col * S:,.0f} "
            f"| {raw['raw_engine_threads']:,.0f} / {raw['raw_rollout']:,.0f} | {col * S / best_raw:.0%} "
            f"| {c['first_iteration_s']:.1f} s / {mfirst} |"
        )
    by_name = {row[0]: row for row in rows}
    if "go1" in by_name and "go1_rough" in by_name:
        flat, rough = by_name["go1"], by_name["go1_rough"]
        print("\n| go1_rough / go1 (same run) | mujoco | mjx |\n|---|---|---|")
        mjx = f"{rough[3]['train_sps'] / flat[3]['train_sps']:.0%}" if flat[3] and rough[3] else "-"
        print(f"| train sps | {rough[2]['train_sps'] / flat[2]['train_sps']:.0%} | {mjx} |")


if __name__ == "__main__":
    main()
