"""`ksimdsl record`: a run's deterministic policy written as a motion clip (docs/motions.md).

The runs are checkpoints of an untrained PPO state (written like a training run's, with a config.json
naming the task), so no training is needed; rollouts are a few dozen control steps of the cart-pole on
the C-MuJoCo engine.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import jax
import mujoco
import numpy as np
import pytest
from fixtures.cartpole import MODEL_PATH, REPO, compiled_task

from ksimdsl import cli
from ksimdsl.model.motion import load_clip, map_clip
from ksimdsl.runtime import engine as engines
from ksimdsl.runtime.engine.loop import Recording
from ksimdsl.runtime.rl import ppo
from ksimdsl.runtime.training.checkpoint import CheckpointMeta, save_checkpoint, spec_hash

CARTPOLE = REPO / "tasks" / "cartpole.ksim"
COMMANDED = REPO / "tests" / "fixtures" / "cartpole_commanded.ksim"


def fake_run(run: Path, task: Path, seed: int = 0) -> tuple[Path, ppo.Policy]:
    """A run directory of `task` on the C-MuJoCo engine holding one checkpoint of a fresh PPO state."""
    spec = compiled_task(task, "numba").spec
    state = ppo.init_ppo_from_spec(spec, key=jax.random.PRNGKey(seed))
    meta = CheckpointMeta(iteration=1, env_steps=8, wall_s=1.0, task=spec.task, spec_hash=spec_hash(spec), engine="mujoco")
    save_checkpoint(run, {"ppo": state}, meta)
    launch = {"task_path": str(task.resolve()), "model_path": str(MODEL_PATH), "engine": "mujoco", "overrides": []}
    (run / "config.json").write_text(json.dumps({"task": spec.task, "launch": launch}))
    return run, ppo.make_policy(state)


def run_main(capsys: pytest.CaptureFixture, *args: object) -> SimpleNamespace:
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


def one_line_error(result: SimpleNamespace) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    return fake_run(tmp_path_factory.mktemp("rec") / "run", CARTPOLE)


@pytest.fixture(scope="module")
def commanded_run(tmp_path_factory):
    return fake_run(tmp_path_factory.mktemp("rec") / "run", COMMANDED)


def test_record_writes_the_rollout_as_a_clip_and_it_loads_back(capsys, tmp_path, cartpole_run):
    run, policy = cartpole_run
    out = tmp_path / "clips" / "cartpole.npz"
    result = run_main(capsys, "record", CARTPOLE, "--run", run, "-o", out, "--seconds", "0.2")
    assert result.returncode == 0, result.stderr
    clip = load_clip(out)
    assert result.stdout.startswith(f"wrote {out}: {clip.frames} frames")
    # the same rollout, recorded by the shared loop with the same seed
    spec, kernels, _ = compiled_task(CARTPOLE, "numba")
    recording = Recording(engines.get("mujoco"), spec, kernels, MODEL_PATH, steps=20)
    rec = recording.record(policy, seed=0)
    recording.close()
    assert not rec.done_T.any()  # 0.2 s: the pole has not fallen
    assert clip.frames == 21 and clip.fps == pytest.approx(100.0)
    np.testing.assert_array_equal(clip.qpos, rec.qpos_TQ)
    np.testing.assert_array_equal(clip.qvel, rec.qvel_TV)
    assert clip.joint_names == ("slider", "hinge_1")
    assert np.ptp(clip.qpos[:, 0]) > 0  # it moved
    # body positions: forward kinematics of each frame
    model = mujoco.MjModel.from_xml_path(str(MODEL_PATH))
    assert clip.body_names == ("world", "cart", "pole_1")
    data = mujoco.MjData(model)
    data.qpos[:] = clip.qpos[7]
    mujoco.mj_kinematics(model, data)
    np.testing.assert_allclose(clip.body_pos[7], data.xpos, atol=1e-12)
    # and it maps onto the task's model as a reference (the same qpos, velocities as recorded)
    mapped = map_clip(clip, model)
    np.testing.assert_array_equal(mapped.qpos_FQ, rec.qpos_TQ)
    assert mapped.qvel_given
    np.testing.assert_array_equal(mapped.body_pos_F3(2), clip.body_pos[:, 2])


def test_a_termination_ends_the_clip_before_the_next_episode(tmp_path, cartpole_run):
    from ksimdsl.runtime.tools.record import RecordOptions, record_clip

    _, policy = cartpole_run
    spec, kernels, _ = compiled_task(CARTPOLE, "numba")
    short = spec.with_overrides(episode_steps=5)  # an episode limit shorter than the recording is raised
    clip, info = record_clip(short, kernels, policy, model_path=MODEL_PATH, engine="mujoco",
                             options=RecordOptions(seconds=0.1))  # fmt: skip
    assert clip.frames == 11 and not info.ended_early
    # the cart-pole with a termination after 45 ms: the episode ends at the 5th control step
    text = CARTPOLE.read_text().replace('model "models/', f'model "{MODEL_PATH.parent}/')
    text = text.replace("fell : cos(pole) < 0.75", "fell : time > 0.045")
    task = tmp_path / "timed.ksim"
    task.write_text(text)
    timed, timed_kernels, _ = compiled_task(task, "numba")
    clip, info = record_clip(timed, timed_kernels, policy, model_path=MODEL_PATH, engine="mujoco",
                             options=RecordOptions(seconds=0.2))  # fmt: skip
    assert info.ended_early and clip.frames == 5 and info.seconds == pytest.approx(0.04)
    np.testing.assert_array_equal(clip.qpos, record_clip(timed, timed_kernels, policy, model_path=MODEL_PATH,
                                  engine="mujoco", options=RecordOptions(seconds=0.04))[0].qpos)  # fmt: skip


def test_commands_are_held_and_events_switched_off_as_in_eval(tmp_path, commanded_run):
    from ksimdsl.session import RecordRequest, record_run

    run, _ = commanded_run

    def record(name: str, *commands: str, events: bool = True) -> np.ndarray:
        request = RecordRequest(seconds=0.15, commands=commands, events=events)
        path, _ = record_run(str(COMMANDED), str(run), str(tmp_path / f"{name}.npz"), request)
        return load_clip(path).qvel

    a = record("a", "goal=0.4,0.5")
    np.testing.assert_array_equal(record("a2", "goal=0.4,0.5"), a)  # the same command: the same motion
    assert not np.allclose(record("b", "goal=-0.4,0.5"), a)  # the policy sees the command it is held at
    # the push event adds 0.5 m/s to the cart every 5 control steps: without events the cart is not shoved
    quiet = record("c", "goal=0.4,0.5", events=False)
    jumps = np.diff(a[:, 0]) - np.diff(quiet[:, 0])
    assert jumps[4] == pytest.approx(0.5, abs=0.05) and np.allclose(jumps[:4], 0)


def test_bad_record_requests_are_one_line_errors(capsys, tmp_path, commanded_run):
    run, _ = commanded_run
    base = ("record", COMMANDED, "--run", run)
    line = one_line_error(run_main(capsys, *base, "-o", tmp_path / "clip.txt"))
    assert "must end in .npz" in line
    line = one_line_error(run_main(capsys, *base, "-o", tmp_path / "c.npz", "--command", "gaol=0.1,0.2"))
    assert "unknown command 'gaol' (did you mean 'goal'?)" in line
    result = run_main(capsys, *base, "-o", tmp_path / "c.npz", "--command", "goal=1,2", "--command", "goal=0,0")
    assert "command 'goal' given twice" in one_line_error(result)
    line = one_line_error(run_main(capsys, *base, "-o", tmp_path / "c.npz", "--seconds", "0"))
    assert "--seconds must be a positive number" in line
    line = one_line_error(run_main(capsys, *base[:2], "--run", tmp_path / "nope", "-o", tmp_path / "c.npz"))
    assert "does not exist" in line
    assert not list(tmp_path.glob("*.npz"))
