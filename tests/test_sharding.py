"""Training sharded over several JAX devices (ksimdsl.runtime.training.sharding).

The multi-device checks run in a subprocess whose CPU platform has 4 devices
(`--xla_force_host_platform_device_count` must be set before jax is imported);
this process keeps its single CPU device and trains the 1-device reference
meanwhile. Sharding moves the environments, not the arithmetic: the sums over
environments (statistics, normalizers, advantages, losses, gradients) only
change order, so the metrics match the 1-device run to float tolerance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from fixtures.cartpole import cartpole_task

from ksimdsl.errors import KsimError
from ksimdsl.runtime.training.overrides import apply_overrides
from ksimdsl.runtime.training.runs import read_metrics
from ksimdsl.runtime.training.sharding import DistributedConfig, EnvMesh, mesh_devices, parse_coordinator
from ksimdsl.runtime.training.train import TIMING_KEYS, RunPlan, train

TESTS_DIR = Path(__file__).resolve().parent
TINY = ["num_envs=8", "rollout=8", "minibatches=2", "epochs=1", "hidden=[16,16]", "checkpoint_every=2"]
DEVICES = 4
LIMIT_S = 600


def tiny_task(*extra: str):
    spec, kernels, path = cartpole_task()
    return apply_overrides(spec, TINY + list(extra)), kernels, path


def assert_metrics_match(actual: list[dict], expected: list[dict], *, rtol: float = 1e-3, atol: float = 1e-5) -> None:
    """Same iterations and counts; float metrics equal up to the order of floating-point sums."""
    assert [r["iteration"] for r in actual] == [r["iteration"] for r in expected]
    for got, want in zip(actual, expected):
        assert set(got) == set(want)
        for key, value in want.items():
            if key in TIMING_KEYS:
                continue
            if isinstance(value, float) and got[key] is not None:
                where = f"iteration {want['iteration']}: {key}"
                np.testing.assert_allclose(got[key], value, rtol=rtol, atol=atol, err_msg=where)
            else:
                assert got[key] == value, (want["iteration"], key, got[key], value)


# --------------------------------------------------------------------------- settings and errors (this process)


def test_coordinator_addresses_are_parsed_and_checked():
    assert parse_coordinator("10.0.0.1:1234") == ("10.0.0.1", 1234)
    assert parse_coordinator("node-07.cluster:29500") == ("node-07.cluster", 29500)
    assert parse_coordinator("[::1]:8476") == ("[::1]", 8476)
    for bad in ("10.0.0.1", "host:", ":1234", "host:port", "a b:12", "host:70000"):
        with pytest.raises(KsimError, match="--coordinator"):
            parse_coordinator(bad)


def test_distributed_options_come_together_and_are_checked():
    assert DistributedConfig.from_args(None, None, None) is None
    assert DistributedConfig.from_args("127.0.0.1:1234", 2, 1) == DistributedConfig("127.0.0.1:1234", 2, 1)
    with pytest.raises(KsimError, match="missing --num-processes, --process-id"):
        DistributedConfig.from_args("127.0.0.1:1234", None, None)
    with pytest.raises(KsimError, match=r"--process-id must lie in \[0, 1\]"):
        DistributedConfig.from_args("127.0.0.1:1234", 2, 2)
    with pytest.raises(KsimError, match="--num-processes must be at least 1"):
        DistributedConfig.from_args("127.0.0.1:1234", 0, 0)


def test_devices_default_to_all_local_devices_and_more_is_an_error():
    assert mesh_devices(0) == jax.local_devices()
    assert mesh_devices(1) == jax.local_devices()[:1]
    too_many = len(jax.local_devices()) + 1
    with pytest.raises(KsimError, match=f"devices={too_many}, but this process sees only"):
        mesh_devices(too_many)
    with pytest.raises(KsimError, match="devices must be >= 0"):
        mesh_devices(-1)


def test_a_host_engine_cannot_be_sharded(tmp_path):
    spec, kernels, path = tiny_task("devices=2", "steps=1")
    host_collector = SimpleNamespace(spec=spec, num_envs=8, jittable=False)
    assert EnvMesh.for_collector(host_collector, devices=1, num_envs=8) is None
    assert EnvMesh.for_collector(host_collector, devices=0, num_envs=8) is None
    with pytest.raises(KsimError, match="devices=2 needs engine=mjx; engine=mujoco steps its environments on the host"):
        train(spec, kernels, model_path=path, plan=RunPlan(tmp_path / "run", progress=False), collector=host_collector)


# --------------------------------------------------------------------------- 4 devices (subprocess)

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    sys.path.insert(0, sys.argv[1])
    out = Path(sys.argv[2])
    import jax
    from fixtures.cartpole import cartpole_task
    from ksimdsl.errors import KsimError
    from ksimdsl.runtime.rl import ppo
    from ksimdsl.runtime.training.overrides import apply_overrides
    from ksimdsl.runtime.training.sharding import ENV_AXIS, EnvMesh
    from ksimdsl.runtime.training.train import RunPlan, make_collector, train

    TINY = json.loads(sys.argv[3])
    spec, kernels, path = cartpole_task()
    report = {"local_devices": jax.local_device_count()}

    # layout: each device holds its own environments; the RNG key and the PPO state are replicated
    tiny = apply_overrides(spec, TINY)
    mesh = EnvMesh.create(devices=0, num_envs=8)
    collector = make_collector(tiny, kernels, path, engine="mjx", num_envs=8)
    ppo_state = ppo.init_ppo_from_spec(tiny, key=jax.random.PRNGKey(0))
    state = mesh.init_collector(collector, ppo_state, key=jax.random.PRNGKey(1))
    qpos = state.env.data.qpos
    report["qpos_spec"] = list(qpos.sharding.spec)
    report["qpos_shards"] = sorted((s.device.id, s.index[0].start, s.index[0].stop) for s in qpos.addressable_shards)
    report["key_replicated"] = state.env.key.sharding.is_fully_replicated
    replicated = mesh.replicate(ppo_state)
    report["ppo_replicated"] = all(x.sharding.is_fully_replicated and len(x.addressable_shards) == 4
                                   for x in jax.tree.leaves(replicated))
    report["to_host_roundtrip"] = bool((mesh.to_host(qpos) == jax.device_get(qpos)).all())

    for devices, num_envs in ((0, 10), (3, 16), (8, 16)):
        try:
            EnvMesh.create(devices=devices, num_envs=num_envs)
            report[f"error {devices} {num_envs}"] = None
        except KsimError as err:
            report[f"error {devices} {num_envs}"] = str(err)

    # 2 iterations on 4 devices, then resumed on 1 device for a third
    train(apply_overrides(spec, TINY + ["devices=4", "steps=2"]), kernels, model_path=path,
          plan=RunPlan(out / "run", progress=False))
    train(apply_overrides(spec, TINY + ["devices=1", "steps=3"]), kernels, model_path=path,
          plan=RunPlan(out / "run", resume=True, progress=False))
    (out / "report.json").write_text(json.dumps(report))
    """
)


@pytest.mark.slow
def test_training_on_four_devices_matches_one_device_and_resumes_on_one(tmp_path):
    xla_flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={DEVICES}".strip()
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags)
    log_path = tmp_path / "subprocess.log"
    argv = [sys.executable, "-c", SCRIPT, str(TESTS_DIR), str(tmp_path), json.dumps(TINY)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        try:
            # meanwhile, the 1-device reference in this process: same seed, same 8 environments
            spec, kernels, path = tiny_task("devices=1", "steps=3")
            train(spec, kernels, model_path=path, plan=RunPlan(tmp_path / "reference", progress=False))
            returncode = proc.wait(timeout=LIMIT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log_path.read_text()[-6000:]
    assert returncode == 0, f"the {DEVICES}-device subprocess failed:\n{output}"
    report = json.loads((tmp_path / "report.json").read_text())

    assert report["local_devices"] == DEVICES
    assert report["qpos_spec"] == ["envs"]
    assert [(start, stop) for _, start, stop in report["qpos_shards"]] == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert report["key_replicated"] and report["ppo_replicated"] and report["to_host_roundtrip"]
    assert "num_envs=10 does not split evenly over 4 devices" in report["error 0 10"]
    assert "use num_envs=8 or 12, or set devices= to a divisor" in report["error 0 10"]
    assert "num_envs=16 does not split evenly over 3 devices" in report["error 3 16"]
    assert "devices=8, but this process sees only 4 cpu device(s)" in report["error 8 16"]

    sharded = read_metrics(tmp_path / "run")
    reference = read_metrics(tmp_path / "reference")
    assert len(reference) == 3
    assert_metrics_match(sharded, reference)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["spec"]["train"]["devices"] == 1 and config["resumed_from_iteration"] == 2
