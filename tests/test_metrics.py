"""The `metric` block at run time, and `ksimdsl eval --command/--seconds/--no-events`.

The task is tests/fixtures/cartpole_commanded.ksim: a two-field command `goal`
(pos, speed) resampled every 10 control steps, a push of +0.5 m/s on the cart
every 5 control steps, and the metrics `goal_pos = cmd.goal.pos`, `goal_speed`,
`cart_vel = joint_vel["slider"]`, `cart = joint_pos["slider"]` and `upright`.

What is checked: metric values equal the quantity they name, read back from
the physics after the step, on both engines; a pinned command reads exactly
its value in every step (also across its resample interval and resets) and in
the actor's observation; pushes switched off leave the cart still; a metric
that is not finite never fails or resets an env; training logs every metric
to metrics.jsonl and TensorBoard; `ksimdsl eval --command` reports per
command, and bad command arguments exit 2 pointing at the bad part.
Kernel-level parity of metrics between the backends is in test_parity.py.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from fixtures.cartpole import REPO, compiled_task

from ksimdsl import cli
from ksimdsl.runtime import engine as engines
from ksimdsl.runtime.engine.base import EpisodeCounters, KernelStep, OutcomeRules, step_outcome
from ksimdsl.runtime.engine.loop import run_episodes
from ksimdsl.runtime.engine.pins import EVENT_OFF_TIMER, MemPins
from ksimdsl.runtime.rl import ppo
from ksimdsl.runtime.training.runs import read_metrics

TASK = REPO / "tests" / "fixtures" / "cartpole_commanded.ksim"
BACKEND = {"mjx": "jax", "mujoco": "numba"}
#: Values exactly representable in float32, so that a sum over an episode divided by its length is exact.
GOAL_A, GOAL_B = (0.25, 0.75), (-0.5, 0.0)


def task(engine: str):
    return compiled_task(TASK, BACKEND[engine])


def column(spec, name: str) -> int:
    return spec.metrics.index(name)


def init_policy(spec) -> ppo.Policy:
    return ppo.make_policy(ppo.init_ppo_from_spec(spec, key=jax.random.PRNGKey(0)))


# --------------------------------------------------------------------------- pins


def test_pins_cover_the_command_slots_and_event_timers():
    spec = task("mujoco").spec
    cmd = next(c for c in spec.commands if c["name"] == "goal")
    timer = next(s for s in spec.mem_layout if s["name"] == "event.push.timer")
    pins = MemPins.build(spec, [{"goal": GOAL_A}, {}], events=False)
    mem_EM = np.full((2, spec.mem_size), 7.0)
    pins.apply(mem_EM, np)
    np.testing.assert_array_equal(mem_EM[0, cmd["offset"] : cmd["offset"] + 2], GOAL_A)
    np.testing.assert_array_equal(mem_EM[1, cmd["offset"] : cmd["offset"] + 2], [7.0, 7.0])  # not pinned there
    np.testing.assert_array_equal(mem_EM[:, timer["offset"]], [EVENT_OFF_TIMER, EVENT_OFF_TIMER])
    untouched = np.ones(spec.mem_size, bool)
    untouched[[cmd["offset"], cmd["offset"] + 1, timer["offset"]]] = False
    assert np.all(mem_EM[:, untouched] == 7.0)
    # the envs being reset read their own rows of the table
    mem_KM = np.zeros((1, spec.mem_size))
    pins.apply(mem_KM, np, envs=np.array([1]))
    assert mem_KM[0, cmd["offset"]] == 0.0 and mem_KM[0, timer["offset"]] == EVENT_OFF_TIMER
    with pytest.raises(Exception, match="unknown command 'gaol'.*did you mean 'goal'"):
        MemPins.build(spec, [{"gaol": GOAL_A}])
    with pytest.raises(Exception, match="command 'goal' has 2 fields, got 3 values"):
        MemPins.build(spec, [{"goal": (1, 2, 3)}])
    assert not MemPins.build(spec, [{}, {}])  # nothing to pin: the envs run as in training


# --------------------------------------------------------------------------- metrics in the engines


def test_metrics_read_back_from_the_physics_and_a_pinned_command_holds():
    """15 zero-action steps of 3 envs (across the command's 10-step resample interval), pushes off:
    `cart` is the slider position after the step, `goal_*` the pinned value, also in the observation.
    (C MuJoCo; on MJX the same pins and metric columns are checked through `run_episodes` below.)"""
    engine = "mujoco"
    spec, kernels, path = task(engine)
    groups = [{"goal": GOAL_A}, {"goal": GOAL_B}, {"goal": GOAL_A}]
    env = engines.get(engine).make_env(
        spec, kernels, path, num_envs=3, threads=1, pins=MemPins.build(spec, groups, events=False)
    )
    loop = engines.get(engine).loop
    step = loop.jit(env.step)
    try:
        state = loop.jit(env.reset)(loop.key(3))
        goal_obs = slice(5, 7)  # position[3], velocity[2], goal[2]
        want_EC = np.array([GOAL_A, GOAL_B, GOAL_A])
        np.testing.assert_array_equal(np.asarray(state.obs_actor_EO)[:, goal_obs], want_EC)
        for _ in range(15):
            state, out = step(state, loop.xp.zeros((3, spec.action_size), loop.xp.float32))
            assert not np.asarray(out.done_E).any()
            metrics_EJ = np.asarray(out.metrics_EJ)
            np.testing.assert_allclose(
                metrics_EJ[:, column(spec, "cart")], np.asarray(env.qpos_EQ(state))[:, 0], rtol=1e-5, atol=1e-6
            )
            np.testing.assert_array_equal(metrics_EJ[:, column(spec, "goal_pos")], want_EC[:, 0])
            np.testing.assert_array_equal(metrics_EJ[:, column(spec, "goal_speed")], want_EC[:, 1])
            np.testing.assert_array_equal(np.asarray(state.obs_actor_EO)[:, goal_obs], want_EC)
            # pushes off: the cart is only moved by the (zero) action and the pole
            assert np.abs(metrics_EJ[:, column(spec, "cart_vel")]).max() < 0.05
    finally:
        env.close()


def test_metrics_never_fail_or_reset_an_env():
    """A metric that is NaN reads as 0 and changes neither reward nor termination; a diverged env's are 0."""
    rules = OutcomeRules.from_spec(task("mujoco").spec)  # one termination, `fell`
    kernel = KernelStep(
        reward_terms_ER=np.ones((3, 1)),
        reward_weights_ER=np.ones((3, 1)),
        terminations_EK=np.zeros((3, 1), bool),
        obs_actor_EO=np.zeros((3, 2), np.float32),
        obs_critic_EC=np.zeros((3, 2), np.float32),
        metrics_EJ=np.array([[np.nan, 2.0], [np.inf, 3.0], [1.0, 4.0]]),
    )
    counters = EpisodeCounters(np.zeros(3, np.int32), np.zeros(3), np.zeros(3), np.zeros(3, np.int32))
    out, _ = step_outcome(np, rules, kernel, np.array([False, False, True]), counters)
    np.testing.assert_array_equal(out.metrics_EJ, [[0.0, 2.0], [0.0, 3.0], [0.0, 0.0]])
    np.testing.assert_array_equal(out.reward_E, [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(out.failure_E, [False, False, True])  # only the diverged env fails


@pytest.mark.parametrize("engine", ["mujoco", pytest.param("mjx", marks=pytest.mark.slow)])
def test_run_episodes_with_pinned_commands_and_events_off(engine):
    """Per-episode metric sums: a pinned command averages exactly to its value; pushes move the cart
    (+0.5 m/s every 5 steps: mean speed ~0.75 over 20 steps) unless switched off. MJX runs the
    events-off batch only (one compile)."""
    spec, kernels, path = task(engine)
    spec = spec.with_overrides(episode_steps=20)
    policy = init_policy(spec)
    groups = [{"goal": GOAL_A}] * 2 + [{"goal": GOAL_B}] * 2 + [{}] * 2
    means = {}
    for events in (False, True) if engine == "mujoco" else (False,):
        pins = MemPins.build(spec, groups, events=events)
        r = run_episodes(engines.get(engine), spec, kernels, path, policy, episodes=6, seed=0, threads=1, pins=pins)
        np.testing.assert_array_equal(r.length_E, 20)
        assert not r.failure_E.any() and r.truncated_E.all()
        means[events] = mean_EJ = r.metric_sum_EJ / r.length_E[:, None]
        np.testing.assert_array_equal(mean_EJ[:4, column(spec, "goal_pos")], [0.25, 0.25, -0.5, -0.5])
        np.testing.assert_array_equal(mean_EJ[:4, column(spec, "goal_speed")], [0.75, 0.75, 0.0, 0.0])
        # unpinned envs sample their goal (resampled every 10 steps): not the pinned values
        assert not np.isin(mean_EJ[4:, column(spec, "goal_pos")], [0.25, -0.5]).any()
        np.testing.assert_array_equal(mean_EJ[:, column(spec, "upright")], 1.0)
    assert np.abs(means[False][:, column(spec, "cart_vel")]).max() < 0.05
    if True in means:
        assert means[True][:, column(spec, "cart_vel")].min() > 0.6


# --------------------------------------------------------------------------- training logs and `ksimdsl eval`


def run_main(capsys, *args: object) -> SimpleNamespace:
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One training iteration of the fixture task on C MuJoCo: a run directory with a checkpoint."""
    run_dir = tmp_path_factory.mktemp("metrics") / "run"
    code = cli.main(["train", str(TASK), "engine=mujoco", "--run-dir", str(run_dir), "--no-progress"])
    assert code == 0
    return run_dir


def _tensorboard_tags(run_dir: Path) -> set[str]:
    """The scalar tags of the run's TensorBoard event files (TFRecord framing, tensorboardX's protobuf)."""
    from tensorboardX.proto import event_pb2

    tags: set[str] = set()
    for path in (run_dir / "tb").rglob("events.out.tfevents.*"):
        data = path.read_bytes()
        pos = 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            tags.update(v.tag for v in event.summary.value)
            pos += 12 + length + 4
    return tags


@pytest.mark.slow  # the module's training run
def test_training_logs_every_metric(trained_run):
    (record,) = read_metrics(trained_run)
    assert -0.5 <= record["metric/goal_pos"] <= 0.5 and 0.0 <= record["metric/goal_speed"] <= 1.0
    assert 0.0 <= record["metric/upright"] <= 1.0
    assert record["metric/cart_vel"] > 0.1  # the pushes, logged as a mean per control step
    assert {f"metric/{name}" for name in task("mujoco").spec.metrics} <= _tensorboard_tags(trained_run)
    assert "reward/goal_pos" not in record and len([k for k in record if k.startswith("reward/")]) == 2


def test_eval_json_reports_each_command(capsys, trained_run):
    result = run_main(
        capsys, "eval", TASK, "--run", trained_run, "--engine", "mujoco", "--episodes", 3, "--no-events",
        "--command", "goal=0.25,0.75", "--command", "goal=-0.5,0", "--seconds", 0.15, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["command"] for r in reports] == [{"goal": [0.25, 0.75]}, {"goal": [-0.5, 0.0]}]
    for report, (pos, speed) in zip(reports, (GOAL_A, GOAL_B)):
        assert set(report) == {"command", "episodes", "falls", "mean_return", "mean_length", "metrics", "level"}
        assert report["episodes"] == 3 and report["falls"] == 0 and report["mean_length"] == 15
        assert report["metrics"]["goal_pos"] == pos and report["metrics"]["goal_speed"] == speed
        assert abs(report["metrics"]["cart_vel"]) < 0.05  # --no-events
        assert set(report["metrics"]) == set(task("mujoco").spec.metrics)
    # without --command: the usual report, with falls and the metrics (commands sampled, pushes on)
    result = run_main(capsys, "eval", TASK, "--run", trained_run, "--engine", "mujoco", "--episodes", 2, "--json")
    report = json.loads(result.stdout)
    assert report["falls"] == 0 and report["truncations"] == 2 and report["metrics"]["cart_vel"] > 0.5


def test_eval_runs_at_the_trained_level_or_the_one_asked_for(capsys, trained_run):
    """The fixture has no curriculum (level 1 throughout training): eval runs there by default, as the
    level the run logged; `--level 0.25` runs every env at 0.25 (the `level` metric reads it)."""
    assert read_metrics(trained_run)[-1]["level"] == 1.0
    common = ("eval", TASK, "--run", trained_run, "--engine", "mujoco", "--episodes", 2, "--seconds", 0.05, "--json")
    for extra, level in (((), 1.0), (("--level", "trained"), 1.0), (("--level", "0.25"), 0.25)):
        report = json.loads(run_main(capsys, *common, *extra).stdout)
        assert report["level"] == level and report["metrics"]["level"] == pytest.approx(level)
    result = run_main(capsys, *common, "--level", "1.5")
    assert result.returncode == 2 and "expected a number in [0, 1] or 'trained', got '1.5'" in result.stderr


def test_trained_level_is_the_level_logged_for_the_checkpoint_iteration(tmp_path):
    from ksimdsl.runtime.tools.evaluate import trained_level

    records = [{"iteration": i, "level": i / 10} for i in range(1, 6)] + [{"iteration": 6}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert trained_level(tmp_path, 3) == 0.3 and trained_level(tmp_path, 6) == 0.5
    assert trained_level(tmp_path, 0) == 0.0 and trained_level(tmp_path / "missing", 3) == 0.0


@pytest.mark.parametrize(
    "argument, message, caret",
    [
        ("goall=0.25,0.75", "unknown command 'goall' (did you mean 'goal'?)", "              ^~~~~"),
        ("goal=1,2,3", "command 'goal' needs 2 values (pos, speed), got 3", "                   ^~~~~"),
        ("goal=0.5,fast", "expected a number, got 'fast'", "                       ^~~~"),
        ("goal", "expected --command NAME=v1,v2,...", "              ^~~~"),
    ],
)
def test_bad_command_arguments_exit_2_pointing_at_the_bad_part(capsys, trained_run, argument, message, caret):
    result = run_main(capsys, "eval", TASK, "--run", trained_run, "--engine", "mujoco", "--command", argument)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("command line:1:") and message in lines[0], result.stderr
    assert lines[1] == f"    --command {argument}" and lines[2] == caret, result.stderr


def test_falls_are_failures_before_the_limit_not_truncations(capsys, trained_run):
    """Long episodes of a pushed cart: the cart hits the end of its rail and the pole falls (falls > 0,
    each shorter than the limit); cut at 0.1 s the same episodes only truncate."""
    common = ("eval", TASK, "--run", trained_run, "--engine", "mujoco", "--episodes", 2, "--json")
    long = json.loads(run_main(capsys, *common, "--command", "goal=0,0", "--seconds", 10).stdout)
    assert long["falls"] == 2 and long["mean_length"] < 1000
    short = json.loads(run_main(capsys, *common, "--command", "goal=0,0", "--seconds", 0.1).stdout)
    assert short["falls"] == 0 and short["mean_length"] == 10


# --------------------------------------------------------------------------- `ksimdsl render --command / --no-events`


def test_render_rollouts_hold_commands_and_switch_events_off():
    """The rollout `render` draws takes the same pins as eval: with events off the cart is never pushed
    (the fixture pushes it right by 0.5 m/s every 5 steps), with them on it is."""
    from ksimdsl.runtime.tools.render import record_rollout

    compiled = task("mujoco")
    spec, policy = compiled.spec, init_policy(compiled.spec)
    moved = {}
    for events in (True, False):
        pins = MemPins.build(spec, [{"goal": GOAL_A}], events=events)
        rollout = record_rollout(
            spec, compiled.kernels, policy, model_path=compiled.model_path, engine="mujoco", steps=20, pins=pins,
        )
        moved[events] = float(rollout.qpos_TQ[-1, 0] - rollout.qpos_TQ[0, 0])  # qpos[0]: the slider
    assert moved[True] > 0.1 and abs(moved[False]) < 0.01, moved


def test_render_refuses_a_bad_command_before_rendering(capsys, trained_run, tmp_path):
    result = run_main(
        capsys, "render", TASK, "--run", trained_run, "--engine", "mujoco", "-o", tmp_path / "a.gif",
        "--command", "goall=0.25,0.75",
    )  # fmt: skip
    assert result.returncode == 2 and "unknown command 'goall' (did you mean 'goal'?)" in result.stderr
    assert not (tmp_path / "a.gif").exists()
