"""Guard against the MJX-on-CPU deadlock of jaxlib >= 0.10.

With jaxlib 0.10.0 to 0.10.2 (mujoco-mjx 3.3.5 to 3.17.0 make no difference),
a jitted, vmapped MJX control step (several `mjx.step` substeps) on the
humanoid at batch 256, with the batch sharded over two XLA CPU devices on a
2-core machine, hangs forever on its first call at 0% CPU: both devices sit in
jaxlib's LAPACK Cholesky (`ParallelBatchMap`), waiting for batch pieces queued
on XLA's CPU thread pool, whose only two threads are those two devices. jax
0.7.0 to 0.9.2 never hung in the same probe. A hang cannot be caught inside
the process, so the probe runs in a subprocess with a wall-clock limit and the
test fails with a clear message (versions, how far the probe got) instead of
blocking the suite.

Where `ksimdsl.runtime.training.sharding.check_cpu_lapack_deadlock` refuses the probe's
configuration (jaxlib >= 0.10, devices >= CPU threads), training never runs it
and the probe is skipped, since it is known to hang there; set
KSIMDSL_DEADLOCK_PROBE=1 to run it anyway (e.g. to re-check a new jaxlib).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ksimdsl.errors import KsimError
from ksimdsl.runtime.training.sharding import CpuLapackLoad, check_cpu_lapack_deadlock

HUMANOID_XML = Path(__file__).resolve().parents[1] / "tasks" / "models" / "humanoid.xml"
BATCH = 256
SUBSTEPS = 4
CALLS = 5
CPU_DEVICES = 2
LIMIT_S = 300
HUMANOID_NV = 27

# The probe prints one line per stage so that a hang shows where it stopped.
PROBE = textwrap.dedent(
    """
    import sys
    import jax
    import jax.numpy as jnp
    import mujoco
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from mujoco import mjx

    xml_path, batch, substeps, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    print(f"versions: jax {jax.__version__}, mujoco {mujoco.__version__}, devices {jax.device_count()}", flush=True)
    model = mujoco.MjModel.from_xml_path(xml_path)
    model_mjx = mjx.put_model(model)
    data = mjx.make_data(model_mjx)
    keys_E = jax.random.split(jax.random.PRNGKey(0), batch)
    qpos_EQ = jnp.asarray(model.key_qpos[0]) + 0.01 * jax.vmap(lambda k: jax.random.normal(k, (model.nq,)))(keys_E)
    data_E = jax.vmap(lambda q: data.replace(qpos=q))(qpos_EQ)
    mesh = Mesh(jax.devices(), ("env",))
    data_E = jax.device_put(data_E, NamedSharding(mesh, PartitionSpec("env")))

    def control_step(d):
        return jax.lax.fori_loop(0, substeps, lambda _, d: mjx.step(model_mjx, d), d)

    step_E = jax.jit(jax.vmap(control_step))
    print("compiling and running the first call", flush=True)
    for i in range(calls):
        data_E = jax.block_until_ready(step_E(data_E))
        print(f"call {i + 1}/{calls} done", flush=True)
    finite = bool(jnp.all(jnp.isfinite(data_E.qpos)))
    print(f"finished finite={finite}", flush=True)
    """
)


def probe_load() -> CpuLapackLoad:
    return CpuLapackLoad.here(CPU_DEVICES, BATCH // CPU_DEVICES, HUMANOID_NV)


@pytest.mark.slow
def test_sharded_batched_mjx_step_on_the_humanoid_does_not_hang(tmp_path: Path):
    if probe_load().deadlocks and os.environ.get("KSIMDSL_DEADLOCK_PROBE") != "1":
        pytest.skip(
            "known to hang with jaxlib %d.%d on %d CPU threads; " % (*probe_load().jaxlib, probe_load().pool_threads)
            + "training refuses this configuration (KSIMDSL_DEADLOCK_PROBE=1 runs the probe anyway)"
        )
    log_path = tmp_path / "probe.log"
    xla_flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={CPU_DEVICES}"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags.strip())
    argv = [sys.executable, "-c", PROBE, str(HUMANOID_XML), str(BATCH), str(SUBSTEPS), str(CALLS)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        try:
            returncode = proc.wait(timeout=LIMIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            returncode = None
    lines = log_path.read_text().splitlines()
    output = "\n".join(lines[-30:])
    if returncode is None:
        last = lines[-1] if lines else "(no output)"
        pytest.fail(
            f"jit(vmap(mjx.step)) on the humanoid at batch {BATCH}, sharded over {CPU_DEVICES} CPU "
            f"devices, did not finish {CALLS} calls within {LIMIT_S} s; the last progress line was "
            f"{last!r}. This is the MJX-on-CPU deadlock (stuck in block_until_ready at 0% CPU) that "
            "the jax pin in pyproject.toml avoids: check the installed jax/jaxlib versions.\n" + output
        )
    assert returncode == 0, f"the MJX probe crashed (exit code {returncode}):\n{output}"
    assert f"call {CALLS}/{CALLS} done" in lines, output
    assert "finished finite=True" in lines, f"the batched humanoid produced non-finite qpos:\n{output}"
    assert f"devices {CPU_DEVICES}" in lines[0], f"the probe did not get {CPU_DEVICES} CPU devices:\n{output}"


def test_only_the_configuration_that_hangs_is_refused():
    hung = CpuLapackLoad(jaxlib=(0, 10), devices=2, pool_threads=2, envs_per_device=128, nv=HUMANOID_NV)
    with pytest.raises(KsimError, match=r"devices=2 on the CPU would hang with jaxlib 0\.10.*Use devices=1"):
        check_cpu_lapack_deadlock(hung)
    assert CpuLapackLoad(jaxlib=(0, 11), devices=4, pool_threads=2, envs_per_device=128, nv=None).deadlocks
    fine = [
        CpuLapackLoad(jaxlib=(0, 9), devices=2, pool_threads=2, envs_per_device=128, nv=HUMANOID_NV),  # no fan-out yet
        CpuLapackLoad(jaxlib=(0, 10), devices=1, pool_threads=2, envs_per_device=256, nv=HUMANOID_NV),  # one device
        CpuLapackLoad(jaxlib=(0, 10), devices=2, pool_threads=16, envs_per_device=128, nv=HUMANOID_NV),  # free threads
        CpuLapackLoad(jaxlib=(0, 10), devices=4, pool_threads=2, envs_per_device=2, nv=2),  # cartpole: never split
    ]
    for load in fine:
        assert not load.deadlocks, load
        check_cpu_lapack_deadlock(load)
