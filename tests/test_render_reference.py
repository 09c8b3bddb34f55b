"""`ksimdsl render --reference`: the policy and its reference clip side by side, at the same phase.

The task is the tiny imitation fixture of tests/test_reference.py (the cart-pole's cart swinging on a
clip, episodes starting from the clip). Frames are tiny (64x48). The rendering tests need an offscreen
OpenGL context (EGL on Linux) and skip, saying why, only when none can be opened.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import jax
import numpy as np
import pytest

from ksimdsl import cli
from ksimdsl.abi import TaskSpec
from ksimdsl.codegen import compile_checked
from ksimdsl.frontend.check import check_file
from ksimdsl.model.motion import Clip, save_clip
from ksimdsl.runtime.loader import load_module
from ksimdsl.runtime.rl import ppo
from ksimdsl.runtime.tools.render import RenderConfig, gl_unavailable_reason, record_rollout, render_frames
from ksimdsl.runtime.tools.render_reference import ReferenceMotion, reference_motion, reference_rollout, side_by_side

_NO_GL = gl_unavailable_reason()
needs_gl = pytest.mark.skipif(_NO_GL is not None, reason=f"no offscreen OpenGL: {_NO_GL}")

MODELS = Path(__file__).resolve().parents[1] / "tasks" / "models"
#: 0.2 s episodes at ctrl_dt 20 ms: the rollouts below cross episode starts (from the clip, at a random phase)
TASK = f"""task swing "the cart follows a clip"
model "{MODELS / 'cartpole.xml'}"
physics dt=10ms ctrl_dt=20ms iterations=2 ls_iterations=4
episode 10 steps
reference "swing.npz" loop random
actuators ctrl
observe actor
    position = [joint_pos["slider"], cos(joint_pos["hinge_1"]), sin(joint_pos["hinge_1"])]
    velocity = joint_vel
    target   = ref.joint_pos["slider"]
reward
    track 1.0 : exp_kernel(joint_pos["slider"] - ref.joint_pos["slider"], 0.1)
reset
    from reference
policy mlp hidden=[8]
train num_envs=4 rollout=5 epochs=1 minibatches=1 steps=1 seed=0 video=false
"""


@pytest.fixture(scope="module")
def swing(tmp_path_factory):
    """(dir, spec, numba kernels, checked task, a fresh policy): the cart swings 0.3 m at 0.5 Hz, the pole
    tilts with it (so every frame of the clip looks different)."""
    d = tmp_path_factory.mktemp("swing")
    t_F = np.arange(0, 2.0 + 1e-9, 0.02)
    save_clip(d / "swing.npz", Clip(np.stack([0.3 * np.sin(np.pi * t_F), 0.4 * np.sin(np.pi * t_F)], 1), 50.0,
                                    ("slider", "hinge_1")))  # fmt: skip
    (d / "t.ksim").write_text(TASK)
    checked = check_file(str(d / "t.ksim"))
    compiled = compile_checked(checked, backend="numba")
    spec = TaskSpec.from_dict(compiled.spec)
    kernels = load_module(compiled.source, "render_reference:numba")
    policy = ppo.make_policy(ppo.init_ppo_from_spec(spec, key=jax.random.PRNGKey(0)))
    return d, spec, kernels, checked, policy


def test_the_reference_phase_is_the_kernels(swing):
    """Episodes start from the clip at their start phase: there the reference pose is the policy's state."""
    _, spec, kernels, checked, policy = swing
    motion = reference_motion(checked.reference)
    assert motion.qpos_FQ.shape == (101, 2) and motion.fps == 50.0 and motion.loop
    rollout = record_rollout(spec, kernels, policy, model_path=MODELS / "cartpole.xml", engine="mujoco", steps=25)
    ref, phase_T = reference_rollout(spec, rollout, motion)
    starts = np.flatnonzero(rollout.time_T == 0)
    assert list(starts) == [0, 10, 20]
    np.testing.assert_allclose(ref.qpos_TQ[starts], rollout.qpos_TQ[starts], atol=1e-6)
    # within an episode the phase advances with time: 1 s of episode = 50 frames = half the clip
    np.testing.assert_allclose(np.diff(phase_T[:10]), 0.02 * 50 / 100, atol=1e-9)
    assert len({round(float(p), 6) for p in phase_T[starts]}) == 3  # random start phases


def test_positions_wrap_or_hold_and_quaternions_stay_unit():
    q = np.zeros((3, 5))
    q[:, 0] = [0.0, 1.0, 2.0]
    q[:, 1:5] = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
    loop = ReferenceMotion(q, fps=10.0, loop=True, quat_adr=(1,))
    np.testing.assert_allclose(loop.position(np.array([0.5, 1.5, np.nan]), np.array([0.0, 0.1, 0.0])), [0.5, 0.5, 0.0])
    held = ReferenceMotion(q, fps=10.0, loop=False, quat_adr=(1,))
    np.testing.assert_allclose(held.position(np.array([1.5]), np.array([1.0])), [2.0])
    pose = loop.qpos_at(np.array([0.5, 2.0]))
    np.testing.assert_allclose(pose[:, 0], [0.5, 2.0])
    np.testing.assert_allclose(pose[0, 1:], [np.sqrt(0.5), np.sqrt(0.5), 0, 0])  # normalized after the blend
    np.testing.assert_allclose(pose[1, 1:], [0, 0, 1, 0])


@needs_gl
def test_side_by_side_frames_are_twice_as_wide_and_the_right_half_follows_the_clip(swing):
    _, spec, kernels, checked, policy = swing
    motion = reference_motion(checked.reference)
    model = MODELS / "cartpole.xml"
    cfg = RenderConfig(width=320, height=240, shadows=False, max_fps=10)  # a frame every 5 control steps
    rollout = record_rollout(spec, kernels, policy, model_path=model, engine="mujoco", steps=40)
    frames = side_by_side(spec, model, rollout, motion, cfg)
    assert frames.shape == (9, 240, 640, 3) and frames.dtype == np.uint8
    # columns 150+ of each half hold no text (the overlay sits in the top-left corner), the cart-pole does
    left, right = frames[:, :, 150:320].astype(int), frames[:, :, 470:].astype(int)
    # left: the policy's states, as a plain render shows them
    plain = render_frames(spec, model, rollout, cfg, overlay=False).astype(int)
    assert np.abs(left - plain[:, :, 150:]).max() == 0
    # right: the clip at each state's phase, changing from frame to frame with the phase
    ref, phase_T = reference_rollout(spec, rollout, motion)
    ref_plain = render_frames(spec, model, ref, cfg, overlay=False).astype(int)
    assert np.abs(right - ref_plain[:, :, 150:]).max() == 0
    changed_F = (np.abs(np.diff(right, axis=0)).sum(axis=-1) > 30).sum(axis=(1, 2))
    assert np.all(changed_F > 20), changed_F
    assert np.abs(right - left).max() > 100  # the policy is not the clip (at the episode starts, it is)
    # a clip standing still at its first frame gives one still picture on the right
    still = ReferenceMotion(np.repeat(motion.qpos_FQ[:1], 3, axis=0), fps=motion.fps, loop=True)
    frozen = side_by_side(spec, model, rollout, still, cfg)[:, :, 470:].astype(int)
    assert np.abs(np.diff(frozen, axis=0)).max() == 0


@needs_gl
@pytest.mark.slow  # a one-iteration training run for the run directory
def test_cli_renders_a_run_with_its_reference_and_refuses_a_task_without_one(swing, tmp_path, capsys):
    d = swing[0]
    run = tmp_path / "run"
    assert cli.main(["train", str(d / "t.ksim"), "engine=mujoco", "--run-dir", str(run), "--no-progress"]) == 0
    out = tmp_path / "side.gif"
    args = ["render", str(d / "t.ksim"), "--run", str(run), "--seconds", "0.2", "--width", "64", "--height", "48"]
    assert cli.main([*args, "--reference", "-o", str(out)]) == 0
    frames = imageio.mimread(out)
    assert frames[0].shape[:2] == (48, 128) and len(frames) > 1
    assert cli.main([*args, "-o", str(tmp_path / "plain.gif")]) == 0
    assert imageio.mimread(tmp_path / "plain.gif")[0].shape[:2] == (48, 64)
    # the same task without its reference statement
    (d / "noref.ksim").write_text(TASK.replace('reference "swing.npz" loop random\n', "")
                                  .replace("    target   = ref.joint_pos[\"slider\"]\n", "")
                                  .replace('exp_kernel(joint_pos["slider"] - ref.joint_pos["slider"], 0.1)', "1")
                                  .replace("reset\n    from reference\n", ""))  # fmt: skip
    capsys.readouterr()
    bad = ["render", str(d / "noref.ksim"), "--run", str(run), "--reference", "-o", str(tmp_path / "x.gif")]
    assert cli.main(bad) == 2
    err = capsys.readouterr().err
    assert "task 'swing' has no `reference` statement: --reference renders the policy next to" in err
    assert not (tmp_path / "x.gif").exists()
