"""The C-MuJoCo engine: native stepping helpers, the batched env and the host collector.

Runs on the hand-written numba cartpole kernels (tests/fixtures/cartpole_kernel_numba.py)
until the compiler's numba backend exists.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from ksimdsl.abi import TaskSpec
from ksimdsl.errors import InternalCompilerError, KsimError
from ksimdsl.runtime.rl import distributions, normalize, ppo
from ksimdsl.runtime import engine as engines
from ksimdsl.runtime.training.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint, spec_hash
from ksimdsl.runtime.engine.actuators import ActuatorModel
from ksimdsl.runtime.engine.loop import run_episodes
from ksimdsl.runtime.engine.mujoco import cstep
from ksimdsl.runtime.engine.mujoco.collect import MujocoCollector
from ksimdsl.runtime.engine.mujoco.env import MujocoEnv, _Actuation
from ksimdsl.runtime.engine.mujoco.numba_policy import ACTIVATIONS, HostActor
from tests.fixtures import cartpole_kernel_numba as KN
from tests.fixtures.cartpole import MODEL_PATH

SPEC = TaskSpec.from_dict(KN.SPEC)
REPO = Path(__file__).resolve().parents[1]


def make_env(spec: TaskSpec = SPEC, kernels=KN, *, num_envs: int = 6, threads: int = 2, seed: int = 0) -> MujocoEnv:
    env = MujocoEnv(spec, kernels, MODEL_PATH, num_envs=num_envs, threads=threads, seed=seed)
    env.reset_all()
    return env


# --------------------------------------------------------------------------- cstep


def test_struct_layout_matches_the_bindings():
    layout = cstep.struct_layout()
    assert layout.contact_size > layout.contact_geom > layout.contact_dist >= 0


BALLS_XML = """
<mujoco>
  <option timestep="0.005"/>
  <worldbody>
    <geom name="floor" type="plane" size="5 5 0.1"/>
    <body name="a" pos="0 0 0.099"><freejoint/><geom name="ball_a" type="sphere" size="0.1" mass="2"/></body>
    <body name="b" pos="1 0 0.5"><freejoint/><geom name="ball_b" type="sphere" size="0.1" mass="1"/></body>
    <body name="c" pos="2 0 0.09"><freejoint/><geom name="box_c" type="box" size="0.1 0.1 0.1" mass="1"/></body>
  </worldbody>
</mujoco>
"""


def test_contact_queries_match_python_contact_list():
    model = mujoco.MjModel.from_xml_string(BALLS_XML)
    data = mujoco.MjData(model)
    for _ in range(40):
        mujoco.mj_step(model, data)
    floor, ball_a, ball_b, box_c = (
        mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, n) for n in ("floor", "ball_a", "ball_b", "box_c")
    )
    queries = [([ball_a], [floor]), ([ball_b], [floor]), ([floor], [box_c]), ([ball_a, box_c], [floor])]
    in_a = np.zeros((len(queries), model.ngeom), np.uint8)
    in_b = np.zeros_like(in_a)
    for c, (ga, gb) in enumerate(queries):
        in_a[c, ga] = 1
        in_b[c, gb] = 1
    contact_EC = np.full((1, len(queries)), -1.0)
    force_EC = np.full((1, len(queries)), -1.0)
    qpos_EQ = np.zeros((1, model.nq))
    time_E = np.zeros(1)
    pointers = cstep.EnvPointers.of([model], [data])
    gather = cstep.Gather(
        cstep.field_addresses([data], ("qpos",)), np.array([model.nq], np.int64),
        np.array([qpos_EQ.ctypes.data], np.uint64), time_E,
    )  # fmt: skip
    cstep.refresh(np.zeros(1, np.int64), 0, pointers, gather, cstep.ContactTables(in_a, in_b, contact_EC, force_EC, True))
    np.testing.assert_array_equal(qpos_EQ[0], data.qpos)
    assert time_E[0] == pytest.approx(40 * 0.005)

    expected_contact = np.zeros(len(queries))
    expected_force = np.zeros(len(queries))
    wrench = np.zeros(6)
    for i in range(data.ncon):
        con = data.contact[i]
        if not con.dist < 0:
            continue
        g1, g2 = int(con.geom[0]), int(con.geom[1])
        mujoco.mj_contactForce(model, data, i, wrench)
        for c, (ga, gb) in enumerate(queries):
            if (g1 in ga and g2 in gb) or (g2 in ga and g1 in gb):
                expected_contact[c] = 1.0
                expected_force[c] += wrench[0]
    assert expected_contact.tolist() == [1.0, 0.0, 1.0, 1.0]  # ball b is still falling
    np.testing.assert_array_equal(contact_EC[0], expected_contact)
    np.testing.assert_allclose(force_EC[0], expected_force, rtol=1e-12)
    # a resting 2 kg ball pushes on the floor with about its weight
    assert force_EC[0, 0] == pytest.approx(2 * 9.81, rel=0.05)
    np.testing.assert_allclose(force_EC[0, 3], force_EC[0, 0] + force_EC[0, 2])


_CACHE_PROBE = """
import json, sys
import numpy as np
from ksimdsl.abi import TaskSpec
from ksimdsl.codegen import compile_task
from ksimdsl.runtime.engine.mujoco import cstep
from ksimdsl.runtime.engine.mujoco.env import MujocoEnv
from ksimdsl.runtime.loader import load_module

task = compile_task(sys.argv[1], backend="numba")
kernels = load_module(task.source, "cartpole:numba")
spec = TaskSpec.from_dict(task.spec)
env = MujocoEnv(spec, kernels, sys.argv[2], num_envs=2, threads=1)
env.reset_all()
env.step(np.zeros((2, spec.action_size)))
fns = {"reset": kernels.reset, "observe": kernels.observe, "step": kernels.step, "advance": cstep.advance}
print(json.dumps({name: [len(fn.stats.cache_hits), len(fn.stats.cache_misses)] for name, fn in fns.items()}))
"""


def test_compiled_kernels_are_cached_on_disk(tmp_path):
    """A second process finds every numba function (generated kernels and cstep) in the disk cache."""
    env = dict(os.environ, KSIMDSL_CACHE_DIR=str(tmp_path / "ksimdsl"), NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    task = str(REPO / "tasks" / "cartpole.ksim")
    runs = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", _CACHE_PROBE, task, str(MODEL_PATH)],
            env=env, capture_output=True, text=True, timeout=300, cwd=REPO,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert all(misses > 0 for hits, misses in first.values()), first
    assert all(hits > 0 and misses == 0 for hits, misses in second.values()), second
    assert list((tmp_path / "ksimdsl").rglob("*.py")), "generated source not written to KSIMDSL_CACHE_DIR"


# --------------------------------------------------------------------------- env


def test_reset_observes_the_physics_state_and_randomizes_each_env_model():
    env = make_env()
    qpos = np.stack([d.qpos for d in env.datas])
    qvel = np.stack([d.qvel for d in env.datas])
    clean = np.stack([qpos[:, 0], np.cos(qpos[:, 1]), np.sin(qpos[:, 1]), qvel[:, 0], qvel[:, 1]], axis=1)
    np.testing.assert_allclose(env.obs_critic_EC, clean, rtol=1e-6, atol=1e-7)
    assert np.abs(env.obs_actor_EO - clean).max() > 0  # actor observations are noisy
    assert np.abs(qpos).max() <= 0.1 and np.unique(qpos[:, 1]).size == env.num_envs
    base = env.mj_model.body_mass[2]
    masses = np.array([env.model_of(e).body_mass[2] for e in range(env.num_envs)])
    assert np.all((masses >= 0.8 * base) & (masses <= 1.2 * base)) and np.unique(masses).size == env.num_envs
    assert len(env.models) == env.threads and len({x._address for x in env.models}) == env.threads  # one a thread
    assert np.all(env.mem_EM == [0.0, 1.0])


def test_step_is_mujoco_physics_plus_the_kernel():
    """One engine step equals mj_step on a copy of the env's data with the same ctrl."""
    env = make_env()
    twins = [copy.copy(d) for d in env.datas]
    action = np.linspace(-2.0, 2.0, env.num_envs, dtype=np.float32)[:, None]  # beyond [-1, 1]: clipped
    out = env.step(action)
    for e, twin in enumerate(twins):
        twin.ctrl[:] = np.clip(action[e], -1, 1)
        mujoco.mj_step(env.model_of(e), twin)
        np.testing.assert_array_equal(env.datas[e].qpos, twin.qpos)
        assert env.phys["qpos"][e].tolist() == twin.qpos.tolist()
    qpos, qvel = env.phys["qpos"], env.phys["qvel"]
    clean = np.stack([qpos[:, 0], np.cos(qpos[:, 1]), np.sin(qpos[:, 1]), qvel[:, 0], qvel[:, 1]], axis=1)
    np.testing.assert_allclose(out.final_obs_critic_EC, clean, rtol=1e-6, atol=1e-7)
    a = np.clip(action[:, 0], -1, 1)
    expected = (np.cos(qpos[:, 1]) + 1) / 2 + 0.5 * np.exp(-qpos[:, 0] ** 2 / 0.5) - 0.01 * a**2  # first step: no rate
    np.testing.assert_allclose(out.reward_E, expected, rtol=1e-5)
    np.testing.assert_allclose(env.mem_EM[:, 0], a)
    assert np.all(env.mem_EM[:, 1] == 0)


def test_threads_do_not_change_results():
    runs = []
    for threads in (1, 2, 3):
        env = make_env(num_envs=7, threads=threads, seed=3)
        rng = np.random.default_rng(0)
        rewards = [env.step(rng.uniform(-1, 1, (7, 1))).reward_E.copy() for _ in range(60)]
        runs.append((np.array(rewards), env.obs_actor_EO.copy()))
    for rewards, obs in runs[1:]:
        np.testing.assert_array_equal(rewards, runs[0][0])
        np.testing.assert_array_equal(obs, runs[0][1])


def test_failure_truncation_and_auto_reset():
    spec = SPEC.with_overrides(episode_steps=50)
    env = make_env(spec, num_envs=8)
    rng = np.random.default_rng(1)
    seen_failure = seen_truncation = False
    for _ in range(120):
        steps_before = env.step_E.copy()
        action = np.where(np.arange(8)[:, None] < 4, 1.0, rng.uniform(-1, 1, (8, 1)))  # 4 envs get pushed over
        out = env.step(action)
        fin = out.final_obs_critic_EC
        fell = fin[:, 1] < 0.8
        off = np.abs(fin[:, 0]) > 1.8
        np.testing.assert_array_equal(out.terminations_EK, np.stack([fell, off], axis=1))
        np.testing.assert_array_equal(out.failure_E, fell | off)
        np.testing.assert_array_equal(out.truncated_E, (steps_before + 1 >= 50) & ~(fell | off))
        np.testing.assert_array_equal(out.done_E, out.failure_E | out.truncated_E)
        np.testing.assert_array_equal(out.episode_length_E, steps_before + 1)
        # done envs start over: step counter 0, fresh observation of a near-upright pole
        assert np.all(env.step_E[out.done_E] == 0) and np.all(env.step_E[~out.done_E] == steps_before[~out.done_E] + 1)
        assert np.all(env.obs_critic_EC[out.done_E, 1] > np.cos(0.11))
        assert np.all(env.mem_EM[out.done_E] == [0.0, 1.0])
        seen_failure |= out.failure_E.any()
        seen_truncation |= out.truncated_E.any()
    assert seen_failure and seen_truncation


def test_success_termination_bootstraps():
    spec = SPEC.with_overrides(success=(False, True))  # out_of_bounds becomes a success
    env = make_env(spec, num_envs=4)
    out = None
    for _ in range(200):
        out = env.step(np.ones((4, 1)))  # push the cart off the rail
        if out.done_E.any():
            break
    assert out is not None and out.done_E.any()
    hit = out.terminations_EK[:, 1]
    np.testing.assert_array_equal(out.success_E, hit & ~out.terminations_EK[:, 0])
    assert not np.any(out.failure_E & out.success_E)


def test_episode_return_accumulates_rewards():
    env = make_env(num_envs=3)
    total = np.zeros(3)
    for _ in range(400):
        out = env.step(np.zeros((3, 1)))
        total += out.reward_E
        if out.done_E.any():
            e = int(np.flatnonzero(out.done_E)[0])
            assert out.episode_return_E[e] == pytest.approx(total[e], rel=1e-5)
            return
    pytest.fail("no episode ended")


def test_diverged_state_is_a_nan_reset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = make_env(num_envs=3)
    env.datas[1].qvel[:] = np.nan
    out = env.step(np.zeros((3, 1)))
    assert out.nan_E.tolist() == [False, True, False]
    assert out.failure_E[1] and out.done_E[1] and out.reward_E[1] == 0.0
    assert not out.terminations_EK[1].any()
    assert np.isfinite(out.final_obs_actor_EO).all() and np.isfinite(env.obs_actor_EO).all()
    assert env.step_E[1] == 0 and np.isfinite(env.datas[1].qvel).all()
    out = env.step(np.zeros((3, 1)))
    assert not out.nan_E.any()
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()  # MuJoCo's own warning printout is off


def test_kernel_argument_names_are_checked():
    names = dict(KN.SPEC["numba_args"]) | {"step": ("qpos_EQ", "gizmo_E")}
    spec = SPEC.with_overrides(numba_args=names)
    with pytest.raises(InternalCompilerError, match="gizmo_E"):
        MujocoEnv(spec, KN, MODEL_PATH, num_envs=2)
    with pytest.raises(KsimError, match="backend numba"):
        MujocoEnv(SPEC.with_overrides(numba_args={}), KN, MODEL_PATH, num_envs=2)


def test_site_xpos_time_and_writes_phys_reach_the_kernel():
    """Extra physics inputs are gathered per env, and `writes_phys` writes qpos/qvel back."""
    seen = {}

    def step(qpos_EQ, qvel_EV, site_xpos_ES3, time_E, action_EA, level_E, mem_EM, rand_n_EN, rand_u_EU,
             actor_EO, critic_EC, reward_terms_ER, reward_weights_ER, terminations_EK, mem_out_EM,
             qpos_out_EQ, qvel_out_EV):  # fmt: skip
        KN.step(qpos_EQ, qvel_EV, action_EA, level_E, mem_EM, rand_n_EN, rand_u_EU, actor_EO, critic_EC,
                reward_terms_ER, reward_weights_ER, terminations_EK, mem_out_EM)  # fmt: skip
        seen.setdefault("site", []).append(site_xpos_ES3.copy())
        seen.setdefault("time", []).append(time_E.copy())
        qpos_out_EQ[:] = qpos_EQ
        qvel_out_EV[:] = qvel_EV
        qvel_out_EV[:, 0] = 0.5  # an event that pushes the cart

    names = dict(KN.SPEC["numba_args"]) | {
        "step": ("qpos_EQ", "qvel_EV", "site_xpos_ES3", "time_E") + tuple(KN.SPEC["numba_args"]["step"][2:])
        + ("qpos_out_EQ", "qvel_out_EV")
    }  # fmt: skip
    spec = SPEC.with_overrides(numba_args=names, phys_inputs=("qpos", "qvel", "site_xpos", "time"), writes_phys=True)
    kernels = types.SimpleNamespace(reset=KN.reset, observe=KN.observe, step=step)
    env = make_env(spec, kernels, num_envs=4, threads=1)
    env.step(np.zeros((4, 1)))
    env.step(np.zeros((4, 1)))
    site = seen["site"][-1]
    assert site.shape == (4, env.mj_model.nsite, 3)
    np.testing.assert_array_equal(site, np.stack([d.site_xpos for d in env.datas]))
    np.testing.assert_allclose(seen["time"][-1], [0.02] * 4)
    assert np.all([d.qvel[0] == 0.5 for d in env.datas])


# --------------------------------------------------------------------------- actuators


@pytest.mark.parametrize("kind", ["position", "velocity", "position_velocity"])
def test_actuation_matches_the_jax_actuator_model(kind):
    A = 2 if kind == "position_velocity" else 1
    spec = SPEC.with_overrides(
        actuators=SPEC.actuators.__class__(
            kind=kind, kp=(30.0,) if kind != "velocity" else (), kd=(2.0,), action_scale=0.5, velocity_scale=1.5,
            default_pos=(0.2,) if kind != "velocity" else (), latency=(0.004, 0.016),
            zero_offset={"dist": "uniform", "params": [0.05]} if kind != "velocity" else None,
        ),
        action_size=A,
        physics=dataclasses.replace(SPEC.physics, dt=0.005, ctrl_dt=0.02),  # 4 substeps
    )  # fmt: skip
    model = mujoco.MjModel.from_xml_path(str(MODEL_PATH))
    jax_model = ActuatorModel.from_spec(spec, model)
    actuation = _Actuation(jax_model)
    rng = np.random.default_rng(0)
    E = 64
    latency_E, zero_EU = actuation.draw_episode(rng, E)
    assert np.all((latency_E >= 0.004) & (latency_E <= 0.016)) and np.all(np.abs(zero_EU) <= 0.05)
    assert np.any(zero_EU != 0) == (kind != "velocity")
    raw_EA = rng.uniform(-1.5, 1.5, (E, A)).astype(np.float32)
    prev_EU = rng.normal(size=(E, 1))
    prev_before_EU = prev_EU.copy()
    action_EA = np.zeros((E, A))
    ctrl_ESU = np.zeros((E, 4, 1))
    actuation(0, E, raw_EA, action_EA, zero_EU, latency_E, prev_EU, ctrl_ESU)
    np.testing.assert_array_equal(action_EA, np.clip(raw_EA, -1, 1))
    for e in range(E):
        target = jax_model.target(jnp.asarray(raw_EA[e]), jnp.asarray(zero_EU[e], jnp.float32))
        np.testing.assert_allclose(prev_EU[e], np.asarray(target), rtol=1e-6, atol=1e-6)
        for s in range(4):
            want = jax_model.substep_ctrl(jnp.asarray(prev_before_EU[e]), target, jnp.float32(latency_E[e]), s)
            np.testing.assert_allclose(ctrl_ESU[e, s], np.asarray(want), rtol=1e-6, atol=1e-6)
    assert (ctrl_ESU[:, 0] == prev_before_EU).all()  # every latency is at least one substep
    assert (ctrl_ESU[:, 2] == prev_before_EU).any() and (ctrl_ESU[:, 2] == prev_EU).any()
    rest = actuation.rest_target(zero_EU[:3])
    for e in range(3):
        np.testing.assert_allclose(rest[e], np.asarray(jax_model.rest_target(jnp.asarray(zero_EU[e]))), rtol=1e-6)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_numba_actor_matches_the_jax_actor(activation):
    spec = SPEC.with_overrides(policy=dataclasses.replace(SPEC.policy, activation=activation, hidden=(16, 8)))
    state = ppo.init_ppo_from_spec(spec, key=jax.random.PRNGKey(3))
    rng = np.random.default_rng(0)
    obs_EO = rng.normal(size=(10, spec.obs_actor_size)).astype(np.float32) * 3
    # non-trivial weights and normalizer: perturb the output layer and fold in a batch of observations
    model = eqx.tree_at(lambda m: m.actor.net.layers[-1].weight, state.model,
                        jnp.asarray(rng.normal(size=state.model.actor.net.layers[-1].weight.shape), jnp.float32))  # fmt: skip
    norm = normalize.update(state.obs_norm_actor, jnp.asarray(rng.normal(size=(50, spec.obs_actor_size)) * 2 + 1))
    actor = HostActor.from_model(model, norm)
    eps_EA = rng.normal(size=(10, spec.action_size)).astype(np.float32)
    action_EA = np.zeros((10, spec.action_size), np.float32)
    log_prob_E = np.zeros(10, np.float32)
    actor.act(0, 10, obs_EO, eps_EA, action_EA, log_prob_E)
    dist, _ = jax.vmap(model.actor, in_axes=(0, None))(normalize.normalize(norm, obs_EO), jnp.zeros(0))
    np.testing.assert_allclose(action_EA, np.asarray(dist.mean_A + dist.std_A * eps_EA), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(log_prob_E, np.asarray(distributions.log_prob(dist, action_EA)), rtol=1e-4, atol=1e-4)
    assert HostActor.supports(model)
    mixture = ppo.init_ppo_from_spec(spec.with_overrides(policy=dataclasses.replace(spec.policy, dist="mixture", mixtures=3)),
                                     key=jax.random.PRNGKey(0))  # fmt: skip
    assert HostActor.supports(mixture.model)
    gru = ppo.init_ppo_from_spec(spec.with_overrides(policy=dataclasses.replace(spec.policy, kind="gru", hidden=(8,))),
                                 key=jax.random.PRNGKey(0))  # fmt: skip
    assert not HostActor.supports(gru.model)


def test_numba_mixture_actor_matches_the_jax_actor():
    spec = SPEC.with_overrides(
        policy=dataclasses.replace(SPEC.policy, hidden=(16,), dist="mixture", mixtures=3, min_std=0.05, max_std=2.0)
    )
    state = ppo.init_ppo_from_spec(spec, key=jax.random.PRNGKey(5))
    rng = np.random.default_rng(1)
    E, A = 400, spec.action_size
    obs_EO = rng.normal(size=(E, spec.obs_actor_size)).astype(np.float32) * 3
    # spread-out logits, means and stds, so every component is picked and the stds hit both clip bounds
    last = state.model.actor.net.layers[-1]
    model = eqx.tree_at(lambda m: (m.actor.net.layers[-1].weight, m.actor.net.layers[-1].bias), state.model,
                        (jnp.asarray(rng.normal(size=last.weight.shape), jnp.float32),
                         jnp.asarray(rng.normal(size=last.bias.shape) * 2, jnp.float32)))  # fmt: skip
    norm = normalize.update(state.obs_norm_actor, jnp.asarray(rng.normal(size=(50, spec.obs_actor_size))))
    actor = HostActor.from_model(model, norm)
    eps_EN = actor.draw_noise(rng, E)
    assert eps_EN.shape == (E, A + 1) and (0 <= eps_EN[:, -1]).all() and (eps_EN[:, -1] < 1).all()
    action_EA = np.zeros((E, A), np.float32)
    log_prob_E = np.zeros(E, np.float32)
    actor.act(0, E, obs_EO, eps_EN, action_EA, log_prob_E)

    dist, _ = jax.vmap(model.actor, in_axes=(0, None))(normalize.normalize(norm, obs_EO), jnp.zeros(0))
    # the component each env drew: inverse CDF of its weights at the uniform draw
    cdf_EK = np.cumsum(np.asarray(jax.nn.softmax(dist.logits_K, axis=-1)), axis=-1)
    k_E = np.minimum((eps_EN[:, -1:] >= cdf_EK).sum(axis=-1), 2)
    assert len(set(k_E.tolist())) == 3
    mean_EA = np.take_along_axis(np.asarray(dist.mean_KA), k_E[:, None, None], axis=1)[:, 0]
    std_EA = np.take_along_axis(np.asarray(dist.std_KA), k_E[:, None, None], axis=1)[:, 0]
    np.testing.assert_allclose(action_EA, mean_EA + std_EA * eps_EN[:, :A], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(log_prob_E, np.asarray(distributions.log_prob(dist, action_EA)), rtol=1e-4, atol=1e-3)


# --------------------------------------------------------------------------- collector


@pytest.mark.parametrize("numba_policy", [True, False], ids=["numba-actor", "jax-actor"])
def test_collector_trajectory_and_stats(numba_policy):
    spec = SPEC.with_overrides(
        train=dataclasses.replace(SPEC.train, rollout=40, num_envs=6, minibatches=2), episode_steps=15
    )
    collector = MujocoCollector(spec, KN, MODEL_PATH, threads=2, numba_policy=numba_policy)
    key = jax.random.PRNGKey(0)
    state = ppo.init_ppo_from_spec(spec, key=key)
    cstate = collector.init_for(state, key=key)
    first_obs = collector.env.obs_actor_EO.copy()
    cstate, traj, stats = collector.collect(state, cstate, key=jax.random.PRNGKey(1))
    T, E = 40, 6
    assert traj.obs_actor_TEO.shape == (T, E, 5) and traj.action_TEA.shape == (T, E, 1)
    np.testing.assert_array_equal(np.asarray(traj.obs_actor_TEO[0]), first_obs)
    assert bool(traj.reset_TE[0].all())
    np.testing.assert_array_equal(np.asarray(traj.reset_TE[1:]), np.asarray(traj.done_TE[:-1]))
    assert float(stats.env_steps) == T * E
    assert float(stats.reward_sum) == pytest.approx(float(jnp.sum(traj.reward_TE)), rel=1e-5)
    assert float(stats.episodes) == float(jnp.sum(traj.done_TE)) > 0
    assert float(stats.failures) == float(jnp.sum(traj.failure_TE))
    # log-probs and values are those of the collected observations under the current policy
    def log_prob(obs_O, action_A):
        dist, _ = state.model.actor(normalize.normalize(state.obs_norm_actor, obs_O), ppo.initial_carry(state.model))
        return distributions.log_prob(dist, action_A)

    lp = jax.vmap(jax.vmap(log_prob))(
        traj.obs_actor_TEO, traj.action_TEA
    )
    np.testing.assert_allclose(np.asarray(traj.log_prob_TE), np.asarray(lp), rtol=1e-4, atol=1e-4)
    # the state each step reached: the next observation, unless the episode ended and the env reset
    final, obs = np.asarray(traj.final_obs_critic_TEC), np.asarray(traj.obs_critic_TEC)
    done, failure = np.asarray(traj.done_TE), np.asarray(traj.failure_TE)
    np.testing.assert_array_equal(final[:-1][~done[:-1]], obs[1:][~done[:-1]])
    assert not np.array_equal(final[:-1][done[:-1]], obs[1:][done[:-1]])
    assert float(stats.truncations) == np.sum(done & ~failure) > 0
    # one PPO update consumes it
    new_state, metrics = ppo.update(state, traj, key=jax.random.PRNGKey(2))
    assert np.isfinite(float(metrics["loss"]))


def test_checkpoint_restores_the_exact_continuation(tmp_path):
    """Through the run directory's checkpoint files, like `ksimdsl train --resume`."""
    spec = SPEC.with_overrides(train=dataclasses.replace(SPEC.train, rollout=8, num_envs=4))
    key = jax.random.PRNGKey(0)
    a = MujocoCollector(spec, KN, MODEL_PATH, threads=2)
    state = ppo.init_ppo_from_spec(spec, key=key)
    ca = a.init_for(state, key=key)
    ca, _, _ = a.collect(state, ca, key=jax.random.PRNGKey(1))
    meta = CheckpointMeta(iteration=1, env_steps=32, wall_s=1.0, task=spec.task, spec_hash=spec_hash(spec),
                          engine="mujoco")  # fmt: skip
    save_checkpoint(tmp_path, {"collector": a.to_checkpoint(ca)}, meta)
    _, traj_a, _ = a.collect(state, ca, key=jax.random.PRNGKey(2))

    b = MujocoCollector(spec, KN, MODEL_PATH, threads=1)
    fresh = b.init_for(state, key=jax.random.PRNGKey(9))
    loaded = load_checkpoint(tmp_path, {"collector": b.to_checkpoint(fresh)}, spec=spec)
    cb = b.from_checkpoint(fresh, loaded.trees["collector"])
    _, traj_b, _ = b.collect(state, cb, key=jax.random.PRNGKey(2))
    for name in ("obs_actor_TEO", "obs_critic_TEC", "reward_TE", "done_TE", "action_TEA", "log_prob_TE"):
        np.testing.assert_array_equal(np.asarray(getattr(traj_a, name)), np.asarray(getattr(traj_b, name)))
    assert np.asarray(traj_a.done_TE).any() or np.abs(np.asarray(traj_a.obs_critic_TEC)).max() > 0


def test_run_episodes_records_each_envs_first_episode():
    spec = SPEC.with_overrides(episode_steps=40)
    policy = ppo.make_policy(ppo.init_ppo_from_spec(spec, key=jax.random.PRNGKey(0)))
    results = run_episodes(engines.get("mujoco"), spec, KN, MODEL_PATH, policy, episodes=5, seed=1, threads=2)
    assert results.return_E.shape == (5,) and np.all(np.isfinite(results.return_E))
    assert np.all((results.length_E >= 1) & (results.length_E <= 40))
    ended_by_term = results.termination_EK.any(axis=1)
    np.testing.assert_array_equal(results.truncated_E, ~ended_by_term)
    np.testing.assert_array_equal(results.length_E[results.truncated_E], 40)
    # per-step reward of this task lies in [-0.06, 1.5]: the return is bounded by the length
    assert np.all(results.return_E <= 1.5 * results.length_E) and np.all(results.return_E >= -0.06 * results.length_E)


def test_per_thread_model_copies_that_do_not_fit_are_refused_with_the_fix():
    import mujoco

    from ksimdsl.runtime.engine.mujoco.env import _check_model_copies_fit

    m = mujoco.MjModel.from_xml_string("<mujoco><worldbody><body><freejoint/><geom size='.1'/></body></worldbody></mujoco>")
    _check_model_copies_fit(m, 4, available=10 * m.nbuffer)  # 4 copies fit in half of 10
    with pytest.raises(KsimError) as err:
        _check_model_copies_fit(m, 6, available=10 * m.nbuffer)
    assert "threads=6 copies of the model" in str(err.value) and "at most 5" in str(err.value)
