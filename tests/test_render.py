"""`ksimdsl render`: rollouts of the deterministic policy, offscreen frames, video files and bad input.

Frames are tiny (64x48) and rollouts a few steps. The tests need an offscreen
OpenGL context (EGL on Linux: libegl1 libegl-mesa0 libgl1-mesa-dri) and skip,
saying why, only when none can be opened.
"""

from __future__ import annotations

import dataclasses

import imageio.v2 as imageio
import jax
import mujoco
import numpy as np
import pytest
from fixtures.cartpole import MODEL_PATH, REPO, cartpole_task

from ksimdsl.errors import KsimError
from ksimdsl.runtime.rl import ppo
from ksimdsl.runtime.training.checkpoint import CheckpointMeta, save_checkpoint, spec_hash
from ksimdsl.runtime.tools.render import (
    MediaConfig,
    RenderConfig,
    TrainingMedia,
    _camera,
    gl_unavailable_reason,
    record_rollout,
    render_frames,
    render_run,
)
from ksimdsl.runtime.training.runs import MetricsLog

_NO_GL = gl_unavailable_reason()
needs_gl = pytest.mark.skipif(_NO_GL is not None, reason=f"no offscreen OpenGL: {_NO_GL}")

TINY = RenderConfig(width=64, height=48, shadows=False)
EPISODE = 4  # control steps per episode in these tests


@pytest.fixture(scope="module")
def cartpole():
    """(spec with 4-step episodes, JAX kernels, a policy with O(1) actions, its PPO state): tasks/cartpole.ksim."""
    spec, kernels, _ = cartpole_task()
    spec = dataclasses.replace(spec, episode_steps=EPISODE)
    state = ppo.init_ppo_from_spec(spec, key=jax.random.PRNGKey(0))
    return spec, kernels, ppo.make_policy(state), state


@pytest.fixture(scope="module")
def cartpole_numba():
    """(spec with the same short episodes, numba kernels) of tasks/cartpole.ksim, for the C MuJoCo engine."""
    spec, kernels, _ = cartpole_task("numba")
    return dataclasses.replace(spec, episode_steps=EPISODE), kernels


@pytest.fixture(scope="module")
def rollout(cartpole):
    spec, kernels, policy, _ = cartpole
    return record_rollout(spec, kernels, policy, model_path=MODEL_PATH, engine="mjx", steps=10)


def test_rollout_records_every_control_step_with_auto_resets(cartpole, rollout):
    spec, _, _, _ = cartpole
    ctrl_dt = spec.physics.ctrl_dt
    assert rollout.qpos_TQ.shape == (11, 2)
    # the task's reset block: slider uniform(-0.1, 0.1), hinge uniform(-0.034, 0.034)
    assert np.all(np.abs(rollout.qpos_TQ[[0, 4, 8]]) <= [0.1 + 1e-6, 0.034 + 1e-6])
    # episodes of 4 steps: the state after steps 4 and 8 is a fresh episode at time 0
    np.testing.assert_allclose(rollout.time_T, ctrl_dt * np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2]), atol=1e-9)
    assert list(rollout.episode_T) == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert rollout.return_T[0] == 0 and rollout.return_T[4] == 0
    # cartpole's reward is positive: the running return grows within an episode
    rewards = np.diff(rollout.return_T[:4])
    assert np.all(rewards > 0)
    assert np.all(np.isnan(rollout.last_return_T[:4]))
    # the episode that ended at step 4 earned its first three rewards plus a fourth, similar one
    np.testing.assert_allclose(rollout.last_return_T[4] - rollout.return_T[3], rewards.mean(), rtol=0.05)
    np.testing.assert_allclose(rollout.last_return_T[4:8], rollout.last_return_T[4])


def test_mujoco_engine_rollout_has_the_same_structure(cartpole, cartpole_numba):
    spec, kernels = cartpole_numba
    _, _, policy, _ = cartpole
    ro = record_rollout(spec, kernels, policy, model_path=MODEL_PATH, engine="mujoco", steps=6)
    assert ro.qpos_TQ.shape == (7, 2)
    assert list(ro.episode_T) == [0, 0, 0, 0, 1, 1, 1]
    rewards = np.diff(ro.return_T[:4])
    assert np.all(rewards > 0)
    np.testing.assert_allclose(ro.last_return_T[4] - ro.return_T[3], rewards.mean(), rtol=0.05)


def test_unknown_engine_is_rejected(cartpole):
    spec, kernels, policy, _ = cartpole
    with pytest.raises(KsimError, match="unknown engine 'gpu'"):
        record_rollout(spec, kernels, policy, model_path=MODEL_PATH, engine="gpu", steps=2)


def test_frame_stride_caps_the_frame_rate():
    spec, _, _ = cartpole_task()  # ctrl_dt 10 ms: 100 control steps per second
    assert RenderConfig(max_fps=30).frame_stride(spec) == 4
    assert RenderConfig(max_fps=100).frame_stride(spec) == 1
    assert RenderConfig(seconds=2.0).control_steps(spec) == 200
    assert RenderConfig().control_steps(spec) == min(1000, spec.episode_steps)


@needs_gl
def test_frames_show_the_recorded_states(cartpole, rollout):
    spec, _, _, _ = cartpole
    cfg = dataclasses.replace(TINY, max_fps=100)
    frames = render_frames(spec, MODEL_PATH, rollout, cfg, overlay=False)
    assert frames.shape == (11, 48, 64, 3) and frames.dtype == np.uint8
    assert frames.std() > 5  # a scene, not a blank buffer
    # a different pose gives a different picture; the same pose the same picture
    moved = rollout._replace(qpos_TQ=rollout.qpos_TQ + np.array([0.5, 0.8]))
    frames_moved = render_frames(spec, MODEL_PATH, moved, cfg, overlay=False)
    changed_F = (np.abs(frames_moved.astype(int) - frames.astype(int)).sum(axis=-1) > 30).sum(axis=(1, 2))
    assert np.all(changed_F > 10)  # pixels of every frame changed
    again = render_frames(spec, MODEL_PATH, rollout, cfg, overlay=False)
    np.testing.assert_array_equal(again, frames)


@needs_gl
def test_overlay_writes_text_in_the_top_left_corner(cartpole, rollout):
    spec, _, _, _ = cartpole
    cfg = dataclasses.replace(TINY, width=160, height=120)  # text needs a few more pixels than TINY
    plain = render_frames(spec, MODEL_PATH, rollout, cfg, overlay=False).astype(int)
    text = render_frames(spec, MODEL_PATH, rollout, cfg, overlay=True).astype(int)
    changed_FHW = np.abs(text - plain).sum(axis=-1) > 30
    assert changed_FHW[:, :40, :100].mean() > 0.02  # text in the top-left corner
    assert not changed_FHW[:, 105:, :].any()  # the bottom rows stay free


def test_default_camera_tracks_the_floating_base_and_named_cameras_resolve():
    humanoid = mujoco.MjModel.from_xml_path(str(REPO / "tasks" / "models" / "humanoid.xml"))
    cam = _camera(humanoid, None)
    assert cam.type == mujoco.mjtCamera.mjCAMERA_TRACKING
    assert cam.trackbodyid == mujoco.mj_name2id(humanoid, mujoco.mjtObj.mjOBJ_BODY, "torso")
    cam = _camera(humanoid, "side")
    assert cam.type == mujoco.mjtCamera.mjCAMERA_FIXED
    assert cam.fixedcamid == mujoco.mj_name2id(humanoid, mujoco.mjtObj.mjOBJ_CAMERA, "side")
    cart = mujoco.MjModel.from_xml_path(str(MODEL_PATH))  # no free joint: a view of the whole model
    assert _camera(cart, None).type == mujoco.mjtCamera.mjCAMERA_FREE
    with pytest.raises(KsimError, match="no camera 'sdie' \\(did you mean 'side'\\?\\)"):
        _camera(humanoid, "sdie")


# --------------------------------------------------------------------------- render_run


@pytest.fixture
def run_dir(tmp_path, cartpole):
    spec, _, _, state = cartpole
    run = tmp_path / "run"
    meta = CheckpointMeta(
        iteration=3, env_steps=30, wall_s=1.0, task=spec.task, spec_hash=spec_hash(spec), engine="mjx"
    )
    save_checkpoint(run, {"ppo": state}, meta)
    return run


@needs_gl
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # imageio reads the mp4 through an ffmpeg subprocess
@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_render_run_writes_a_playable_video(tmp_path, run_dir, cartpole_numba, suffix):
    # the C-MuJoCo engine (numba kernels) renders a checkpoint trained on either engine
    spec, kernels = cartpole_numba
    out = render_run(
        spec, kernels, model_path=MODEL_PATH, run_dir=run_dir,
        out_path=tmp_path / "v" / f"cartpole{suffix}", engine="mujoco", seconds=0.12, width=64, height=48,
    )  # fmt: skip
    assert out == tmp_path / "v" / f"cartpole{suffix}" and out.stat().st_size > 0
    frames = imageio.mimread(out)
    # 12 control steps + the reset state, every 4th (30 fps at 10 ms) -> 4 frames
    assert len(frames) == 4
    assert frames[0].shape[:2] == (48, 64)
    assert not list(out.parent.glob(".*tmp*"))  # written atomically, nothing left behind


def test_render_run_bad_input_is_one_line_error(tmp_path, cartpole, run_dir):
    spec, kernels, _, _ = cartpole
    common = dict(model_path=MODEL_PATH, engine="mjx", seconds=0.05, width=64, height=48)
    with pytest.raises(KsimError, match="does not exist") as info:
        render_run(spec, kernels, run_dir=tmp_path / "nope", out_path=tmp_path / "a.gif", **common)
    assert "\n" not in str(info.value)
    (tmp_path / "foreign").mkdir()
    with pytest.raises(KsimError, match="no checkpoint"):
        render_run(spec, kernels, run_dir=tmp_path / "foreign", out_path=tmp_path / "a.gif", **common)
    with pytest.raises(KsimError, match=r"must end in \.mp4 or \.gif"):
        render_run(spec, kernels, run_dir=run_dir, out_path=tmp_path / "a.avi", **common)
    (tmp_path / "blocker").write_text("")
    with pytest.raises(KsimError, match="cannot write"):
        render_run(spec, kernels, run_dir=run_dir, out_path=tmp_path / "blocker" / "a.gif", **common)
    with pytest.raises(KsimError, match="no camera 'top'"):
        render_run(spec, kernels, run_dir=run_dir, out_path=tmp_path / "a.gif", camera="top", **common)
    other = dataclasses.replace(spec, task="other")
    with pytest.raises(KsimError, match="from task 'cartpole'"):
        render_run(other, kernels, run_dir=run_dir, out_path=tmp_path / "a.gif", **common)
    with pytest.raises(KsimError, match="--seconds must be positive"):
        render_run(spec, kernels, run_dir=run_dir, out_path=tmp_path / "a.gif", **(common | {"seconds": 0}))
    assert not (tmp_path / "a.gif").exists()


# --------------------------------------------------------------------------- during training


@needs_gl
def test_training_media_writes_on_schedule_and_at_the_end(tmp_path, cartpole, cartpole_numba):
    spec, kernels = cartpole_numba
    _, _, _, state = cartpole
    run = tmp_path / "run"
    run.mkdir()
    with MetricsLog(run, tensorboard=False) as log:
        log.write({"iteration": 1, "env_steps": 10, "episode_return": 1.0, "loss": 0.5})
    now = [0.0]
    media = TrainingMedia(
        spec, kernels, model_path=MODEL_PATH, run_dir=run, engine="mujoco",
        config=MediaConfig(every_s=60.0, video_seconds=0.05, width=64, height=48), clock=lambda: now[0],
    )  # fmt: skip
    assert media.maybe_write(state, iteration=1) == []  # not due yet
    now[0] = 61.0
    written = media.maybe_write(state, iteration=2)
    assert run / "videos" / "iter_00000002.mp4" in written
    assert run / "plots" / "returns.png" in written
    assert media.maybe_write(state, iteration=3) == []  # the timer restarted
    final = media.maybe_write(state, iteration=4, final=True)
    assert run / "videos" / "iter_00000004.mp4" in final
