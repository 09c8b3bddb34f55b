"""Guard against the MJX-on-CPU deadlock that decided ksimdsl's version pins.

With some jax / mujoco-mjx versions, `jit(vmap(mjx.step))` on a humanoid at
batch 256 was reported to hang forever inside `block_until_ready` at 0% CPU
(see pyproject.toml). A hang cannot be caught inside the process, so the probe
runs in a subprocess with a wall-clock limit and the test fails with a clear
message (versions, how far the probe got) instead of blocking the suite.
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
CALLS = 10
LIMIT_S = 300

# The probe prints one line per stage so that a hang shows where it stopped.
PROBE = textwrap.dedent(
    """
    import sys
    import jax
    import jax.numpy as jnp
    import mujoco
    from mujoco import mjx

    xml_path, batch, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(f"versions: jax {jax.__version__}, jaxlib {jax.lib.__version__}, mujoco {mujoco.__version__}", flush=True)
    model = mujoco.MjModel.from_xml_path(xml_path)
    model_mjx = mjx.put_model(model)
    data = mjx.make_data(model_mjx)
    keys_E = jax.random.split(jax.random.PRNGKey(0), batch)
    qpos_EQ = jnp.asarray(model.key_qpos[0]) + 0.01 * jax.vmap(lambda k: jax.random.normal(k, (model.nq,)))(keys_E)
    data_E = jax.vmap(lambda q: data.replace(qpos=q))(qpos_EQ)
    step = jax.jit(jax.vmap(mjx.step, in_axes=(None, 0)))
    print("compiling", flush=True)
    for i in range(calls):
        data_E = jax.block_until_ready(step(model_mjx, data_E))
        print(f"call {i + 1}/{calls} done", flush=True)
    finite = bool(jnp.all(jnp.isfinite(data_E.qpos)))
    print(f"finished finite={finite}", flush=True)
    """
)


@pytest.mark.slow
def test_batched_mjx_step_on_the_humanoid_does_not_hang(tmp_path: Path):
    log_path = tmp_path / "probe.log"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    argv = [sys.executable, "-c", PROBE, str(HUMANOID_XML), str(BATCH), str(CALLS)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
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
            f"jit(vmap(mjx.step)) on the humanoid at batch {BATCH} did not finish {CALLS} calls "
            f"within {LIMIT_S} s; the last progress line was {last!r}. This is the MJX-on-CPU "
            "deadlock (stuck in block_until_ready at 0% CPU) that the jax / mujoco-mjx pins in "
            "pyproject.toml avoid: check the installed versions.\n" + output
        )
    assert returncode == 0, f"the MJX probe crashed (exit code {returncode}):\n{output}"
    assert f"call {CALLS}/{CALLS} done" in lines, output
    assert "finished finite=True" in lines, f"the batched humanoid produced non-finite qpos:\n{output}"
