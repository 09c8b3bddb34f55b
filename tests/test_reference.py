"""Reference motions: the clip format and its mapping onto a model, the `reference` statement, the `ref.*`
quantities in the JAX and numba kernels (against a numpy interpolation of the clip), loop and clamp, and
`reset` `from reference` (docs/motions.md).

The model is a tiny one with every kind of joint (a free root, a ball joint and two hinges), so that
joint order, qpos/qvel widths and quaternions are all exercised.
"""

from __future__ import annotations

import os
from pathlib import Path

import mujoco
import numpy as np
import pytest
from test_parity import assert_parity, compile_both, random_inputs, run_jax, run_numba

from ksimdsl.errors import KsimError
from ksimdsl.frontend.check import check_file
from ksimdsl.model.motion import Clip, ClipError, load_clip, map_clip, save_clip

TINY_XML = """
<mujoco>
  <option timestep="0.01"/>
  <worldbody>
    <geom name="floor" type="plane" size="5 5 0.1"/>
    <body name="torso" pos="0 0 1">
      <freejoint name="root"/>
      <geom type="sphere" size="0.1"/>
      <body name="arm" pos="0.2 0 0">
        <joint name="shoulder" type="ball"/>
        <geom type="capsule" fromto="0 0 0 0.3 0 0" size="0.04"/>
        <body name="hand" pos="0.3 0 0">
          <joint name="elbow" type="hinge" axis="0 1 0" range="-2 2"/>
          <geom type="sphere" size="0.05"/>
        </body>
      </body>
      <body name="leg" pos="0 0 -0.3">
        <joint name="hip" type="hinge" axis="1 0 0"/>
        <geom type="capsule" fromto="0 0 0 0 0 -0.4" size="0.04"/>
      </body>
    </body>
  </worldbody>
  <actuator><motor joint="elbow"/><motor joint="hip"/></actuator>
</mujoco>
"""

FRAMES, FPS = 9, 20.0
#: The clip's joints, in another order than the model's (root, shoulder, elbow, hip).
CLIP_JOINTS = ("hip", "root", "elbow", "shoulder")


def _quat_z(angle: float) -> np.ndarray:
    return np.array([np.cos(angle / 2), 0.0, 0.0, np.sin(angle / 2)])


def tiny_clip(qvel: bool = True) -> tuple[Clip, np.ndarray, np.ndarray]:
    """A clip in CLIP_JOINTS order, and its qpos / qvel in the model's order (quaternions unit, aligned)."""
    t = np.arange(FRAMES) / FPS
    model_qpos = np.zeros((FRAMES, 13))
    model_qpos[:, 0] = 0.5 * t  # walks forward
    model_qpos[:, 2] = 1.0 + 0.05 * np.sin(4 * t)
    model_qpos[:, 3:7] = [_quat_z(a) for a in 0.8 * t]  # turns about z
    model_qpos[:, 7:11] = [[np.cos(a), np.sin(a), 0, 0] for a in 0.3 * np.sin(5 * t)]
    model_qpos[:, 11] = 0.6 * np.sin(6 * t)  # elbow
    model_qpos[:, 12] = -0.4 * np.cos(6 * t)  # hip
    model_qvel = np.random.default_rng(0).uniform(-1, 1, (FRAMES, 11))
    stored = model_qpos.copy()
    stored[1::3, 3:7] *= -1  # the same rotations, written with the other sign
    stored[2, 7:11] *= 2.0  # not normalized
    qpos = np.concatenate([stored[:, 12:13], stored[:, 0:7], stored[:, 11:12], stored[:, 7:11]], axis=1)
    v = np.concatenate([model_qvel[:, 10:11], model_qvel[:, 0:6], model_qvel[:, 9:10], model_qvel[:, 6:9]], axis=1)
    return Clip(qpos, FPS, CLIP_JOINTS, v if qvel else None), model_qpos, model_qvel


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A directory with the model tiny.xml and the clip clip.npz; (dir, model, qpos_FQ, qvel_FV)."""
    d = tmp_path_factory.mktemp("ref")
    (d / "tiny.xml").write_text(TINY_XML)
    clip, qpos, qvel = tiny_clip()
    save_clip(d / "clip.npz", clip)
    return d, mujoco.MjModel.from_xml_path(str(d / "tiny.xml")), qpos, qvel


def write_task(d: Path, body: str, reference: str = 'reference "clip.npz"', name: str = "t") -> Path:
    path = d / f"{name}.ksim"
    text = f'task {name}\nmodel "tiny.xml"\nphysics dt=10ms ctrl_dt=20ms\nactuators torque\nepisode 200 steps\n'
    if "\nreward" not in "\n" + body:
        body += "reward\n    alive 1.0 : 1\n"
    path.write_text(text + (reference + "\n" if reference else "") + body)
    return path


def check_error(d: Path, body: str, reference: str = 'reference "clip.npz"') -> str:
    with pytest.raises(KsimError) as err:
        check_file(str(write_task(d, body, reference, name="bad")))
    return err.value.format()


# --------------------------------------------------------------------------- the clip format


def test_a_clip_round_trips_through_its_file(tmp_path):
    clip, _, _ = tiny_clip()
    body_pos = np.random.default_rng(1).normal(size=(FRAMES, 2, 3))
    full = Clip(clip.qpos, clip.fps, clip.joint_names, clip.qvel, ("torso", "hand"), body_pos)
    path = save_clip(tmp_path / "c.npz", full)
    back = load_clip(path)
    np.testing.assert_array_equal(back.qpos, clip.qpos)
    np.testing.assert_array_equal(back.qvel, clip.qvel)
    np.testing.assert_array_equal(back.body_pos, body_pos)
    assert (back.fps, back.joint_names, back.body_names) == (FPS, CLIP_JOINTS, ("torso", "hand"))
    assert back.frames == FRAMES and back.duration == pytest.approx(0.4)
    with np.load(path, allow_pickle=False) as z:  # plain arrays, strings as unicode: no pickle needed
        assert z["joint_names"].dtype.kind == "U" and z["qpos"].dtype == np.float64
    assert not list(tmp_path.glob(".*tmp*"))


def _npz(tmp_path: Path, **arrays) -> Path:
    base = {"qpos": np.zeros((3, 2)), "fps": np.array(30.0), "joint_names": np.array(["a", "b"])}
    path = tmp_path / "c.npz"
    np.savez(path, **{k: v for k, v in (base | arrays).items() if v is not None})
    return path


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"qpos": None}, "missing array 'qpos'"),
        ({"qvle": np.zeros((3, 2))}, "unknown array 'qvle' (did you mean 'qvel'?)"),
        ({"qpos": np.zeros((1, 2))}, "a clip needs at least 2 frames, got 1"),
        ({"qpos": np.array([[0.0, np.nan]] * 3)}, "'qpos' has a value that is not finite (at index (0, 1))"),
        ({"fps": np.array(-5.0)}, "'fps' must be a positive number, got -5"),
        ({"fps": np.array([30.0, 60.0])}, "'fps' must be one number"),
        ({"joint_names": np.array(["a", "a"])}, "'joint_names' names 'a' twice"),
        ({"joint_names": np.array([1, 2])}, "'joint_names' must be a vector of strings"),
        ({"qvel": np.zeros((4, 2))}, "'qvel' has 4 frames, 'qpos' 3"),
        ({"body_names": np.array(["x"])}, "'body_names' and 'body_pos' come together"),
        ({"body_names": np.array(["x"]), "body_pos": np.zeros((3, 2, 3))},
         "'body_pos' must have shape (frames, bodies, 3) = (3, 1, 3)"),
        ({"qpos": np.array([[object()] * 2] * 3, dtype=object)}, "holds Python objects (pickled arrays)"),
    ],
    ids=["missing", "unknown", "one_frame", "nan", "fps", "fps_vector", "twice", "not_strings", "qvel_frames",
         "bodies_alone", "body_shape", "pickle"],
)  # fmt: skip
def test_bad_clip_files_say_what_is_wrong(tmp_path, arrays, message):
    with pytest.raises(ClipError) as err:
        load_clip(_npz(tmp_path, **arrays))
    assert message in str(err.value)


def test_files_that_are_not_clips(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    (tmp_path / "b.npz").write_text("not a zip")
    for name, message in [("a.npy", "a single .npy array"), ("b.npz", "is not an .npz file"), ("c.npz", "not found")]:
        with pytest.raises(ClipError, match=message):
            load_clip(tmp_path / name)


# --------------------------------------------------------------------------- mapping onto a model


def test_joints_map_by_name_quaternions_are_aligned_and_velocities_differentiated(tiny):
    _, model, qpos, qvel = tiny
    clip, _, _ = tiny_clip()
    mapped = map_clip(clip, model)
    np.testing.assert_allclose(mapped.qpos_FQ, qpos, atol=1e-12)  # the model's order, signs made consistent
    np.testing.assert_array_equal(mapped.qvel_FV, qvel)
    assert mapped.quat_adr == (3, 7) and mapped.qvel_given
    # without qvel: finite differences of qpos, as MuJoCo integrates (qpos[k] + qvel[k] / fps = qpos[k + 1])
    mapped = map_clip(tiny_clip(qvel=False)[0], model)
    assert not mapped.qvel_given
    for k in (0, 4):
        nxt = mapped.qpos_FQ[k].copy()
        mujoco.mj_integratePos(model, nxt, mapped.qvel_FV[k], 1.0 / FPS)
        np.testing.assert_allclose(nxt, mapped.qpos_FQ[k + 1], atol=1e-9)
    np.testing.assert_array_equal(mapped.qvel_FV[-1], mapped.qvel_FV[-2])
    # a body without positions in the clip: forward kinematics of its qpos
    data = mujoco.MjData(model)
    data.qpos[:] = mapped.qpos_FQ[5]
    mujoco.mj_kinematics(model, data)
    hand = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "hand")
    np.testing.assert_allclose(mapped.body_pos_F3(hand)[5], data.xpos[hand], atol=1e-12)


def test_joint_name_mismatches_name_both_sides_with_suggestions(tiny):
    _, model, _, _ = tiny
    clip, _, _ = tiny_clip()
    misspelt = Clip(clip.qpos, FPS, ("hip", "root", "elbw", "shoulder"))
    with pytest.raises(ClipError) as err:
        map_clip(misspelt, model)
    assert str(err.value) == (
        "the model's joint 'elbow' (did you mean 'elbw'?) is not in the clip; "
        "the clip's joint 'elbw' (did you mean 'elbow'?) is not in the model"
    )
    fewer = Clip(clip.qpos[:, :8], FPS, ("hip", "root"))
    with pytest.raises(ClipError, match=r"^the model's joints 'shoulder', 'elbow' are not in the clip$"):
        map_clip(fewer, model)
    wide = Clip(np.zeros((FRAMES, 14)), FPS, CLIP_JOINTS)
    with pytest.raises(ClipError, match=r"'qpos' has 14 columns, but its joints take 13 on this model"):
        map_clip(wide, model)


# --------------------------------------------------------------------------- the statement and ref.* in the checker


def test_reference_errors_point_at_the_task_text(tiny):
    d, _, _, _ = tiny
    obs = "observe actor\n    x = {}\n"
    text = check_error(d, obs.format("ref.joint_pso"))
    assert "bad.ksim:8:13: error: unknown reference quantity 'ref.joint_pso' (did you mean 'joint_pos'?)" in text
    text = check_error(d, obs.format("ref.joint_pos"), reference="")
    assert "bad.ksim:7:9: error: 'ref' reads the reference motion, but the task has no `reference` statement" in text
    text = check_error(d, obs.format('ref.body_pos("hnd")'))
    assert "error: no body named 'hnd' (did you mean 'hand'?)" in text
    text = check_error(d, obs.format("ref"))
    assert "error: write ref.NAME for the reference motion" in text
    text = check_error(d, obs.format("ref.phase"), reference='reference "clip.npz" loop lopo')
    assert "bad.ksim:6:27: error: unknown reference option 'lopo' (did you mean 'loop'?)" in text
    text = check_error(d, obs.format("ref.phase"), reference='reference "clip.npz" loop clamp')
    assert "error: 'loop' and 'clamp' both choose the end of the clip; give one of them" in text
    text = check_error(d, obs.format("ref.phase"), reference='reference "nope.npz"')
    assert "bad.ksim:6:11: error: clip file 'nope.npz' not found (relative paths start at the task file's directory)" in text
    static = "observe actor\n    x = 1\n"
    text = check_error(d, static + "reward\n    r ref.phase : 1\n")
    assert "bad.ksim:10:7: error: the weight of reward 'r' may use only numbers and `level`; 'ref.phase' changes" in text
    text = check_error(d, static + "state s = ref.phase -> s\n")
    assert "bad.ksim:9:11: error: the initial value of state 's' may use only numbers, `level` and distributions" in text
    text = check_error(d, static + "reset\n    from reference\n", reference="")
    assert "bad.ksim:9:5: error: 'ref' reads the reference motion, but the task has no `reference` statement" in text


def test_a_clip_that_does_not_fit_the_model_is_an_error_at_its_path(tiny, tmp_path):
    d, _, _, _ = tiny
    clip, _, _ = tiny_clip()
    save_clip(d / "other.npz", Clip(clip.qpos, FPS, ("hip", "root", "elbw", "shoulder")))
    text = check_error(d, "observe actor\n    x = ref.phase\n", reference='reference "other.npz"')
    assert text.endswith(
        "bad.ksim:6:11: error: clip 'other.npz' does not fit the model: the model's joint 'elbow' (did you mean "
        "'elbw'?) is not in the clip; the clip's joint 'elbw' (did you mean 'elbow'?) is not in the model\n"
        '    reference "other.npz"\n'
        "              ^~~~~~~~~~~"
    )


# --------------------------------------------------------------------------- the kernels


def reference_at(table: np.ndarray, position: np.ndarray, quats: tuple[int, ...] = ()) -> np.ndarray:
    """numpy: the clip table [F, C] interpolated at positions [E] (in frames), quaternions normalized."""
    i = np.minimum(np.floor(position), len(table) - 2).astype(int)
    w = (position - i)[:, None]
    out = table[i] * (1 - w) + table[i + 1] * w
    for q in quats:
        out[:, q : q + 4] /= np.linalg.norm(out[:, q : q + 4], axis=1, keepdims=True)
    return out


def position_at(start: np.ndarray, time: float, loop: bool) -> np.ndarray:
    last = FRAMES - 1
    p = start + time * FPS
    return np.mod(p, last) if loop else np.minimum(p, last)


ALL_REFS = """observe actor
    jp = ref.joint_pos
    jv = ref.joint_vel
    bp = ref.base_pos
    bq = ref.base_quat
    hand = ref.body_pos("hand")
    ph = ref.phase
    q = ref.qpos
    v = ref.qvel
    vsel = ref.qvel["[rh]*"]
reward
    track 1.0 : exp_kernel(joint_pos - ref.joint_pos, 0.5)
    lagged 1.0 : prev(ref.phase)
reset
    from reference
"""


def _slices(spec) -> dict[str, slice]:
    return {o["name"]: slice(o["offset"], o["offset"] + o["size"]) for o in spec["obs"]["actor"]}


def test_ref_quantities_agree_on_both_backends_and_follow_the_clip_over_steps(tiny):
    d, model, qpos, qvel = tiny
    task = check_file(str(write_task(d, ALL_REFS, name="all_refs")))
    jx, nb, spec = compile_both(task)
    hand = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "hand")
    hand_pos = map_clip(load_clip(d / "clip.npz"), model).body_pos_F3(hand)
    E, ctrl_dt = 5, 0.02
    reset_in = random_inputs(task, spec, "reset", E, seed=1)
    reset_in["rand_u"][:, 0] = [0.0, 0.3, 0.5, 0.999, 0.77]  # the start phase draw
    out = run_jax(jx, spec, "reset", reset_in), run_numba(nb, spec, "reset", reset_in)
    assert_parity(*out, "reset")
    start = reset_in["rand_u"][:, 0] * (FRAMES - 1)
    mems = [o["mem"] for o in out]
    slot = next(s["offset"] for s in spec["mem_layout"] if s["name"] == "ref.start")
    np.testing.assert_allclose(mems[1][:, slot], start, rtol=1e-12)
    # from reference: the episode starts in the reference's state at its start phase
    np.testing.assert_allclose(out[1]["qpos"], reference_at(qpos, start, (3, 7)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out[0]["qpos"], reference_at(qpos, start, (3, 7)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[1]["qvel"], reference_at(qvel, start), rtol=1e-6, atol=1e-6)
    at = _slices(spec)
    for k in range(12):  # past the clip's end (8 frames at 20 fps = 0.4 s): it loops
        phase = "observe" if k == 0 else "step"
        inputs = random_inputs(task, spec, phase, E, seed=10 + k)
        inputs["time"] = np.full(E, k * ctrl_dt)
        results = []
        for run, module, mem in ((run_jax, jx, mems[0]), (run_numba, nb, mems[1])):
            inputs["mem"] = mem
            results.append(run(module, spec, phase, inputs))
        assert_parity(*results, f"{phase} {k}")
        if phase == "step":
            mems = [r["mem"] for r in results]
        p = position_at(start, k * ctrl_dt, loop=True)
        actor = results[1]["actor"]
        expect = {
            "jp": reference_at(qpos[:, 11:13], p),
            "jv": reference_at(qvel[:, 9:11], p),
            "bp": reference_at(qpos[:, 0:3], p),
            "bq": reference_at(qpos[:, 3:7], p, (0,)),
            "hand": reference_at(hand_pos, p),
            "ph": (p / (FRAMES - 1))[:, None],
            "q": reference_at(qpos, p, (3, 7)),
            "v": reference_at(qvel, p),
            "vsel": reference_at(qvel[:, [0, 1, 2, 3, 4, 5, 10]], p),
        }
        for name, want in expect.items():
            np.testing.assert_allclose(actor[:, at[name]], want, rtol=1e-6, atol=1e-6, err_msg=f"{name} at step {k}")
        if phase == "step" and k > 1:  # prev(ref.phase): the phase one control step earlier
            np.testing.assert_allclose(results[1]["reward_terms"][:, 1], position_at(start, (k - 1) * ctrl_dt, True) / 8)
    # the loop wrapped: env 3 started near the clip's end
    assert position_at(start, 11 * ctrl_dt, True)[3] < start[3]


@pytest.fixture(scope="module")
def clamped(tiny):
    """(task, jax module, numba module, spec) of a task whose reference clamps and starts at frame 0."""
    d = tiny[0]
    body = "observe actor\n    ph = ref.phase\n    q = ref.qpos\nreset\n    from reference\n    joint_vel = 0\n"
    task = check_file(str(write_task(d, body, reference='reference "clip.npz" clamp fixed', name="clamped")))
    return (task, *compile_both(task))


def test_clamp_holds_the_last_frame_and_fixed_starts_at_the_first(tiny, clamped):
    _, _, qpos, qvel = tiny
    task, jx, nb, spec = clamped
    assert spec["rand"]["reset"] == [0, 0]  # a fixed start draws nothing
    E = 3
    reset_in = random_inputs(task, spec, "reset", E, seed=2)
    out = run_numba(nb, spec, "reset", reset_in)
    assert_parity(run_jax(jx, spec, "reset", reset_in), out, "reset")
    np.testing.assert_allclose(out["qpos"], np.repeat(qpos[:1], E, 0), rtol=1e-6, atol=1e-7)  # frame 0
    expect_qvel = qvel[0].copy()
    expect_qvel[9:11] = 0  # the reset block's writes apply on top of the reference's frame
    np.testing.assert_allclose(out["qvel"], np.repeat(expect_qvel[None], E, 0), rtol=1e-6, atol=1e-7)
    at = _slices(spec)
    inputs = random_inputs(task, spec, "observe", E, seed=3)
    inputs["mem"] = out["mem"]
    for time, position in [(0.1, 2.0), (0.4, 8.0), (3.0, 8.0)]:  # the clip ends after 0.4 s
        inputs["time"] = np.full(E, time)
        a, b = run_jax(jx, spec, "observe", inputs), run_numba(nb, spec, "observe", inputs)
        assert_parity(a, b, f"observe at {time}")
        np.testing.assert_allclose(b["actor"][:, at["ph"]], position / 8)
        np.testing.assert_allclose(b["actor"][:, at["q"]], np.repeat(qpos[int(position)][None], E, 0), atol=1e-6)
    # a corrupted position (NaN) reads frame 0 on both backends, never outside the table
    inputs["mem"] = np.full_like(out["mem"], np.nan)
    a, b = run_jax(jx, spec, "observe", inputs), run_numba(nb, spec, "observe", inputs)
    np.testing.assert_allclose(b["actor"][:, at["q"]], np.repeat(qpos[:1], E, 0), atol=1e-6)
    np.testing.assert_allclose(a["actor"], b["actor"], atol=1e-5)


def test_an_episode_on_the_engine_starts_from_the_reference(tiny, clamped):
    from ksimdsl.abi import TaskSpec
    from ksimdsl.runtime.engine.mujoco.env import MujocoEnv

    d, _, qpos, qvel = tiny
    _, _, nb, spec = clamped
    env = MujocoEnv(TaskSpec.from_dict(spec), nb, os.fspath(d / "tiny.xml"), num_envs=2, threads=1)
    try:
        env.reset_all()
        expect_qvel = qvel[0].copy()
        expect_qvel[9:11] = 0  # `joint_vel = 0` after `from reference`
        np.testing.assert_allclose(np.stack([x.qpos for x in env.datas]), np.repeat(qpos[:1], 2, 0), atol=1e-6)
        np.testing.assert_allclose(np.stack([x.qvel for x in env.datas]), np.repeat(expect_qvel[None], 2, 0), atol=1e-6)
        assert np.all(env.obs_actor_EO[:, 0] == 0)  # phase 0 at the start
        for _ in range(3):
            env.step(np.zeros((2, 2), np.float32))
        np.testing.assert_allclose(env.obs_actor_EO[:, 0], 3 * 0.02 * FPS / 8, rtol=1e-5)  # 3 control steps on
    finally:
        env.close()


# --------------------------------------------------------------------------- syntax


def test_reference_syntax_parses_to_the_ast():
    from ksimdsl.errors import Source
    from ksimdsl.frontend.astdump import dump
    from ksimdsl.frontend.parse import parse_source

    text = (
        'task t\nreference "clips/walk.npz" clamp fixed\nlet feet = ref.body_pos("foot") - ref.base_pos\n'
        "reset\n    from reference\n    joint_pos += 1\n"
    )
    lines = dump(parse_source(Source("t.ksim", text))).splitlines()
    assert lines[1] == "ReferenceStmt @2:1-39 path='clips/walk.npz'@2:11-27 options=(clamp fixed)"
    assert lines[2].endswith('value=(- (ref.body_pos "foot") (. ref base_pos))')
    assert lines[3] == "ResetStmt @4:1-6:19 from_reference@5:5-19"
    for body, message in [
        ("reset\n    joint_pos += 1\n    from reference\n", "t.ksim:4:5: error: `from reference` must be the first line"),
        ("reset\n    from reference\n    from reference\n", "t.ksim:4:5: error: `from reference` given twice"),
        ("reset\n    from keyframe\n", "t.ksim:3:10: error: unknown reset start 'keyframe'; write `from reference`"),
        ("reference walk.npz\n", "t.ksim:2:11: error: expected the clip path as a quoted string"),
        ("let x = (1 + 2).f(3)\n", "t.ksim:2:17: error: '.f(...)' can only follow a name"),
    ]:
        with pytest.raises(KsimError) as err:
            parse_source(Source("t.ksim", "task t\n" + body))
        assert err.value.format().startswith(message), err.value.format()


# --------------------------------------------------------------------------- learning to track


@pytest.mark.slow  # a short training run
def test_a_tiny_imitation_run_learns_to_track_its_clip(tmp_path):
    """The cart-pole's cart follows a clip (the cart swinging 0.3 m either side at 0.5 Hz, the pole
    upright): after 40 PPO iterations the tracking reward per step is higher than at the start."""
    from ksimdsl import cli
    from ksimdsl.runtime.training.runs import read_metrics

    t_F = np.arange(0, 2.0 + 1e-9, 0.02)
    qpos_FQ = np.stack([0.3 * np.sin(np.pi * t_F), np.zeros_like(t_F)], axis=1)
    save_clip(tmp_path / "swing.npz", Clip(qpos_FQ, 50.0, ("slider", "hinge_1")))
    models = Path(__file__).resolve().parents[1] / "tasks" / "models"
    (tmp_path / "t.ksim").write_text(
        f"""task swing "the cart follows a clip"
model "{models / 'cartpole.xml'}"
physics dt=10ms ctrl_dt=20ms iterations=2 ls_iterations=4
episode 100 steps
reference "swing.npz" loop random
actuators ctrl
observe actor
    position = [joint_pos["slider"], cos(joint_pos["hinge_1"]), sin(joint_pos["hinge_1"])]
    velocity = joint_vel
    target   = ref.joint_pos["slider"]
    phase    = [cos(ref.phase * 360deg), sin(ref.phase * 360deg)]
reward
    track 1.0 : exp_kernel(joint_pos["slider"] - ref.joint_pos["slider"], 0.1)
terminate
    fell : cos(joint_pos["hinge_1"]) < 0.5
reset
    from reference
policy mlp hidden=[32, 32]
train num_envs=32 rollout=25 epochs=4 minibatches=4 lr=1e-3 steps=40 seed=0 video=false
"""
    )
    code = cli.main(["train", str(tmp_path / "t.ksim"), "engine=mujoco", "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert code == 0
    track = [r["reward/track"] for r in read_metrics(tmp_path / "run")]
    first, last = np.mean(track[:5]), np.mean(track[-5:])
    assert last > first + 0.05 and last > 0.55, (first, last)  # measured: 0.50 -> 0.58
