"""`ksimdsl view` without a window: keys, overlay, the stepped episode, --watch reloads, no display.

What each key does and what the overlay says are tested on the functions the
viewer's key callback and display loop call (`view_state`); the episode it
shows (`ViewSession`: held commands, pushes, resets, recompiled tasks) on a
cart-pole with a command, a reward that reads it and a push event; the
no-display path exits 2 with one line pointing at `ksimdsl render`. The window
itself (Xvfb, a screenshot): tests/test_view_window.py.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest
from fixtures.cartpole import CARTPOLE_KSIM, TASKS_DIR

from ksimdsl import cli
from ksimdsl.errors import KsimError
from ksimdsl.runtime.tools import view as view_mod
from ksimdsl.runtime.tools.view_state import (
    KEY,
    SPEEDS,
    CommandControl,
    CommandField,
    EpisodeTracker,
    Readout,
    StepClock,
    TaskControls,
    ViewerControls,
    overlay_texts,
)

VEL = CommandControl(
    "vel", (CommandField("x", -0.5, 1.5), CommandField("y", -0.3, 0.3), CommandField("yaw", -0.5, 0.5))
)
HEIGHT = CommandControl("height", (CommandField("h", 0.6, 1.0),))
CONTROLS = TaskControls((HEIGHT, VEL), push_event="push")


# --------------------------------------------------------------------------- keys


def test_space_n_r_p_and_speed_keys():
    c = ViewerControls(CONTROLS)
    assert c.on_key(KEY["space"]) and c.paused
    assert c.on_key(KEY["space"]) and not c.paused
    for key in (KEY["n"], KEY["n"], KEY["r"], KEY["p"], KEY["p"], KEY["p"]):
        assert c.on_key(key)
    assert c.paused  # N steps one control step and stays paused
    assert c.take_requests() == (True, 3, 2)
    assert c.take_requests() == (False, 0, 0)  # taken once
    c.on_key(KEY["backspace"])
    assert c.take_requests().reset

    assert c.speed == 1.0
    c.on_key(KEY["equal"])
    c.on_key(KEY["kp_add"])
    assert c.speed == 4.0 and c.note == "speed 4x"
    for _ in range(10):
        c.on_key(KEY["equal"])
    assert c.speed == SPEEDS[-1] == 16.0
    for _ in range(20):
        c.on_key(KEY["minus"] if _ % 2 else KEY["kp_subtract"])
    assert c.speed == SPEEDS[0] == 1 / 16 and c.note == "speed 1/16x"
    assert not c.on_key(ord("Z"))  # not the viewer's key: MuJoCo's own shortcuts keep it


def test_arrows_and_q_e_steer_the_velocity_command_from_its_current_value():
    c = ViewerControls(CONTROLS)
    current = {"vel": (0.2, 0.0, 0.1), "height": (0.8,)}
    c.on_key(KEY["up"], current)  # x + a tenth of uniform(-0.5, 1.5)
    assert c.held == {"vel": [0.4, 0.0, 0.1]}
    c.on_key(KEY["left"], current)  # y +: to the robot's left
    c.on_key(KEY["q"], current)  # yaw +: turn left
    c.on_key(KEY["q"], current)
    assert c.held["vel"] == pytest.approx([0.4, 0.06, 0.3])
    c.on_key(KEY["right"], current)
    c.on_key(KEY["e"], current)
    c.on_key(KEY["down"], current)
    c.on_key(KEY["down"], current)
    assert c.held["vel"] == pytest.approx([0.0, 0.0, 0.2])
    assert c.note == "cmd.vel.x = 0" and "height" not in c.held  # only the command a key touched is held
    assert c.controls.entries[c.selected] == (VEL, 0)  # the list follows the field last changed
    c.on_key(KEY["delete"])
    assert c.held == {}


def test_home_end_select_and_page_keys_change_any_command_field():
    c = ViewerControls(CONTROLS)
    names = [f"{cmd.name}.{cmd.fields[i].name}" for cmd, i in c.controls.entries]
    assert names == ["height.h", "vel.x", "vel.y", "vel.yaw"]
    c.on_key(KEY["home"])  # wraps to the last entry
    assert c.note == "selected cmd.vel.yaw"
    c.on_key(KEY["end"])
    c.on_key(KEY["end"])
    assert c.controls.entries[c.selected] == (VEL, 0)
    c.on_key(KEY["home"])
    c.on_key(KEY["page_up"], {"height": (0.8,), "vel": (0, 0, 0)})
    c.on_key(KEY["page_up"], {"height": (0.8,), "vel": (0, 0, 0)})
    c.on_key(KEY["page_down"])
    assert c.held == {"height": [pytest.approx(0.84)]}


def test_keys_for_commands_a_task_does_not_have_say_so():
    c = ViewerControls(TaskControls((HEIGHT,)))
    c.on_key(KEY["up"])
    assert c.held == {} and c.note == "the task has no command with a 'x' field"
    c = ViewerControls(TaskControls())
    c.on_key(KEY["page_up"])
    assert c.held == {} and c.note == "the task has no command"
    assert TaskControls((HEIGHT, VEL)).velocity is VEL  # the first with x / y / yaw fields
    assert CommandField("c", 1.0, 1.0).step == 0.1  # a constant: steps of 0.1


# --------------------------------------------------------------------------- clock and overlay


def test_step_clock_follows_wall_time_times_speed_and_drops_what_it_cannot_catch_up():
    clock = StepClock(0.02, max_steps=8)
    assert clock.due(0.05, 1.0) == 2  # 0.01 s owed
    assert clock.due(0.01, 1.0) == 1
    assert clock.due(0.1, 0.5) == 2
    assert clock.due(0.1, 2.0) == 8  # 10 due, at most 8, the rest dropped
    assert clock.due(0.0, 1.0) == 0
    clock.due(0.019, 1.0)
    clock.hold()  # paused: nothing owed
    assert clock.due(0.002, 1.0) == 0


def _readout(tracker: EpisodeTracker, **changes) -> Readout:
    base = Readout(
        task="walk.ksim", policy="run iteration 7", time_s=1.25, episode=tracker.episode, episode_return=3.5,
        last_return=tracker.last_return, last_end=tracker.last_end, rewards=tracker.rewards,
        reward_R=tracker.reward_R, episode_reward_R=tracker.sum_R, terminations=tracker.terminations,
        terminations_K=tracker.flags_K, commands={"vel": (0.5, 0.0, -0.25), "height": (0.8,)}, level=0.3,
        push="fires event 'push' (level 0.30)",
    )  # fmt: skip
    return base._replace(**changes)


def test_episode_tracker_sums_weighted_terms_per_episode_and_says_how_it_ended():
    t = EpisodeTracker(["alive", "track"], ["fell", "tilted"])
    t.update(np.array([1.0, 0.25]), np.array([False, False]), done=False, truncated=False, episode_return=1.25)
    t.update(np.array([1.0, 0.5]), np.array([True, False]), done=True, truncated=False, episode_return=2.75)
    assert t.episode == 2 and t.last_return == 2.75 and t.last_end == "fell"
    np.testing.assert_allclose(t.reward_R, [1.0, 0.5])  # the last step's values stay on screen
    np.testing.assert_allclose(t.sum_R, 0.0)
    t.update(np.array([1.0, 0.0]), np.array([False, False]), done=True, truncated=True, episode_return=1.0)
    assert t.last_end == "time limit" and t.episode == 3
    t.restart()
    assert t.last_end == "reset" and t.last_return == 1.0 and t.episode == 4


def test_overlay_shows_time_return_every_weighted_term_terminations_and_commands():
    t = EpisodeTracker(["alive", "track_lin"], ["fell"])
    t.update(np.array([1.0, -0.0625]), np.array([True]), done=False, truncated=False, episode_return=0.9)
    c = ViewerControls(CONTROLS)
    c.on_key(KEY["up"], {"vel": (0.5, 0.0, -0.25)})
    c.on_key(KEY["space"])
    readout = _readout(t, commands={"vel": (0.7, 0.0, -0.25), "height": (0.8,)})
    texts = overlay_texts(readout, c, error="walk.ksim:3:1: error: bad\n  line")
    corners = {corner: (left.split("\n"), right.split("\n")) for corner, left, right in texts}
    assert set(corners) == {"TOPLEFT", "TOPRIGHT", "BOTTOMLEFT", "BOTTOMRIGHT"}
    status = dict(zip(*corners["TOPLEFT"]))
    assert status["time"] == "1.25 s" and status["return"] == "3.50" and status["speed"] == "1x  PAUSED"
    assert status["policy"] == "run iteration 7" and status["level"] == "0.30"
    assert status["P"] == "fires event 'push' (level 0.30)"
    assert status["error"] == "walk.ksim:3:1: error: bad"  # the first line; the terminal gets all of it
    assert status["key"] == "paused"
    rewards = dict(zip(*corners["TOPRIGHT"]))
    assert rewards["alive"] == "+1.0000  +1.00" and rewards["track_lin"] == "-0.0625  -0.06"
    bottom = dict(zip(*corners["BOTTOMLEFT"]))
    assert bottom["terminate fell"] == "FIRED"
    assert bottom["> cmd.vel.x"] == "+0.700 held"  # selected: the field the arrow key changed
    assert bottom["  cmd.height.h"] == "+0.800"
    assert "Space  N" in corners["BOTTOMRIGHT"][0]


def test_keys_that_mujoco_also_uses_are_switched_back():
    import mujoco

    opt = mujoco.MjvOption()
    for key, flag in view_mod._MUJOCO_TOGGLES.items():
        assert key in KEY.values() and isinstance(flag, mujoco.mjtVisFlag)
        assert 0 <= int(flag) < len(opt.flags)


# --------------------------------------------------------------------------- no display


def test_view_without_a_display_is_one_line_pointing_at_render(capsys, monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("the DISPLAY check is Linux's")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code = cli.main(["view", str(CARTPOLE_KSIM), "--seconds", "1"])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in err and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], err
    assert "no display" in lines[0] and "ksimdsl render" in lines[0]


def test_view_argument_errors_are_user_errors(capsys):
    assert cli.main(["view", str(CARTPOLE_KSIM), "--checkpoint", "3"]) == 2
    assert "--checkpoint needs --run" in capsys.readouterr().err
    assert cli.main(["view", str(CARTPOLE_KSIM), "--seconds", "0"]) == 2
    assert "--seconds must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["view", str(CARTPOLE_KSIM), "--deterministic", "--stochastic"])
    assert exit_.value.code == 2
    args = cli._parse(["view", "t.ksim"])
    assert args.stochastic is False and args.watch is False  # the policy's mode by default


# --------------------------------------------------------------------------- the episode shown (C MuJoCo, no window)


def _steer_text(*, weight: str = "0.5", name: str = "track", extra_obs: str = "", broken: bool = False) -> str:
    """tasks/cartpole.ksim with a command read by an observation and a reward, and a push event."""
    text = CARTPOLE_KSIM.read_text().replace('"models/cartpole.xml"', f'"{TASKS_DIR / "models" / "cartpole.xml"}"')
    text = text.replace(
        "observe actor\n",
        "command drive resample every 1s\n    x   uniform(-1, 1)\n    yaw uniform(-0.5, 0.5)\n\nobserve actor\n",
    )
    velocity = "    velocity = joint_vel\n"
    text = text.replace(velocity, f"{velocity}    command  = cmd.drive\n{extra_obs}")
    balance = "    balance  1.0 : upright * centered * small_control * small_velocity\n"
    reward = f"    {name}    {weight} : {'no_such_thing' if broken else 'cmd.drive.x'}\n"
    text = text.replace(balance, balance + reward)
    return text.replace("policy mlp", 'event push every 100s\n    joint_vel["hinge_1"] += 2\n\npolicy mlp')


@pytest.fixture(scope="module")
def steer(tmp_path_factory):
    path = tmp_path_factory.mktemp("view") / "steer.ksim"
    path.write_text(_steer_text())
    return path


@pytest.fixture(scope="module")
def steer_task(steer):
    from ksimdsl.session import load_task, view_task

    return view_task(load_task(str(steer), engine="mujoco"))


@pytest.fixture
def session(steer_task):
    from ksimdsl.runtime.tools.view_session import ViewSession

    s = ViewSession(steer_task, seed=3)
    yield s
    s.close()


def test_task_controls_are_the_commands_with_their_ranges_and_the_push_event(steer_task):
    from ksimdsl.frontend.check import check_file
    from ksimdsl.session import _task_controls

    drive = CommandControl("drive", (CommandField("x", -1.0, 1.0), CommandField("yaw", -0.5, 0.5)))
    assert steer_task.controls == TaskControls((drive,), push_event="push")
    assert steer_task.label == "steer.ksim"
    walk = _task_controls(check_file(str(TASKS_DIR / "walk.ksim")))
    assert walk.push_event == "push" and walk.velocity.name == "vel"
    ranges = [(f.name, f.low, f.high) for f in walk.velocity.fields]
    assert ranges == [("x", -0.3, 1.2), ("y", -0.3, 0.3), ("yaw", -0.6, 0.6)]
    assert _task_controls(check_file(str(CARTPOLE_KSIM))) == TaskControls()


def test_a_held_command_reaches_observations_and_rewards_and_outlives_resampling(session):
    session.step({"drive": [0.7, 0.1]})
    assert session.command_values() == {"drive": (0.7, 0.1)}
    np.testing.assert_allclose(session.mj.obs_actor_EO[0, -2:], [0.7, 0.1], rtol=1e-6)  # observe `command = cmd.drive`
    assert session.tracker.reward_R[1] == pytest.approx(0.5 * 0.7)  # `track 0.5 : cmd.drive.x`, weighted
    for _ in range(120):  # `resample every 1s` = 100 steps: the task would have drawn a new command
        session.step({"drive": [0.7, 0.1]})
    assert session.command_values() == {"drive": (0.7, 0.1)}
    for _ in range(120):
        session.step()  # released: the task samples it again
    assert session.command_values()["drive"] != (0.7, 0.1)
    readout = session.readout(ViewerControls(session.task.controls))
    assert readout.rewards == ("balance", "track") and readout.commands["drive"] == session.command_values()["drive"]


def test_p_fires_the_task_push_event_and_push_size_shoves_instead(steer_task, session):
    from ksimdsl.runtime.tools.view_session import ViewSession

    twin = ViewSession(steer_task, seed=3)  # the same episode, not pushed
    try:
        assert session.push() == "fires event 'push' (level 1.00)"
        session.step()
        twin.step()
        # `joint_vel["hinge_1"] += 2`, drawn by the kernel at this step
        assert session.data.qvel[1] - twin.data.qvel[1] == pytest.approx(2.0, abs=0.1)
        assert session.data.qvel[0] == pytest.approx(twin.data.qvel[0], abs=0.05)
    finally:
        twin.close()
    fixed = ViewSession(steer_task, push=1.0, seed=3)
    try:
        before = fixed.data.qvel.copy()
        assert fixed.push() == "shove joint velocities +-1"  # no free joint: every joint velocity
        moved = fixed.data.qvel - before
        assert np.all(np.abs(moved) <= 1.0) and np.abs(moved).max() > 0.05
        np.testing.assert_array_equal(fixed.mj.phys["qvel"][0], fixed.data.qvel)  # what the kernels read next
    finally:
        fixed.close()


def test_reset_starts_a_new_episode(session):
    for _ in range(5):
        session.step()
    assert session.mj.step_E[0] == 5
    session.restart()
    assert session.mj.step_E[0] == 0 and session.tracker.last_end == "reset" and session.tracker.episode == 2


def test_an_edited_task_replaces_the_running_one_when_it_fits_the_policy(steer_task, session, tmp_path):
    import jax

    from fixtures.cartpole import cartpole_task
    from ksimdsl.runtime.rl import ppo
    from ksimdsl.runtime.tools.view_session import ViewSession, ViewTask
    from ksimdsl.session import load_task, view_task

    # the command and its reward taken out again: the shipped cart-pole (numba kernels shared with other tests)
    spec, kernels, model_path = cartpole_task("numba")
    session.step({"drive": [0.25, 0.0]})
    session.swap(session.prepare(ViewTask(spec, kernels, str(model_path), label="cartpole.ksim")))
    assert session.mj.step_E[0] == 0  # a new episode of the new task
    session.step({"drive": [0.25, 0.0]})  # a command the task no longer has is not written
    assert session.spec.rewards == ("balance",) and session.command_values() == {}
    assert session.tracker.reward_R.shape == (1,) and 0 < session.tracker.reward_R[0] <= 1
    assert session.readout(ViewerControls()).task == "cartpole.ksim"

    with pytest.raises(KsimError, match="another model"):
        session.prepare(ViewTask(spec, kernels, str(TASKS_DIR / "models" / "walker.xml")))
    policy = ppo.make_policy(ppo.init_ppo_from_spec(steer_task.spec, key=jax.random.PRNGKey(0)))
    with_policy = ViewSession(steer_task, policy, policy_label="run iteration 1")
    try:
        edited = tmp_path / "steer.ksim"
        edited.write_text(_steer_text(extra_obs="    cart_again = cart\n"))
        with pytest.raises(KsimError, match="8 actor observations and 1 actions, the policy 7 and 1"):
            with_policy.prepare(view_task(load_task(str(edited), engine="mujoco")))
        with_policy.step()  # still the old task
        assert with_policy.spec.obs_actor_size == 7
        assert with_policy.readout(ViewerControls()).policy == "run iteration 1"
    finally:
        with_policy.close()


def test_the_file_watcher_recompiles_only_a_changed_file_and_reports_errors(tmp_path):
    from ksimdsl.session import TaskFileWatcher

    path = tmp_path / "steer.ksim"
    path.write_text(_steer_text())
    watch = TaskFileWatcher(str(path))
    assert watch() is None
    path.write_text(_steer_text(broken=True))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(KsimError, match="no_such_thing"):
        watch()
    assert watch() is None  # the same broken file is reported once
    path.write_text(_steer_text(weight="3.0"))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    task = watch()
    assert task.spec.rewards == ("balance", "track") and task.controls.push_event == "push"


def test_the_watcher_thread_hands_over_errors_and_new_tasks():
    class Session:
        def prepare(self, task):
            if task == "bad":
                raise KsimError("the edited task does not fit")
            return ("prepared", task)

    answers = iter(["bad", None, "good"])
    watcher = view_mod._Watcher(lambda: next(answers), Session(), poll_s=0.0)
    seen = []
    try:
        deadline = time.monotonic() + 10
        while len(seen) < 3 and time.monotonic() < deadline:
            prepared, error = watcher.poll(time.monotonic())
            if prepared is not None or error is not None:
                seen.append((prepared, error))
            elif watcher._future is None and len(seen) == 1:
                seen.append((None, None))  # the unchanged file: nothing to swap
            time.sleep(0.01)
    finally:
        watcher.close()
    assert seen == [(None, "ksimdsl: error: the edited task does not fit"), (None, None), (("prepared", "good"), None)]


def test_checkpoint_n_picks_that_iteration(steer_task, tmp_path):
    import jax

    from ksimdsl.runtime.rl import ppo
    from ksimdsl.runtime.tools.export import load_run_policy
    from ksimdsl.runtime.training.checkpoint import CheckpointMeta, save_checkpoint, spec_hash

    spec = steer_task.spec
    state = ppo.init_ppo_from_spec(spec, key=jax.random.PRNGKey(0))
    for iteration in (2, 5):
        meta = CheckpointMeta(iteration, 10 * iteration, 1.0, spec.task, spec_hash(spec), "mujoco")
        save_checkpoint(tmp_path, {"ppo": state}, meta)
    assert load_run_policy(spec, tmp_path, iteration=2)[1].iteration == 2
    assert load_run_policy(spec, tmp_path)[1].iteration == 5
    with pytest.raises(KsimError, match=r"no checkpoint of iteration 3 \(iterations: 2, 5\)"):
        load_run_policy(spec, tmp_path, iteration=3)


def test_a_fixed_push_shoves_the_free_joint_horizontally():
    import mujoco

    from ksimdsl.runtime.tools.view_session import shove

    model = mujoco.MjModel.from_xml_path(str(TASKS_DIR / "models" / "humanoid.xml"))
    data = mujoco.MjData(model)
    shove(model, data, 0.5, np.random.default_rng(0))
    assert np.linalg.norm(data.qvel[:2]) == pytest.approx(0.5)  # the free joint's world-frame x, y velocity
    np.testing.assert_array_equal(data.qvel[2:], 0.0)


def test_the_mouse_perturbation_becomes_a_body_force_for_the_env():
    import mujoco

    model = mujoco.MjModel.from_xml_path(str(TASKS_DIR / "models" / "cartpole.xml"))
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    pert = mujoco.MjvPerturb()
    assert not view_mod._perturbation(model, data, pert).any()  # nothing selected: no force
    body = model.nbody - 1
    pert.select, pert.active = body, int(mujoco.mjtPertBit.mjPERT_TRANSLATE)
    pert.localmass = 1.0
    pert.refselpos[:] = data.xipos[body] + [0.3, 0.0, 0.0]  # dragged 30 cm along x
    forces = view_mod._perturbation(model, data, pert)
    assert forces[body, 0] > 0 and not np.delete(forces, body, axis=0).any()
