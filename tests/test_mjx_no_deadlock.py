"""Guard against the MJX-on-CPU deadlock that decided ksimdsl's jax pin.

With jax >= 0.10.0 (jaxlib alike; mujoco-mjx 3.3.5 to 3.17.0 make no
difference), a jitted, vmapped MJX control step (several `mjx.step` substeps)
on the humanoid at batch 256, with the batch sharded over two XLA CPU devices,
hangs forever on its first call: the process sits at 0% CPU inside
`block_until_ready`. jax 0.7.0 to 0.9.2 never hung in the same probe (see
pyproject.toml for the measurements). A hang cannot be caught inside the
process, so the probe runs in a subprocess with a wall-clock limit and the
test fails with a clear message (versions, how far the probe got) instead of
blocking the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HUMANOID_XML = Path(__file__).resolve().parents[1] / "tasks" / "models" / "humanoid.xml"
BATCH = 256
SUBSTEPS = 4
CALLS = 5
CPU_DEVICES = 2
LIMIT_S = 300

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


@pytest.mark.slow
def test_sharded_batched_mjx_step_on_the_humanoid_does_not_hang(tmp_path: Path):
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
