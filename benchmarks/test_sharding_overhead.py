"""Sharding overhead: env-steps/s of one jitted training step (MJX rollout + PPO update),
unsharded, on a 1-device mesh (what `ksimdsl train` runs on one GPU) and on all local devices.

    .venv/bin/pytest benchmarks/test_sharding_overhead.py                    # cartpole, pytest-benchmark
    .venv/bin/python benchmarks/test_sharding_overhead.py --task tasks/stand.ksim --envs 4096

The step is compiled ahead of time (as the training loop does) and timed over
`--iterations` calls after one warm-up call, the layouts taking turns; env-steps/s = num_envs * rollout /
seconds per iteration. "unsharded" is the training step as it was before
sharding (plain `jax.jit`, arrays on the default device); "1 device" must match
it, up to noise, for sharding to be free on a single GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import pytest

from ksimdsl.runtime.rl import ppo
from ksimdsl.runtime.training.sharding import EnvMesh
from ksimdsl.runtime.training.train import _make_train_step, make_collector
from ksimdsl.session import load_task

REPO = Path(__file__).resolve().parents[1]
LAYOUTS = ("unsharded", "1 device", "all devices")


def compiled_step(task_path: str, *, num_envs: int, layout: str) -> tuple[Callable[[], None], int]:
    """(run one training iteration and wait for it, env steps per iteration) for `layout`."""
    task = load_task(task_path, overrides=[f"num_envs={num_envs}", "engine=mjx"], engine="mjx")
    spec = task.spec
    collector = make_collector(spec, task.kernels, task.model_path, engine="mjx", num_envs=num_envs)
    k_ppo, k_env, key = jax.random.split(jax.random.PRNGKey(0), 3)
    ppo_state = ppo.init_ppo_from_spec(spec, key=k_ppo)
    if layout == "unsharded":
        collector_state = collector.init_for(ppo_state, key=k_env)
        ppo_state, collector_state = jax.tree.map(lambda x: jnp.array(x, copy=True), (ppo_state, collector_state))
        step = _make_train_step(collector)
    else:
        mesh = EnvMesh.create(devices=1 if layout == "1 device" else 0, num_envs=num_envs)
        collector_state = mesh.init_collector(collector, ppo_state, key=k_env)
        ppo_state = mesh.replicate(ppo_state)
        key = mesh.replicate(key)
        step = _make_train_step(collector, mesh, mesh.step_shardings(ppo_state, collector_state))
    step = step.lower(ppo_state, collector_state, key).compile()
    state: dict[str, Any] = {"ppo": ppo_state, "collector": collector_state}

    def run() -> None:
        state["ppo"], state["collector"], stats, _ = step(state["ppo"], state["collector"], key)
        jax.block_until_ready(stats)

    run()  # warm-up
    return run, num_envs * spec.train.rollout


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.replace(" ", "-"))
def test_training_step_throughput(benchmark, layout):
    run, steps = compiled_step(str(REPO / "tasks" / "cartpole.ksim"), num_envs=64, layout=layout)
    benchmark.pedantic(run, rounds=5, iterations=1)
    benchmark.extra_info["env_steps_per_iteration"] = steps
    benchmark.extra_info["devices"] = 1 if layout != "all devices" else jax.local_device_count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default=str(REPO / "tasks" / "cartpole.ksim"))
    parser.add_argument("--envs", type=int, default=1024)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    device = jax.devices()[0]
    print(f"{args.task}: {args.envs} envs, {jax.local_device_count()} x {device.platform}:{device.device_kind}")
    layouts = [layout for layout in LAYOUTS if layout != "all devices" or jax.local_device_count() > 1]
    steps = {}
    runs = {}
    for layout in layouts:
        runs[layout], steps[layout] = compiled_step(args.task, num_envs=args.envs, layout=layout)
    times: dict[str, list[float]] = {layout: [] for layout in layouts}
    for _ in range(args.iterations):  # interleaved, so that a busy machine slows every layout alike
        for layout, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[layout].append(time.perf_counter() - t0)
    results = {}
    for layout in layouts:
        seconds = statistics.median(times[layout])
        results[layout] = {"iteration_s": seconds, "env_steps_per_s": steps[layout] / seconds}
        print(f"{layout:>12}: {seconds * 1e3:9.1f} ms/iteration  {steps[layout] / seconds:12,.0f} env-steps/s")
    if args.json:
        Path(args.json).write_text(json.dumps({"task": args.task, "envs": args.envs, "results": results}, indent=2))


if __name__ == "__main__":
    main()
