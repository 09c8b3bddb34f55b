"""Velocity and position-velocity actuators on both engines.

A tiny task on the cart-pole (one slider motor, gear 10, ctrlrange ±1: force
limited to ±10 N), in a known state (cart at 0.1 m moving at 0.4 m/s), is
stepped one physics step with known actions; the force MuJoCo applied in that
step (`actuator_force`, and `qfrc_actuator` on the slider) must be the law of
the actuator kind, clipped to the motor's limit: env 0 within the limit,
env 1 beyond it. The law is evaluated by MuJoCo itself, from the rewritten
actuators (ksimdsl/runtime/engine/model.py): on C MuJoCo through the whole
engine (compiled numba kernels, reset, `cstep.actuate`), on MJX from the MJX
engine's ctrl (`ActuatorModel.target`) and one `mjx.step`.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mujoco import mjx

from fixtures.cartpole import MODEL_PATH, compiled_task
from ksimdsl.runtime.engine.actuators import ActuatorModel
from ksimdsl.runtime.engine.model import load_model
from ksimdsl.runtime.engine.mujoco.env import MujocoEnv

Q0, QD0, LIMIT = 0.1, 0.4, 10.0

TASK = f"""task t
model "{MODEL_PATH}"
physics dt=10ms ctrl_dt=10ms
{{actuators}}
observe actor
    q = joint_pos
reward
    alive 1 : 1
reset
    joint_pos = [{Q0}, 0]
    joint_vel = [{QD0}, 0]
"""

KINDS = {
    # kind: (actuators line, actions (E=2, A), the law's force before the limit)
    "velocity": (
        "actuators velocity kd=20 action_scale=0.5",
        [[0.6], [-1.0]],
        lambda a: 20 * (0.5 * a[0] - QD0),  # kd (target_vel - qd): -2, -18
    ),
    "position_velocity": (
        "actuators position_velocity kp=30 kd=2 action_scale=0.5 velocity_scale=2",
        [[0.4, 0.25], [1.0, 1.0]],
        lambda a: 30 * (0.5 * a[0] - Q0) + 2 * (2 * a[1] - QD0),  # 3.2, 15.2
    ),
}


def _task(tmp_path: Path, kind: str, backend: str):
    path = tmp_path / f"{kind}.ksim"
    path.write_text(TASK.format(actuators=KINDS[kind][0]))
    return compiled_task(path, backend)


def _expected(kind: str) -> np.ndarray:
    _, actions, law = KINDS[kind]
    return np.clip([law(np.asarray(a)) for a in actions], -LIMIT, LIMIT)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_c_mujoco_applies_the_actuator_law(tmp_path, kind):
    task = _task(tmp_path, kind, "numba")
    assert task.spec.action_size == len(KINDS[kind][1][0])
    env = MujocoEnv(task.spec, task.kernels, task.model_path, num_envs=2, threads=1)
    try:
        env.reset_all()
        np.testing.assert_allclose([d.qvel[0] for d in env.datas], [QD0, QD0])
        env.step(np.asarray(KINDS[kind][1], np.float32))  # actions are float32, as a policy's
        force = np.array([d.actuator_force[0] for d in env.datas])
        np.testing.assert_allclose(force, _expected(kind), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose([d.qfrc_actuator[0] for d in env.datas], force, rtol=1e-6, atol=1e-6)
    finally:
        env.close()


def test_mjx_applies_the_actuator_law(tmp_path):
    """Both kinds on MJX (float32): the MJX engine's ctrl (`ActuatorModel.target`), one `mjx.step`.

    The model is an argument of the one jitted step, so the two kinds share its compilation.
    """
    step = jax.jit(jax.vmap(mjx.step, in_axes=(None, 0)))
    for kind in sorted(KINDS):
        spec = _task(tmp_path, kind, "jax").spec
        model = load_model(spec, MODEL_PATH)
        actuators = ActuatorModel.from_spec(spec, model)
        ctrl_EU = jax.vmap(actuators.target, in_axes=(0, None))(jnp.asarray(KINDS[kind][1]), jnp.zeros(1))
        mx = mjx.put_model(model)
        d = mjx.make_data(mx)
        dx = jax.vmap(lambda c: d.replace(qpos=jnp.array([Q0, 0.0]), qvel=jnp.array([QD0, 0.0]), ctrl=c))(ctrl_EU)
        out = step(mx, dx)
        force = np.asarray(out.actuator_force[:, 0])
        np.testing.assert_allclose(force, _expected(kind), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(out.qfrc_actuator[:, 0]), force, rtol=1e-5, atol=1e-5)
