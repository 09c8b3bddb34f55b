"""The MJX environment: resets, truncation, failures, NaN recovery, randomization,
actuators, contact queries and the curriculum."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from fixtures.cartpole import MODEL_PATH, cartpole_task, randomized_cartpole_task
from fixtures.probe import probe_task, split_obs

from ksimdsl.abi import ActuatorSpec
from ksimdsl.errors import KsimError
from ksimdsl.settings import CurriculumSettings
from ksimdsl.runtime.engine.actuators import ActuatorModel, JaxDraws
from ksimdsl.runtime.engine.curriculum import Curriculum
from ksimdsl.runtime.engine.mjx.env import MjxEnv
from ksimdsl.runtime.engine.model import default_pose, load_model

NUM_ENVS = 4


@pytest.fixture(scope="module")
def short_env():
    """Cartpole with 5-step episodes, and its jitted reset/step.

    The compiled fixture task tests/fixtures/cartpole_randomized.ksim rather than the
    shipped one: these tests need actor noise, randomized masses and damping and a
    second termination, which tasks/cartpole.ksim does not use.
    """
    spec, kernels, path = randomized_cartpole_task()
    spec = dataclasses.replace(spec, episode_steps=5)
    env = MjxEnv(spec, kernels, path, num_envs=NUM_ENVS)
    return env, jax.jit(env.reset), jax.jit(env.step)


@pytest.fixture(scope="module")
def shipped_env():
    """The shipped tasks/cartpole.ksim with 3-step episodes and an episode-length curriculum, jitted.

    Its reward and termination do not depend on the level, so one compiled env
    serves both the task test and the curriculum test.
    """
    spec, kernels, path = cartpole_task()
    spec = dataclasses.replace(
        spec,
        episode_steps=3,
        curriculum=CurriculumSettings(kind="episode_length", levels=10, up=0.8, down=0.3, min_steps=0),
    )
    env = MjxEnv(spec, kernels, path, num_envs=NUM_ENVS)
    return env, jax.jit(env.reset), jax.jit(env.step)


def zeros_action(env):
    return jnp.zeros((env.num_envs, env.spec.action_size), jnp.float32)


def test_reset_starts_every_env_near_the_default_pose(short_env):
    env, reset, _ = short_env
    state = reset(jax.random.PRNGKey(0))
    qpos = np.asarray(state.data.qpos)
    assert qpos.shape == (NUM_ENVS, 2)
    assert np.all(np.abs(qpos) <= 0.1 + 1e-6)  # reset block: joint_pos += uniform(-0.1, 0.1)
    assert len(np.unique(qpos[:, 1])) == NUM_ENVS  # each env draws its own noise
    assert np.all(np.asarray(state.step_E) == 0)
    # the first observation is observe() of the reset state: [x, cos, sin, xd, thd] (critic is noise-free)
    obs = np.asarray(state.obs_critic_EC)
    np.testing.assert_allclose(obs[:, 0], qpos[:, 0], atol=1e-6)
    np.testing.assert_allclose(obs[:, 1], np.cos(qpos[:, 1]), atol=1e-6)
    assert not np.allclose(np.asarray(state.obs_actor_EO), obs)  # actor observation noise


def test_truncation_auto_resets_every_env_after_episode_steps(short_env):
    env, reset, step = short_env
    state = reset(jax.random.PRNGKey(1))
    for t in range(4):
        state, out = step(state, zeros_action(env))
        assert not np.any(out.done_E), f"done too early at step {t + 1}"
        assert np.all(np.asarray(state.step_E) == t + 1)
    before = np.asarray(state.data.qpos)
    state, out = step(state, zeros_action(env))
    assert np.all(out.truncated_E) and np.all(out.done_E)
    assert not np.any(out.failure_E) and not np.any(out.nan_E)
    assert np.all(np.asarray(out.episode_length_E) == 5)
    np.testing.assert_allclose(np.asarray(out.episode_return_E), np.asarray(out.episode_return_E))
    assert np.all(np.asarray(out.episode_return_E) > 0)
    # the state after a done step is a fresh episode; the final observation is of the old one
    assert np.all(np.asarray(state.step_E) == 0)
    assert np.all(np.asarray(state.episode_return_E) == 0)
    assert not np.allclose(np.asarray(state.data.qpos), before)
    final_x = np.asarray(out.final_obs_critic_EC)[:, 0]
    assert not np.allclose(final_x, np.asarray(state.obs_critic_EC)[:, 0])


def test_failure_resets_only_that_env(short_env):
    env, reset, step = short_env
    state = reset(jax.random.PRNGKey(2))
    qpos = state.data.qpos.at[2, 1].set(jnp.pi)  # pole of env 2 hangs down: `fell`
    state = state._replace(data=state.data.replace(qpos=qpos))
    state, out = step(state, zeros_action(env))
    assert out.done_E.tolist() == [False, False, True, False]
    assert out.failure_E.tolist() == [False, False, True, False]
    assert not np.any(out.truncated_E)
    assert out.terminations_EK[2].tolist() == [True, False]  # fell, not out_of_bounds
    assert np.asarray(state.step_E).tolist() == [1, 1, 0, 1]
    assert abs(float(state.data.qpos[2, 1])) <= 0.1 + 1e-6  # env 2 restarted upright


def test_nan_in_one_env_resets_it_and_leaves_the_others_alone(short_env):
    env, reset, step = short_env
    state = reset(jax.random.PRNGKey(3))
    clean_state, clean = step(state, zeros_action(env))
    qvel = state.data.qvel.at[1, 0].set(jnp.nan)
    bad_state, bad = step(state._replace(data=state.data.replace(qvel=qvel)), zeros_action(env))
    assert bad.nan_E.tolist() == [False, True, False, False]
    assert bad.failure_E.tolist() == [False, True, False, False]
    assert float(bad.reward_E[1]) == 0.0
    assert np.all(np.isfinite(np.asarray(bad.final_obs_critic_EC)))
    assert np.all(np.isfinite(np.asarray(bad_state.data.qvel)))
    assert int(bad_state.step_E[1]) == 0
    others = [0, 2, 3]
    np.testing.assert_array_equal(np.asarray(bad.reward_E)[others], np.asarray(clean.reward_E)[others])
    np.testing.assert_array_equal(
        np.asarray(bad_state.data.qpos)[others], np.asarray(clean_state.data.qpos)[others]
    )


def test_randomized_fields_differ_per_env_and_are_redrawn_on_reset(short_env):
    env, reset, step = short_env
    state = reset(jax.random.PRNGKey(4))
    default_mass = np.asarray(env.mj_model.body_mass)
    mass = np.asarray(state.fields_E["body_mass"])
    assert mass.shape == (NUM_ENVS, env.mj_model.nbody)
    ratio = mass[:, 2] / default_mass[2]  # body_mass["pole_1"] *= uniform(0.8, 1.2)
    assert np.all((ratio >= 0.8) & (ratio <= 1.2))
    assert len(np.unique(ratio)) == NUM_ENVS
    np.testing.assert_array_equal(mass[:, 1], default_mass[1])  # the cart is not randomized
    damping = np.asarray(state.fields_E["dof_damping"])
    assert len(np.unique(damping[:, 0])) == NUM_ENVS
    for _ in range(5):  # one full episode: every env is reset and redraws its fields
        state, _ = step(state, zeros_action(env))
    assert not np.any(np.asarray(state.fields_E["body_mass"])[:, 2] == mass[:, 2])


def test_each_env_steps_its_own_randomized_model(short_env):
    env, reset, step = short_env
    state = reset(jax.random.PRNGKey(5))
    # same state in every env, very different slider damping: the moving cart slows down in env 1 only
    qvel = jnp.zeros_like(state.data.qvel).at[:, 0].set(1.0)
    data = state.data.replace(qpos=jnp.zeros_like(state.data.qpos), qvel=qvel)
    damping = state.fields_E["dof_damping"].at[:, 0].set(jnp.array([0.0, 1000.0, 0.0, 0.0]))
    state = state._replace(data=data, fields_E={**state.fields_E, "dof_damping": damping})
    state, _ = step(state, zeros_action(env))
    cart_vel = np.asarray(state.data.qvel)[:, 0]
    assert cart_vel[0] > 0.95 and cart_vel[2] > 0.95
    assert cart_vel[1] < 0.5


def test_shipped_cartpole_resets_rewards_and_terminates_as_written(shipped_env):
    """tasks/cartpole.ksim through the compiler and the env: reset ranges, the balance reward, `fell`."""
    env, reset, step = shipped_env
    state = reset(jax.random.PRNGKey(6))
    qpos = np.asarray(state.data.qpos)
    assert np.all(np.abs(qpos[:, 0]) <= 0.1 + 1e-6)  # joint_pos["slider"] = uniform(-0.1, 0.1)
    assert np.all(np.abs(qpos[:, 1]) <= 0.034 + 1e-6)  # joint_pos["hinge_1"] = uniform(-0.034, 0.034)
    assert len(np.unique(qpos[:, 1])) == NUM_ENVS
    np.testing.assert_array_equal(np.asarray(state.obs_actor_EO), np.asarray(state.obs_critic_EC))  # no noise

    # at rest, centred: env 0 upright, env 1 at 45 deg (cos < 0.75: fell), envs 2 and 3 at 0.5 rad
    angle_E = jnp.array([0.0, jnp.pi / 4, 0.5, -0.5])
    data = state.data.replace(
        qpos=jnp.zeros_like(state.data.qpos).at[:, 1].set(angle_E), qvel=jnp.zeros_like(state.data.qvel)
    )
    _, out = step(state._replace(data=data), zeros_action(env))
    assert out.failure_E.tolist() == [False, True, False, False]
    assert out.terminations_EK[:, 0].tolist() == [False, True, False, False]
    reward_E = np.asarray(out.reward_E)
    # upright * centered * small_control * small_velocity: only `upright` = (cos + 1) / 2 is below 1 here
    np.testing.assert_allclose(reward_E[[0, 2, 3]], (np.cos([0.0, 0.5, -0.5]) + 1) / 2, atol=5e-3)


def test_position_actuators_become_pd_actuators():
    spec, _, path = cartpole_task()
    act = ActuatorSpec(
        kind="position", joint_qpos_adr=(0,), joint_dof_adr=(0,), kp=(50.0,), kd=(3.0,),
        action_scale=0.5, default_pos=(0.2,),
    )
    spec = dataclasses.replace(spec, actuators=act)
    model = load_model(spec, path)
    assert model.actuator_gaintype[0] == mujoco.mjtGain.mjGAIN_FIXED
    assert model.actuator_gainprm[0, 0] == 50.0
    assert model.actuator_biastype[0] == mujoco.mjtBias.mjBIAS_AFFINE
    np.testing.assert_allclose(model.actuator_biasprm[0, :3], [0.0, -50.0, -3.0])
    np.testing.assert_allclose(model.actuator_gear[0, 0], 1.0)
    assert model.actuator_forcelimited[0] and not model.actuator_ctrllimited[0]
    np.testing.assert_allclose(model.actuator_forcerange[0], [-10.0, 10.0])  # ctrlrange ±1 * gear 10
    # the PD law drives the cart to the target default_pos + action_scale * action
    actuators = ActuatorModel.from_spec(spec, model)
    data = mujoco.MjData(model)
    data.ctrl[:] = np.asarray(actuators.target(jnp.array([0.6]), jnp.zeros(1)))
    np.testing.assert_allclose(data.ctrl, [0.2 + 0.5 * 0.6], rtol=1e-6)
    for _ in range(1000):
        mujoco.mj_step(model, data)
    assert abs(data.qpos[0] - 0.5) < 0.05


@pytest.mark.parametrize(
    "kind, gain, bias, action, law",
    [
        # velocity: MuJoCo's velocity actuator, ctrl = target velocity = action_scale * a
        ("velocity", 3.0, [0.0, 0.0, -3.0], [0.6], lambda a, q, qd: 3.0 * (0.5 * a[0] - qd)),
        # position_velocity: gain 1, ctrl = kp * target + kd * target_vel (the feed-forward torque)
        ("position_velocity", 1.0, [0.0, -50.0, -3.0], [0.6, -0.4],
         lambda a, q, qd: 50.0 * (0.2 + 0.5 * a[0] - q) + 3.0 * (2.0 * a[1] - qd)),
    ],
)  # fmt: skip
def test_velocity_actuators_become_mujoco_feedback_actuators(kind, gain, bias, action, law):
    spec, _, path = cartpole_task()
    act = ActuatorSpec(
        kind=kind, joint_qpos_adr=(0,), joint_dof_adr=(0,), kp=(50.0,) if kind != "velocity" else (), kd=(3.0,),
        action_scale=0.5, velocity_scale=2.0, default_pos=(0.2,) if kind != "velocity" else (),
    )  # fmt: skip
    spec = dataclasses.replace(spec, actuators=act, action_size=len(action))
    model = load_model(spec, path)
    assert model.actuator_gainprm[0, 0] == gain and model.actuator_biastype[0] == mujoco.mjtBias.mjBIAS_AFFINE
    np.testing.assert_allclose(model.actuator_biasprm[0, :3], bias)
    assert model.actuator_forcelimited[0] and not model.actuator_ctrllimited[0]
    np.testing.assert_allclose(model.actuator_forcerange[0], [-10.0, 10.0])  # ctrlrange ±1 * gear 10
    actuators = ActuatorModel.from_spec(spec, model)
    data = mujoco.MjData(model)
    states = [(0.1, 0.4), (-0.3, -1.0), (0.0, 5.0)]
    forces = [law(action, q, qd) for q, qd in states]
    assert any(abs(f) < 10 for f in forces) and any(abs(f) > 10 for f in forces)  # within the limit, and beyond
    for q, qd in states:
        data.qpos[0], data.qvel[0] = q, qd
        data.ctrl[:] = np.asarray(actuators.target(jnp.asarray(action), jnp.zeros(1)))
        mujoco.mj_forward(model, data)
        np.testing.assert_allclose(data.actuator_force[0], np.clip(law(action, q, qd), -10, 10), rtol=1e-5)


def test_latency_holds_the_previous_target_for_the_first_substeps():
    spec, _, path = cartpole_task()
    spec = dataclasses.replace(
        spec,
        physics=dataclasses.replace(spec.physics, dt=0.002),  # 5 substeps of the 10 ms control step
        actuators=dataclasses.replace(spec.actuators, latency=(0.004, 0.004)),
    )
    actuators = ActuatorModel.from_spec(spec, load_model(spec, path))
    latency, _ = actuators.draw_episode(JaxDraws(jax.random.PRNGKey(0)))
    prev, new = jnp.array([-1.0]), jnp.array([1.0])
    ctrl = [float(actuators.substep_ctrl(prev, new, latency, i)[0]) for i in range(5)]
    assert ctrl == [-1.0, -1.0, 1.0, 1.0, 1.0]  # substeps starting at 0 and 2 ms are before 4 ms
    assert float(actuators.target(jnp.array([3.0]), jnp.zeros(1))[0]) == 1.0  # actions clip to [-1, 1]


def test_default_pose_prefers_keyframe_zero(tmp_path):
    xml = tmp_path / "key.xml"
    xml.write_text(
        '<mujoco><worldbody><body><joint name="j" type="hinge"/><geom size="0.1"/></body></worldbody>'
        '<keyframe><key qpos="0.7"/></keyframe></mujoco>'
    )
    qpos, qvel = default_pose(mujoco.MjModel.from_xml_path(str(xml)))
    np.testing.assert_allclose(qpos, [0.7])
    np.testing.assert_array_equal(qvel, [0.0])
    qpos, _ = default_pose(mujoco.MjModel.from_xml_path(str(MODEL_PATH)))
    np.testing.assert_array_equal(qpos, [0.0, 0.0])


def test_load_model_reports_a_missing_file_as_a_user_error(tmp_path):
    spec, _, _ = cartpole_task()
    with pytest.raises(KsimError, match="cannot load model"):
        load_model(spec, tmp_path / "nope.xml")


CONTACT_SCENE = """
<mujoco>
  <option timestep="0.005"/>
  <worldbody>
    <geom name="floor" type="plane" size="5 5 0.1"/>
    <body name="box" pos="0 0 0.1">
      <freejoint/>
      <geom name="box" type="box" size="0.1 0.1 0.1" mass="2"/>
    </body>
    <body name="ball" pos="1 0 3">
      <freejoint/>
      <geom name="ball" type="sphere" size="0.1" mass="1"/>
    </body>
  </worldbody>
</mujoco>
"""


def test_contact_queries_report_touching_pairs_and_their_normal_force(tmp_path):
    xml = tmp_path / "scene.xml"
    xml.write_text(CONTACT_SCENE)
    model = mujoco.MjModel.from_xml_path(str(xml))
    floor, box, ball = (mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, n) for n in ("floor", "box", "ball"))
    queries = [{"geoms_a": [box], "geoms_b": [floor]}, {"geoms_a": [floor], "geoms_b": [ball]}]
    spec, kernels = probe_task(
        str(xml), phys_inputs=("qpos", "xmat", "contact", "contact_force", "time"), contact_queries=queries
    )
    env = MjxEnv(spec, kernels, xml, num_envs=2)
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    for _ in range(100):  # 0.5 s: the box settles, the ball is still falling
        state, out = step(state, jnp.zeros((2, 0)))
    obs = split_obs(spec, np.asarray(state.obs_critic_EC))
    np.testing.assert_array_equal(obs["contact"], [[1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(obs["contact_force"][:, 0], 2 * 9.81, rtol=0.05)
    assert np.all(obs["contact_force"][:, 1] == 0)
    np.testing.assert_allclose(obs["time"], 0.5, atol=1e-4)
    assert obs["xmat"].shape == (2, 9 * model.nbody)
    np.testing.assert_allclose(obs["xmat"][:, 9:18], np.tile(np.eye(3).ravel(), (2, 1)), atol=1e-3)


# --------------------------------------------------------------------------- curriculum


def test_episode_length_curriculum_moves_up_and_down_after_min_steps():
    cur = Curriculum.from_spec({"kind": "episode_length", "levels": 4, "up": 0.8, "down": 0.3, "min_steps": 10})
    level = np.array([0.0, 0.5, 0.5, 0.5])
    at_level = np.array([20, 20, 20, 3])
    done = np.array([True, True, True, True])
    length = np.array([90, 50, 10, 95])
    level, at_level = cur.on_step(level, at_level, done, length, 100, xp=np)
    # env 0, 90% of the limit: up; env 1, 50%: stays; env 2, 10%: down; env 3: too few steps at its level
    np.testing.assert_allclose(level, [0.25, 0.5, 0.25, 0.5])
    np.testing.assert_array_equal(at_level, [0, 21, 0, 4])
    top, _ = cur.on_step(np.array([1.0]), np.array([50]), np.array([True]), np.array([100]), 100, xp=np)
    assert top.tolist() == [1.0]  # clipped at the top
    same, _ = cur.on_step(np.array([0.5]), np.array([50]), np.array([False]), np.array([100]), 100, xp=np)
    assert same.tolist() == [0.5]  # only finished episodes move the level
    jl, _ = cur.on_step(jnp.array([0.0]), jnp.array([20]), jnp.array([True]), jnp.array([90]), 100)
    assert float(jl[0]) == 0.25  # same result with jax.numpy


def test_linear_and_constant_curricula():
    lin = Curriculum.from_spec({"kind": "linear", "step": 0.25, "every": 10})
    assert lin.initial_level == 0.0
    assert lin.at_iteration(np.zeros(2), 9, xp=np).tolist() == [0.0, 0.0]
    assert lin.at_iteration(np.zeros(2), 25, xp=np).tolist() == [0.5, 0.5]
    assert lin.at_iteration(np.zeros(2), 1000, xp=np).tolist() == [1.0, 1.0]
    const = Curriculum.from_spec({"kind": "constant", "value": 0.3})
    assert const.initial_level == 0.3
    assert const.at_iteration(np.full(2, 0.3), 1000, xp=np).tolist() == [0.3, 0.3]
    with pytest.raises(KsimError, match="unknown curriculum"):
        Curriculum.from_spec({"kind": "exponential"})


def test_episode_length_curriculum_runs_inside_the_env(shipped_env):
    env, reset, step = shipped_env
    state = reset(jax.random.PRNGKey(0))
    assert np.asarray(state.level_E).tolist() == [0.0] * NUM_ENVS
    for _ in range(6):  # two full-length (truncated) episodes: two levels up
        state, _ = step(state, zeros_action(env))
    np.testing.assert_allclose(np.asarray(state.level_E), [0.2] * NUM_ENVS, atol=1e-6)
