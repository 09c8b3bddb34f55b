"""Training across processes with jax.distributed (ksimdsl.runtime.training.sharding.init_distributed).

Two processes on 127.0.0.1, one CPU device each, exchange data with gloo
collectives: the environments are split between them, only process 0 writes
the run directory and runs the iteration hook (on a copy of the policy of its
own), and the metrics match a single-process run with the same seed and
`num_envs` (trained in this process meanwhile) to float tolerance.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_sharding import TINY, assert_metrics_match, tiny_task

from ksimdsl.runtime.training.checkpoint import list_checkpoints
from ksimdsl.runtime.training.runs import read_metrics
from ksimdsl.runtime.training.train import RunPlan, train

TESTS_DIR = Path(__file__).resolve().parent
LIMIT_S = 600

WORKER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    sys.path.insert(0, sys.argv[1])
    coordinator, process_id, run_dir, tiny = sys.argv[2], int(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5])
    from ksimdsl.runtime.training.sharding import DistributedConfig, init_distributed

    init_distributed(DistributedConfig(coordinator, num_processes=2, process_id=process_id), timeout_s=120)
    import jax
    import jax.numpy as jnp
    from fixtures.cartpole import cartpole_task
    from ksimdsl.runtime.rl import ppo
    from ksimdsl.runtime.training.overrides import apply_overrides
    from ksimdsl.runtime.training.train import RunPlan, train

    spec, kernels, path = cartpole_task()
    hook_calls = []

    def hook(ppo_state, *, iteration, final):
        # like the training videos: this process alone runs the policy, so the state must be its own
        policy = ppo.make_policy(ppo_state)
        action, _ = policy(jnp.zeros(spec.obs_actor_size), policy.initial_carry())
        hook_calls.append([iteration, final, bool(jnp.all(jnp.isfinite(action))), len(action.devices())])

    result = train(apply_overrides(spec, tiny + ["steps=3"]), kernels, model_path=path,
                   plan=RunPlan(run_dir, progress=False, make_hook=lambda _: hook))
    print("RESULT " + json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                                  "devices": jax.device_count(), "local_devices": jax.local_device_count(),
                                  "iterations": result.iterations,
                                  "checkpoint": None if result.checkpoint is None else result.checkpoint.name,
                                  "hook_calls": hook_calls}),
          flush=True)
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def result_line(log: str) -> dict:
    lines = [line for line in log.splitlines() if line.startswith("RESULT ")]
    assert lines, log[-6000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


@pytest.mark.slow
def test_two_processes_train_together_and_agree_with_one(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    coordinator = f"127.0.0.1:{free_port()}"
    run_dir = tmp_path / "run"
    procs, logs = [], []
    try:
        for process_id in (0, 1):
            log_path = tmp_path / f"process{process_id}.log"
            logs.append(log_path)
            argv = [sys.executable, "-c", WORKER, str(TESTS_DIR), coordinator, str(process_id), str(run_dir)]
            argv.append(json.dumps(TINY))
            with open(log_path, "w") as log:
                procs.append(
                    subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
                )
        # meanwhile, the single-process reference: same seed, same 8 environments on one device
        spec, kernels, path = tiny_task("steps=3")
        train(spec, kernels, model_path=path, plan=RunPlan(tmp_path / "reference", progress=False))
        codes = [p.wait(timeout=LIMIT_S) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    texts = [p.read_text() for p in logs]
    if codes != [0, 0]:  # one process failing makes the other time out in a collective: show both
        tails = "\n".join(
            f"--- process {i} (exit {code}):\n{text[-4000:]}" for i, (code, text) in enumerate(zip(codes, texts))
        )
        raise AssertionError(f"the two-process run failed:\n{tails}")

    main, other = result_line(texts[0]), result_line(texts[1])
    assert (main["process"], other["process"]) == (0, 1)
    assert main["processes"] == other["processes"] == 2
    assert main["devices"] == other["devices"] == 2 and main["local_devices"] == other["local_devices"] == 1
    assert main["iterations"] == other["iterations"] == 3
    # only process 0 writes: one log line per iteration, its checkpoints, nothing reported by process 1
    assert main["checkpoint"] == "ckpt_00000003.safetensors" and other["checkpoint"] is None
    assert [p.name for p in list_checkpoints(run_dir)] == ["ckpt_00000002.safetensors", "ckpt_00000003.safetensors"]
    assert "run directory:" in texts[0] and "run directory:" not in texts[1]
    # the iteration hook (videos, plots) runs in process 0 only, on a single-device copy of the policy
    assert main["hook_calls"] == [[1, False, True, 1], [2, False, True, 1], [3, False, True, 1], [3, True, True, 1]]
    assert other["hook_calls"] == []

    assert_metrics_match(read_metrics(run_dir), read_metrics(tmp_path / "reference"))


NO_COORDINATOR = textwrap.dedent(
    """
    import sys
    from ksimdsl.errors import KsimError
    from ksimdsl.runtime.training.sharding import DistributedConfig, init_distributed

    try:
        init_distributed(DistributedConfig(sys.argv[1], num_processes=2, process_id=1), timeout_s=1.0)
    except KsimError as err:
        print(err)
        sys.exit(2)
    """
)


def test_a_process_without_a_coordinator_reports_it_clearly():
    coordinator = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    argv = [sys.executable, "-c", NO_COORDINATOR, coordinator]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"process 1 of 2: no coordinator at {coordinator} after 1 s" in proc.stdout
    assert "start process 0 with the same --coordinator" in proc.stdout
