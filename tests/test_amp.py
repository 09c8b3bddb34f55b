"""AMP (the `amp` block): features, the discriminator's loss and reward, errors, a tiny training run."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ksimdsl.abi import TaskSpec
from ksimdsl.codegen import compile_checked
from ksimdsl.errors import KsimError
from ksimdsl.frontend.check import check_file
from ksimdsl.model.amp_features import features, resample_clip
from ksimdsl.model.motion import Clip, save_clip
from ksimdsl.runtime.loader import load_module
from ksimdsl.runtime.rl import amp as A

REPO = Path(__file__).resolve().parents[1]

FREE_XML = """
<mujoco>
  <option timestep="0.01"/>
  <worldbody>
    <geom name="floor" type="plane" size="5 5 0.1"/>
    <body name="torso" pos="0 0 1">
      <freejoint name="root"/>
      <geom type="sphere" size="0.1"/>
      <body name="leg" pos="0 0 -0.3">
        <joint name="hip" type="hinge" axis="1 0 0"/>
        <geom type="capsule" fromto="0 0 0 0 0 -0.4" size="0.04"/>
      </body>
    </body>
  </worldbody>
  <actuator><motor joint="hip"/></actuator>
</mujoco>
"""


def _free_dir(tmp_path: Path) -> Path:
    """tiny.xml (a free body and a hip) and clip.npz: 5 frames at 10 fps turning about z and moving."""
    (tmp_path / "tiny.xml").write_text(FREE_XML)
    F = 5
    qpos = np.zeros((F, 8))
    qpos[:, 0] = np.arange(F) * 0.1
    qpos[:, 2] = 1.0 + 0.01 * np.arange(F)
    angle = 0.3 * np.arange(F)
    qpos[:, 3], qpos[:, 6] = np.cos(angle / 2), np.sin(angle / 2)
    qpos[:, 7] = 0.2 * np.arange(F)
    qvel = np.zeros((F, 7))
    qvel[:, 0] = 1.0  # world-frame x velocity
    qvel[:, 5] = 3.0  # body-frame yaw rate
    qvel[:, 6] = 2.0
    save_clip(tmp_path / "clip.npz", Clip(qpos, 10.0, ("root", "hip"), qvel))
    return tmp_path


def _task(d: Path, amp: str, reference: str = 'reference "clip.npz"', name: str = "t") -> Path:
    text = (
        f'task {name}\nmodel "tiny.xml"\nphysics dt=10ms ctrl_dt=50ms\nactuators torque\nepisode 20 steps\n'
        f"{reference}\nobserve actor\n    q = joint_pos\nreward\n    alive 1.0 : 1\n{amp}"
    )
    path = d / f"{name}.ksim"
    path.write_text(text)
    return path


def _error(d: Path, amp: str, **kw) -> str:
    with pytest.raises(KsimError) as err:
        check_file(str(_task(d, amp, name="bad", **kw)))
    return err.value.format()


# --------------------------------------------------------------------------- the discriminator


def test_style_reward_and_gradient_penalty_of_a_linear_discriminator_by_hand():
    np.testing.assert_allclose(
        np.asarray(A.style_reward(jnp.array([1.0, 0.0, -1.0, 3.0, -5.0, 2.0]))), [1.0, 0.75, 0.0, 0.0, 0.0, 0.75]
    )
    w, b = jnp.array([1.0, -2.0, 0.5, 2.0]), 0.25
    disc = lambda x: jnp.dot(w, x) + b  # noqa: E731  grad D = w everywhere: |grad|^2 = 9.25
    x_ref = jnp.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]])  # D = 1.25, 1.25
    x_pol = jnp.array([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [9.0, 9.0, 9.0, 9.0]])  # D = -1.75, 2.25, (masked)
    mask = jnp.array([True, True, False])
    assert float(A.gradient_penalty(disc, x_ref)) == pytest.approx(9.25)
    loss, m = A.disc_loss(disc, x_ref, x_pol, mask, gp=2.0)
    expect = 0.25**2 + (0.75**2 + 3.25**2) / 2 + 2.0 * 9.25
    assert float(loss) == pytest.approx(expect, rel=1e-6)
    assert float(m["amp/disc_loss"]) == pytest.approx(expect, rel=1e-6)
    assert float(m["amp/grad_penalty"]) == pytest.approx(9.25)
    assert float(m["amp/disc_acc_ref"]) == 1.0 and float(m["amp/disc_acc_policy"]) == 0.5


def test_the_update_rewards_reference_like_transitions_and_trains_the_discriminator(tmp_path):
    spec = TaskSpec.from_dict(compile_checked(check_file(str(_task(_free_dir(tmp_path), AMP_BLOCK))), backend="jax").spec)
    state = A.init_amp(spec.amp, key=jax.random.PRNGKey(0))
    ref = state.ref_KF
    T, E = ref.shape[0] - 1, 2
    # env 0 replays the reference, env 1 stands still far from it; a done step earns nothing
    feat = jnp.stack([ref[:-1], jnp.broadcast_to(ref[0] + 5.0, ref[:-1].shape)], axis=1)
    nxt = jnp.stack([ref[1:], jnp.broadcast_to(ref[0] + 5.0, ref[1:].shape)], axis=1)
    done = jnp.zeros((T, E), bool).at[0, 0].set(True)
    losses = []
    for i in range(30):
        state, reward_TE, metrics = A.update(state, feat, nxt, done, key=jax.random.PRNGKey(i), steps=4)
        losses.append(float(metrics["amp/disc_loss"]))
    assert reward_TE.shape == (T, E) and float(reward_TE[0, 0]) == 0.0
    assert np.all(np.asarray(reward_TE) >= 0) and np.all(np.asarray(reward_TE) <= spec.amp.settings.weight)
    assert float(jnp.mean(reward_TE[1:, 0])) > float(jnp.mean(reward_TE[:, 1])) + 0.1
    assert losses[-1] < losses[0] and float(metrics["amp/disc_acc_policy"]) > 0.4


# --------------------------------------------------------------------------- the replay buffer


def _rows(*values: float) -> jnp.ndarray:
    """One row [v, -v] per value."""
    return jnp.array([[v, -v] for v in values], jnp.float32)


def test_the_replay_buffer_fills_skips_done_rows_and_wraps_around():
    insert = jax.jit(A.replay_insert)
    r = A.empty_replay(5, 2)
    r = insert(r, _rows(1, 2, 3), jnp.array([True, False, True]))  # the done row stays out
    assert (int(r.index), int(r.filled)) == (2, 2)
    np.testing.assert_array_equal(np.asarray(r.x_RX), _rows(1, 3, 0, 0, 0))
    r = insert(r, _rows(4, 5, 6, 7), jnp.ones(4, bool))  # rows 2, 3, 4, then row 0 again
    assert (int(r.index), int(r.filled)) == (1, 5)
    np.testing.assert_array_equal(np.asarray(r.x_RX), _rows(7, 3, 4, 5, 6))
    # 7 valid rows in a ring of 5, from the write index 1 on: as if written one by one (rows 1, 2, 3,
    # 4, 0, 1, 2), so only the last 5 (11..15) stay
    r = insert(r, _rows(9, 10, 11, 12, 13, 14, 15, 99), jnp.array([True] * 7 + [False]))
    assert (int(r.index), int(r.filled)) == (3, 5)
    np.testing.assert_array_equal(np.asarray(r.x_RX), _rows(13, 14, 15, 11, 12))
    r = insert(r, _rows(8), jnp.zeros(1, bool))  # nothing valid: nothing changes
    assert (int(r.index), int(r.filled)) == (3, 5)
    # sampling draws only rows that hold a transition
    part = insert(A.empty_replay(6, 2), _rows(1, 2), jnp.ones(2, bool))
    drawn = np.asarray(A.replay_sample(part, 200, key=jax.random.PRNGKey(0)))[:, 0]
    assert set(drawn.tolist()) == {1.0, 2.0}


def test_the_policy_term_mixes_the_rollout_and_the_buffer_by_hand():
    w, b = jnp.array([1.0, -2.0, 0.5, 2.0]), 0.25
    disc = lambda x: jnp.dot(w, x) + b  # noqa: E731
    x_ref = jnp.array([[1.0, 0.0, 0.0, 0.0]])  # D = 1.25
    x_pol = jnp.array([[0.0, 1.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]])  # D = -1.75, (masked)
    x_rep = jnp.array([[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0]])  # D = 2.25, 0.25, -0.75
    mask = jnp.array([True, False])
    loss, m = A.disc_loss(disc, x_ref, x_pol, mask, 0.0, x_rep, 0.5)
    replay_term = (3.25**2 + 1.25**2 + 0.25**2) / 3
    assert float(loss) == pytest.approx(0.25**2 + 0.5 * 0.75**2 + 0.5 * replay_term, rel=1e-6)
    assert float(m["amp/disc_acc_policy"]) == 1.0 and float(m["amp/disc_acc_replay"]) == pytest.approx(1 / 3)
    empty, _ = A.disc_loss(disc, x_ref, x_pol, mask, 0.0, x_rep, 0.0)  # share 0: the rollout's alone
    assert float(empty) == float(A.disc_loss(disc, x_ref, x_pol, mask, 0.0)[0]) == pytest.approx(0.25**2 + 0.75**2)


def test_the_discriminator_regularizers_by_hand():
    from ksimdsl.runtime.rl.networks import MLP

    disc = MLP(2, (3,), 1, activation="relu", key=jax.random.PRNGKey(0))
    w0, w1 = (np.asarray(layer.weight) for layer in disc.layers)
    assert float(A.disc_regularizer(disc, 0.0, 0.0)) == 0.0
    assert float(A.disc_regularizer(disc, 0.05, 0.0)) == pytest.approx(0.05 * np.sum(w1**2), rel=1e-6)
    both = 0.05 * np.sum(w1**2) + 1e-4 * (np.sum(w0**2) + np.sum(w1**2))
    assert float(A.disc_regularizer(disc, 0.05, 1e-4)) == pytest.approx(both, rel=1e-6)


def _amp_state(tmp_path: Path, settings: str) -> tuple[TaskSpec, A.AmpState]:
    block = AMP_BLOCK.replace("gp=5.0", settings)
    tmp_path.mkdir(parents=True, exist_ok=True)
    spec = TaskSpec.from_dict(compile_checked(check_file(str(_task(_free_dir(tmp_path), block))), backend="jax").spec)
    return spec, A.init_amp(spec.amp, key=jax.random.PRNGKey(0))


def _rollout(ref: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """env 0 replays the reference, env 1 stands still far from it; the first step of env 0 ends an episode."""
    T, E = ref.shape[0] - 1, 2
    feat = jnp.stack([ref[:-1], jnp.broadcast_to(ref[0] + 5.0, ref[:-1].shape)], axis=1)
    nxt = jnp.stack([ref[1:], jnp.broadcast_to(ref[0] + 5.0, ref[1:].shape)], axis=1)
    return feat, nxt, jnp.zeros((T, E), bool).at[0, 0].set(True)


def test_the_update_fills_the_buffer_with_the_valid_transitions_and_trains_on_them(tmp_path):
    spec, state = _amp_state(tmp_path, "gp=0.0 replay=20")
    feat, nxt, done = _rollout(state.ref_KF)
    T, E, F = feat.shape  # 8 steps x 2 envs: 15 valid transitions
    update = jax.jit(A.update, static_argnames="steps")
    state1, _, m1 = update(state, feat, nxt, done, key=jax.random.PRNGKey(1), steps=1)
    assert (int(state1.replay.filled), int(state1.replay.index)) == (15, 15)
    x = jnp.concatenate([(feat - state.mean_F) / state.std_F, (nxt - state.mean_F) / state.std_F], -1)
    x = x.reshape(T * E, -1)
    np.testing.assert_allclose(np.asarray(state1.replay.x_RX[:15]), np.asarray(x[1:]), rtol=1e-6)  # row 0 is done
    assert float(m1["amp/replay_filled"]) == 0.75
    # a second rollout wraps around: 15 + 15 rows in a ring of 20
    state2, _, _ = update(state1, feat, nxt, done, key=jax.random.PRNGKey(2), steps=1)
    assert (int(state2.replay.filled), int(state2.replay.index)) == (20, 10)
    # the loss reads the buffer: with one reference transition repeated and a buffer holding one
    # transition v, one step's loss is (D(ref) - 1)^2 + (rollout term + (D(v) + 1)^2) / 2
    ref_KF = jnp.broadcast_to(state.ref_KF[0], state.ref_KF.shape)
    v_X = jnp.full((2 * F,), 0.7)
    full = A.Replay(jnp.broadcast_to(v_X, (20, 2 * F)), jnp.zeros((), jnp.int32), jnp.full((), 20, jnp.int32))
    probe = eqx.tree_at(lambda s: (s.ref_KF, s.replay), state, (ref_KF, full))
    _, _, m = update(probe, feat, nxt, done, key=jax.random.PRNGKey(3), steps=1)
    d = lambda x_X: float(state.disc(x_X)[0])  # noqa: E731
    r_F = (state.ref_KF[0] - state.mean_F) / state.std_F
    rollout_term = np.mean([(d(x_X) + 1.0) ** 2 for x_X in x[1:]])
    expect = (d(jnp.concatenate([r_F, r_F])) - 1.0) ** 2 + 0.5 * rollout_term + 0.5 * (d(v_X) + 1.0) ** 2
    assert float(m["amp/disc_loss"]) == pytest.approx(expect, rel=1e-5)
    assert float(m["amp/disc_acc_replay"]) == float(d(v_X) < 0)


def test_replay_0_is_the_update_without_a_buffer(tmp_path):
    """replay=0 keeps no buffer and changes nothing; a replay run's first update (an empty buffer) is the same."""
    _, off = _amp_state(tmp_path / "off", "gp=5.0 replay=0")
    _, on = _amp_state(tmp_path / "on", "gp=5.0 replay=64")
    assert off.replay is None and on.replay.x_RX.shape == (64, 2 * off.ref_KF.shape[1])
    feat, nxt, done = _rollout(off.ref_KF)
    new_off, reward_off, m_off = A.update(off, feat, nxt, done, key=jax.random.PRNGKey(5), steps=3)
    new_on, reward_on, m_on = A.update(on, feat, nxt, done, key=jax.random.PRNGKey(5), steps=3)
    np.testing.assert_array_equal(np.asarray(reward_off), np.asarray(reward_on))
    for a, b in zip(jax.tree.leaves(new_off.disc), jax.tree.leaves(new_on.disc)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert set(m_off) == set(m_on) - {"amp/disc_acc_replay", "amp/replay_filled"}
    assert all(float(m_off[k]) == float(m_on[k]) for k in m_off)
    assert new_off.replay is None and int(new_on.replay.filled) == int(jnp.sum(~done))


def test_the_buffer_stays_out_of_checkpoints_and_its_settings_out_of_the_spec_hash(tmp_path):
    from ksimdsl.runtime.rl import ppo
    from ksimdsl.runtime.training.checkpoint import CheckpointMeta, load_checkpoint, read_checkpoint, save_checkpoint
    from ksimdsl.runtime.training.checkpoint import spec_hash

    spec, _ = _amp_state(tmp_path / "t", "gp=5.0 replay=32")
    state = ppo.init_ppo_from_spec(spec, key=jax.random.PRNGKey(0))
    feat, nxt, done = _rollout(state.amp.ref_KF)
    amp, _, _ = A.update(state.amp, feat, nxt, done, key=jax.random.PRNGKey(1), steps=1)
    state = eqx.tree_at(lambda s: s.amp, state, amp)
    meta = CheckpointMeta(
        iteration=1, env_steps=16, wall_s=1.0, task=spec.task, spec_hash=spec_hash(spec), engine="mujoco"
    )
    path = save_checkpoint(tmp_path / "run", {"ppo": state}, meta)
    arrays, _ = read_checkpoint(path)
    assert "ppo.amp.disc.layers[0].weight" in arrays and not [n for n in arrays if "replay" in n]
    template = ppo.init_ppo_from_spec(spec, key=jax.random.PRNGKey(9))
    loaded = load_checkpoint(tmp_path / "run", {"ppo": template}, spec=spec).trees["ppo"].amp
    np.testing.assert_array_equal(np.asarray(loaded.disc.layers[0].weight), np.asarray(amp.disc.layers[0].weight))
    assert int(loaded.replay.filled) == 0 and loaded.replay.x_RX.shape == amp.replay.x_RX.shape  # refills
    # a resume may change the buffer and the regularizers, not the discriminator
    other = dataclasses.replace(spec.amp.settings, replay=0, logit_reg=0.05, weight_decay=1e-4)
    assert spec_hash(dataclasses.replace(spec, amp=dataclasses.replace(spec.amp, settings=other))) == spec_hash(spec)
    wider = dataclasses.replace(spec.amp.settings, hidden=(16,))
    assert spec_hash(dataclasses.replace(spec, amp=dataclasses.replace(spec.amp, settings=wider))) != spec_hash(spec)


# --------------------------------------------------------------------------- features and errors

AMP_BLOCK = (
    "amp hidden=[8] weight=0.5 gp=5.0\n"
    "    features = [joint_pos, joint_vel, base_pos.z, local_lin_vel, local_ang_vel, projected_gravity]\n"
)


def test_features_of_the_reference_are_computed_at_the_control_period(tmp_path):
    d = _free_dir(tmp_path)
    checked = check_file(str(_task(d, AMP_BLOCK)))
    amp = checked.amp
    assert amp.names == ("joint_pos", "joint_vel", "base_pos.z", "local_lin_vel", "local_ang_vel", "projected_gravity")
    ref = amp.reference
    # 5 frames at 10 fps (0.4 s) at ctrl_dt = 50 ms: 9 rows, halfway between frames every other row
    assert ref.shape == (9, 1 + 1 + 1 + 3 + 3 + 3)
    np.testing.assert_allclose(ref[:, 0], 0.1 * np.arange(9), atol=1e-6)  # hip: 0.2 per frame
    np.testing.assert_allclose(ref[:, 1], 2.0)
    np.testing.assert_allclose(ref[:, 2], 1.0 + 0.005 * np.arange(9), atol=1e-6)
    yaw = 0.15 * np.arange(9)  # nlerp of an evenly turning quaternion: the same angle here by symmetry
    np.testing.assert_allclose(ref[:, 3:6], np.stack([np.cos(yaw), -np.sin(yaw), 0 * yaw], 1), atol=2e-3)
    np.testing.assert_allclose(ref[:, 6:9], np.tile([0.0, 0.0, 3.0], (9, 1)), atol=1e-6)
    np.testing.assert_allclose(ref[:, 9:12], np.tile([0.0, 0.0, -1.0], (9, 1)), atol=1e-6)
    # the runtime's features of a state are the same function, in jax too
    qpos, qvel = resample_clip(np.load(d / "clip.npz")["qpos"], np.load(d / "clip.npz")["qvel"], 10.0, 0.05, (3,))
    np.testing.assert_allclose(np.asarray(features(amp.features, jnp.asarray(qpos), jnp.asarray(qvel), jnp)), ref,
                               atol=1e-5)  # fmt: skip


def test_features_match_the_quantities_the_kernels_compute(tmp_path):
    """phi of the simulated state (runtime) against the same quantities as observations (generated kernels)."""
    from ksimdsl.runtime.engine.mujoco.env import MujocoEnv

    d = _free_dir(tmp_path)
    text = _task(d, AMP_BLOCK).read_text().replace(
        "    q = joint_pos\n",
        "    q = [joint_pos, joint_vel, base_pos.z, local_lin_vel, local_ang_vel, projected_gravity]\n",
    ) + "reset\n    from reference\n    qvel = uniform(-1, 1)\n    base_quat = [0.8, 0.36, 0.48, 0.0]\n"
    (d / "obs.ksim").write_text(text)
    compiled = compile_checked(check_file(str(d / "obs.ksim")), backend="numba")
    spec = TaskSpec.from_dict(compiled.spec)
    env = MujocoEnv(spec, load_module(compiled.source, "amp_obs:numba"), str(d / "tiny.xml"), num_envs=3, threads=1)
    try:
        env.reset_all()
        qpos = np.stack([x.qpos for x in env.datas])
        qvel = np.stack([x.qvel for x in env.datas])
        phi = A.state_features(spec.amp, np)(qpos, qvel)
        np.testing.assert_allclose(phi, env.obs_actor_EO, rtol=1e-5, atol=1e-5)
        assert np.abs(phi[:, 3:6]).max() > 0.1
    finally:
        env.close()


def test_amp_errors_point_at_the_task_text(tmp_path):
    d = _free_dir(tmp_path)
    e = _error(d, "amp hidden=[8]\n    features = [joint_pos, body_pos(\"leg\")]\n")
    assert "bad.ksim:12:28: error: amp feature 'body_pos(\"leg\")' cannot be computed from the reference clip's qpos and qvel" in e
    assert "local_lin_vel" in e and "^~~~" in e
    e = _error(d, "amp\n    features = [joint_pos, ref.joint_pos, action]\n")
    assert "bad.ksim:12:28: error: amp feature 'ref.joint_pos'" in e and "bad.ksim:12:43: error: amp feature 'action'" in e
    e = _error(d, "amp\n    features = [joint_poss]\n")
    assert "bad.ksim:12:17: error: unknown name 'joint_poss' (did you mean 'joint_pos'?)" in e
    e = _error(d, AMP_BLOCK, reference="")
    assert "bad.ksim:11:1: error: `amp` learns the style of the reference motion, but the task has no `reference` statement" in e
    e = _error(d, "amp hidden=[8] weigth=1\n")
    assert "bad.ksim:11:16: error: unknown amp setting 'weigth' (did you mean 'weight'?)" in e
    assert "bad.ksim:11:1: error: `amp` needs a `features = [...]` line" in e
    e = _error(d, "amp gp=-1\n    features = [joint_pos]\n")
    assert "bad.ksim:11:8: error: amp setting 'gp' must be at least 0, got -1" in e
    e = _error(d, "amp replay=-1\n    features = [joint_pos]\n")
    assert "bad.ksim:11:12: error: amp setting 'replay' must be at least 0, got -1" in e and "^~" in e
    e = _error(d, "amp hidden=[8] replay=1.5\n    features = [joint_pos]\n")
    assert "bad.ksim:11:23: error: amp setting 'replay' must be a whole number, got 1.5" in e
    e = _error(d, "amp replay=2e7\n    features = [joint_pos]\n")
    assert "bad.ksim:11:12: error: amp setting 'replay' must be at most 10000000, got 20000000" in e
    e = _error(d, "amp logit_reg=-0.1\n    features = [joint_pos]\n")
    assert "bad.ksim:11:15: error: amp setting 'logit_reg' must be at least 0, got -0.1" in e


# --------------------------------------------------------------------------- training


@pytest.mark.slow
def test_a_tiny_amp_run_on_the_c_engine_logs_finite_metrics_and_resumes(tmp_path):
    from ksimdsl.runtime.training.checkpoint import latest_checkpoint, load_checkpoint
    from ksimdsl.runtime.training.runs import read_metrics
    from ksimdsl.runtime.training.train import RunPlan, train

    shutil.copy(REPO / "tasks" / "models" / "cartpole.xml", tmp_path / "cartpole.xml")
    t = np.arange(30) / 50.0
    save_clip(tmp_path / "swing.npz", Clip(np.stack([0.3 * np.sin(3 * t), 0.2 * np.cos(4 * t)], 1), 50.0,
                                           ("slider", "hinge_1")))  # fmt: skip
    text = (REPO / "tasks" / "cartpole.ksim").read_text().replace('"models/cartpole.xml"', '"cartpole.xml"')
    text = text.replace("policy mlp hidden=[64, 64]", "policy mlp hidden=[16]")
    text += (
        'reference "swing.npz"\n'
        "amp hidden=[16, 16] weight=0.5 gp=1.0 lr=1e-3\n"
        "    features = [joint_pos, joint_vel]\n"
        "train num_envs=4 rollout=8 minibatches=2 epochs=2 steps=2 checkpoint_every=1\n"
    )
    text = text.replace("train num_envs=128", "#").replace("      lambda=0.95", "#")
    (tmp_path / "amp.ksim").write_text(text)
    compiled = compile_checked(check_file(str(tmp_path / "amp.ksim")), backend="numba")
    spec = TaskSpec.from_dict(compiled.spec)
    kernels = load_module(compiled.source, "amp_train:numba")
    run = tmp_path / "run"
    first = train(spec, kernels, model_path=tmp_path / "cartpole.xml", engine="mujoco",
                  plan=RunPlan(run, progress=False))  # fmt: skip
    assert first.iterations == 2
    records = read_metrics(run)
    for r in records:
        for name in ("reward/amp_style", "amp/disc_loss", "amp/disc_acc_ref", "amp/disc_acc_policy"):
            assert math.isfinite(r[name]), (name, r)
        assert 0.0 <= r["reward/amp_style"] <= 0.5 and 0.0 <= r["amp/disc_acc_ref"] <= 1.0
    # the discriminator and its optimizer state are in the checkpoint, and come back on resume
    from ksimdsl.runtime.rl import ppo

    template = ppo.init_ppo_from_spec(spec, key=jax.random.PRNGKey(7))
    loaded = load_checkpoint(run, {"ppo": template}, spec=spec, path=latest_checkpoint(run))
    kept = loaded.trees["ppo"].amp
    fresh = template.amp
    assert not np.allclose(np.asarray(kept.disc.layers[0].weight), np.asarray(fresh.disc.layers[0].weight))
    assert int(jax.tree.leaves(kept.opt_state)[0]) == 2 * 2  # adam's count: epochs x iterations
    resumed = train(spec.with_overrides(train=dataclasses.replace(spec.train, steps=3)),
                    kernels, model_path=tmp_path / "cartpole.xml", engine="mujoco",
                    plan=RunPlan(run, resume=True, progress=False))  # fmt: skip
    assert resumed.iterations == 3 and math.isfinite(read_metrics(run)[-1]["amp/disc_loss"])


@pytest.mark.parametrize("engine", ["mujoco", pytest.param("mjx", marks=pytest.mark.slow)])
def test_both_collectors_record_the_features_of_every_state_and_the_update_uses_them(tmp_path, engine):
    from ksimdsl.runtime import engine as engines
    from ksimdsl.runtime.rl import ppo

    d = _free_dir(tmp_path)
    text = _task(d, AMP_BLOCK).read_text() + "reset\n    from reference\n    qvel = uniform(-1, 1)\n"
    text += "train num_envs=2 rollout=3 minibatches=1 epochs=2\n"
    (d / "c.ksim").write_text(text)
    backend = engines.get(engine).backend
    compiled = compile_checked(check_file(str(d / "c.ksim")), backend=backend)
    spec = TaskSpec.from_dict(compiled.spec)
    kernels = load_module(compiled.source, f"amp_collect:{backend}")
    collector = engines.get(engine).make_collector(spec, kernels, d / "tiny.xml", num_envs=2)
    state = ppo.init_ppo_from_spec(spec, key=jax.random.PRNGKey(0))
    cstate = collector.init_for(state, key=jax.random.PRNGKey(1))
    if engine == "mujoco":
        qpos0 = np.stack([x.qpos for x in collector.env.datas])
        qvel0 = np.stack([x.qvel for x in collector.env.datas])
        collect = lambda s, c, k: collector.collect(s, c, key=k)  # noqa: E731
    else:
        qpos0, qvel0 = np.asarray(cstate.env.data.qpos), np.asarray(cstate.env.data.qvel)
        collect = jax.jit(lambda s, c, k: collector.collect(s, c, key=k))
    _, traj, _ = collect(state, cstate, jax.random.PRNGKey(2))
    F = spec.amp.feature_size
    assert traj.amp_feat_TEF.shape == (3, 2, F) == traj.amp_next_TEF.shape
    np.testing.assert_allclose(np.asarray(traj.amp_feat_TEF[0]), A.state_features(spec.amp, np)(qpos0, qvel0),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    np.testing.assert_array_equal(np.asarray(traj.amp_next_TEF[:-1]), np.asarray(traj.amp_feat_TEF[1:]))
    assert np.all(np.isfinite(np.asarray(traj.amp_next_TEF)))
    new, metrics = jax.jit(lambda s, t, k: ppo.update(s, t, key=k))(state, traj, jax.random.PRNGKey(3))
    assert {"reward/amp_style", "amp/disc_loss", "amp/disc_acc_ref", "amp/disc_acc_policy"} <= set(metrics)
    assert all(math.isfinite(float(v)) for v in metrics.values())
    assert int(jax.tree.leaves(new.amp.opt_state)[0]) == 2  # one discriminator step per epoch
