"""MJX training loop vs raw physics: how much the loop costs on top of `jit(vmap(mjx.step))`.

    .venv/bin/pytest benchmarks/test_mjx_overhead.py                # pytest-benchmark cases
    .venv/bin/python benchmarks/test_mjx_overhead.py --envs 256     # one run, a Markdown table

Measured in one process, on the same model (physics settings and actuator
rewrite of `ksimdsl.runtime.engine.model.load_model`) and batch size:

* `raw`: a jitted `lax.scan` over `rollout` control steps of the vmapped
  `substeps` x `mjx.step`, ctrl held — physics and nothing else;
* `collect`: `MjxCollector.collect` (jitted) — the same number of control
  steps with the generated kernels, the policy, rewards, auto-reset and the
  trajectory;
* `train`: the whole training loop (`ksimdsl.runtime.training.train.train`, rollout +
  PPO update + logging), median of the iterations after the first.

The goal of the runtime issue: loop overhead over raw physics under 25% at
num_envs >= 256 (`collect` vs `raw`; `train` adds the PPO update).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import pytest
from test_engines import load_task, train_sps

from ksimdsl.runtime.rl import ppo
from ksimdsl.runtime.engine.mjx.collect import MjxCollector
from ksimdsl.runtime.engine.mjx.mjximport import import_mjx
from ksimdsl.runtime.engine.model import default_pose, load_model
from ksimdsl.runtime.loader import load_module

mjx = import_mjx()
ENVS = int(os.environ.get("KSIMDSL_BENCH_ENVS", "256"))
ROLLOUT = 16
TASK_NAMES = ("cartpole", "humanoid")


def _time(fn, *args, repeats: int = 3) -> float:
    """Median seconds of `fn(*args)` after one warm-up call (which compiles)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def raw_sps(name: str, envs: int) -> float:
    """Control-steps/s of bare MJX physics for this task's model and substeps."""
    task = load_task(name, envs, rollout_len=ROLLOUT)
    spec = task.spec_jax
    model = mjx.put_model(load_model(spec, task.model_path))
    qpos0, _ = default_pose(load_model(spec, task.model_path))
    data = jax.vmap(lambda _: mjx.make_data(model).replace(qpos=jnp.asarray(qpos0)))(jnp.arange(envs))
    data = jax.vmap(mjx.forward, in_axes=(None, 0))(model, data)

    def control_step(d, _):
        for _ in range(spec.substeps):
            d = jax.vmap(mjx.step, in_axes=(None, 0))(model, d)
        return d, None

    run = jax.jit(lambda d: jax.lax.scan(control_step, d, None, length=ROLLOUT)[0])
    return ROLLOUT * envs / _time(run, data)


def collect_sps(name: str, envs: int) -> float:
    """Control-steps/s of the jitted MJX rollout (kernels, policy, auto-reset, trajectory)."""
    task = load_task(name, envs, rollout_len=ROLLOUT)
    kernels = load_module(task.source_jax, f"{name}:jax")
    collector = MjxCollector(task.spec_jax, kernels, task.model_path)
    key = jax.random.PRNGKey(0)
    state = ppo.init_ppo_from_spec(task.spec_jax, key=key)
    cstate = collector.init_for(state, key=key)
    collect = jax.jit(lambda s, c, k: collector.collect(s, c, key=k)[1])
    return ROLLOUT * envs / _time(collect, state, cstate, key)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_loop_overhead(benchmark, name: str) -> None:
    result = benchmark.pedantic(
        lambda: {"raw": raw_sps(name, ENVS), "collect": collect_sps(name, ENVS)}, rounds=1, iterations=1
    )
    benchmark.extra_info.update(result)
    benchmark.extra_info["collect_overhead"] = result["raw"] / result["collect"] - 1
    assert result["raw"] > 0 and result["collect"] > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=ENVS)
    parser.add_argument("--tasks", nargs="+", default=list(TASK_NAMES))
    args = parser.parse_args()
    print(f"{args.envs} envs, rollout {ROLLOUT}, {jax.devices()[0].device_kind}")
    print("| task | raw physics control-steps/s | collect | collect overhead | train loop | train overhead |")
    print("|---|---|---|---|---|---|")
    for name in args.tasks:
        raw = raw_sps(name, args.envs)
        col = collect_sps(name, args.envs)
        trained = train_sps(load_task(name, args.envs, rollout_len=ROLLOUT), "mjx")["train_sps"]
        print(
            f"| {name} | {raw:,.0f} | {col:,.0f} | {raw / col - 1:+.0%} | {trained:,.0f} | {raw / trained - 1:+.0%} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
