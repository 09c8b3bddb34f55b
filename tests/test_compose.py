"""Model composition and model sources: a bare MJCF gets floor, motors, IMUs, a pose and
collision filtering from the task (ksimdsl/model/compose.py); `pkg:` and `menagerie:` paths
(ksimdsl/model/sources.py); the G1 and Go1 tasks; the run directory's model.xml."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

import mujoco
import numpy as np
import pytest

from ksimdsl.abi import TaskSpec
from ksimdsl.codegen import compile_task
from ksimdsl.errors import KsimError
from ksimdsl.frontend.check import check_file
from ksimdsl.frontend.model_info import ModelLoadError, resolve_model_path
from ksimdsl.model.compose import Collide, Composition, Floor, Imu, Motor, Pose
from ksimdsl.runtime.engine.model import default_pose, load_model, model_xml

REPO = Path(__file__).resolve().parents[1]

# A bare robot: free root, four hinges, capsule legs, a site, a visual OBJ mesh in assets/;
# no floor, no actuators, no sensors, no keyframe.
BARE_XML = """
<mujoco model="bare">
  <compiler angle="radian" meshdir="assets"/>
  <asset><mesh name="shell" file="shell.obj"/></asset>
  <worldbody>
    <body name="torso" pos="0 0 1">
      <freejoint name="root"/>
      <geom name="torso_geom" type="box" size="0.1 0.1 0.1" mass="5"/>
      <geom name="shell" type="mesh" mesh="shell" contype="0" conaffinity="0" mass="0"/>
      <site name="imu_site" pos="0 0 0.05"/>
      <body name="left_thigh" pos="0 0.1 -0.1">
        <joint name="left_hip" axis="0 1 0" range="-1 1"/>
        <geom name="left_thigh_geom" type="capsule" fromto="0 0 0 0 0 -0.3" size="0.03"/>
        <body name="left_shin" pos="0 0 -0.3">
          <joint name="left_knee" axis="0 1 0" range="0 2"/>
          <geom name="left_foot" type="capsule" fromto="0 0 0 0 0 -0.3" size="0.03"/>
        </body>
      </body>
      <body name="right_thigh" pos="0 -0.1 -0.1">
        <joint name="right_hip" axis="0 1 0" range="-1 1"/>
        <geom name="right_thigh_geom" type="capsule" fromto="0 0 0 0 0 -0.3" size="0.03"/>
        <body name="right_shin" pos="0 0 -0.3">
          <joint name="right_knee" axis="0 1 0" range="0 2"/>
          <geom name="right_foot" type="capsule" fromto="0 0 0 0 0 -0.3" size="0.03"/>
        </body>
      </body>
    </body>
  </worldbody>
</mujoco>
"""

SHELL_OBJ = """\
v 0 0 0
v 0.1 0 0
v 0 0.1 0
v 0 0 0.1
f 1 3 2
f 1 2 4
f 1 4 3
f 2 3 4
"""

MODEL_BLOCK = """\
    floor friction=0.8
    imu imu at "imu_site"
    imu body at "torso"
    pose base_height=0.7
        "*_knee" = 0.3
        "left_hip" = -10deg
    collide only ["*_foot"] condim=3 friction=0.6 priority=1
"""

ACTUATORS = """\
actuators position joints="*" kp=10 kd=1 effort=20 armature=0.01 action_scale=0.5
    joints "*_knee" kp=30 effort=40 armature=0.02
    kd["right_*"] = 2
"""

BODY = """\
physics dt=5ms ctrl_dt=20ms
observe actor
    q    = joint_pos - default_joint_pos
    gyro = sensor("imu_gyro")
    quat = sensor("body_quat")
reward
    alive 1   : 1
    feet  0.1 : where(any(contact(["left_foot", "right_foot"], "floor")), 1, 0)
    both  0.1 : all(contact(["left_foot", "right_foot"], "floor"))
train num_envs=8 rollout=8 minibatches=2 epochs=1 steps=1
"""


def write_robot(root: Path, name: str = "bare.xml") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "assets").mkdir(exist_ok=True)
    (root / "assets" / "shell.obj").write_text(SHELL_OBJ)
    path = root / name
    path.write_text(BARE_XML)
    return path


def write_task(root: Path, model: str = "bare.xml", block: str = MODEL_BLOCK, actuators: str = ACTUATORS,
               body: str = BODY, name: str = "t.ksim") -> Path:
    path = root / name
    path.write_text(f'task t "composed"\nmodel "{model}"\n{block}{actuators}{body}')
    return path


@pytest.fixture(scope="module")
def robot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("robot")
    write_robot(root)
    return root


@pytest.fixture(scope="module")
def composed(robot_dir: Path) -> tuple[TaskSpec, str]:
    task = write_task(robot_dir)
    compiled = compile_task(str(task), backend="jax")
    return TaskSpec.from_dict(compiled.spec), str(robot_dir / "bare.xml")


def first_error(path: Path):
    with pytest.raises(KsimError) as info:
        check_file(str(path))
    return info.value.diagnostics[0]


def name_id(model, kind, name) -> int:
    i = mujoco.mj_name2id(model, kind, name)
    assert i >= 0, name
    return i


# --------------------------------------------------------------------------- the composed model


def test_bare_model_composes_floor_motors_imus_pose_and_collisions(composed):
    spec, path = composed
    assert spec.action_size == 4
    m = load_model(spec, path)
    # floor
    floor = name_id(m, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    assert m.geom_type[floor] == mujoco.mjtGeom.mjGEOM_PLANE and m.geom_bodyid[floor] == 0
    assert m.geom_friction[floor][0] == pytest.approx(0.8)
    # motors, in model order, rewritten to PD with the task's gains, force limited to +-effort
    names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_ACTUATOR, a) for a in range(m.nu)]
    assert names == ["left_hip", "left_knee", "right_hip", "right_knee"]
    kp, kd = m.actuator_gainprm[:, 0], -m.actuator_biasprm[:, 2]
    np.testing.assert_allclose(kp, [10, 30, 10, 30])
    np.testing.assert_allclose(kd, [1, 1, 2, 2])
    np.testing.assert_allclose(m.actuator_forcerange, [[-20, 20], [-40, 40], [-20, 20], [-40, 40]])
    assert m.actuator_forcelimited.all()
    dofs = [m.jnt_dofadr[m.actuator_trnid[a, 0]] for a in range(m.nu)]
    np.testing.assert_allclose(m.dof_armature[dofs], [0.01, 0.02, 0.01, 0.02])
    # IMUs: at a site, and at a new site on a body
    for imu in ("imu", "body"):
        for suffix, kind in (("gyro", "mjSENS_GYRO"), ("acc", "mjSENS_ACCELEROMETER"), ("quat", "mjSENS_FRAMEQUAT")):
            s = name_id(m, mujoco.mjtObj.mjOBJ_SENSOR, f"{imu}_{suffix}")
            assert m.sensor_type[s] == getattr(mujoco.mjtSensor, kind)
    assert m.site_bodyid[name_id(m, mujoco.mjtObj.mjOBJ_SITE, "body")] == name_id(m, mujoco.mjtObj.mjOBJ_BODY, "torso")
    # pose: keyframe 0
    assert m.nkey == 1 and mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_KEY, 0) == "ksim_pose"
    qpos, _ = default_pose(m)
    assert qpos[2] == pytest.approx(0.7)
    joint_q = {n: qpos[m.jnt_qposadr[name_id(m, mujoco.mjtObj.mjOBJ_JOINT, n)]] for n in names}
    assert joint_q == pytest.approx({"left_hip": -np.deg2rad(10), "left_knee": 0.3, "right_hip": 0.0, "right_knee": 0.3})
    assert spec.actuators.default_pos == pytest.approx(tuple(joint_q.values()))
    # collisions: the feet collide with the world only, every other robot geom with nothing
    for g in range(m.ngeom):
        name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, g)
        pair = (int(m.geom_contype[g]), int(m.geom_conaffinity[g]))
        if name in ("left_foot", "right_foot"):
            assert pair == (0, 1)
            assert (m.geom_condim[g], m.geom_priority[g]) == (3, 1)
            assert m.geom_friction[g][0] == pytest.approx(0.6)
        elif name == "floor":
            assert pair == (1, 1)
        else:
            assert pair == (0, 0), name
    # the meshes resolved relative to the robot's own file
    assert m.nmesh == 1


def test_composed_robot_stands_on_its_floor_and_touches_it_with_its_feet_only(composed):
    spec, path = composed
    m = load_model(spec, path)
    d = mujoco.MjData(m)
    mujoco.mj_resetDataKeyframe(m, d, 0)
    d.ctrl[:] = spec.actuators.default_pos
    for _ in range(400):
        mujoco.mj_step(m, d)
    floor = name_id(m, mujoco.mjtObj.mjOBJ_GEOM, "floor")
    feet = {name_id(m, mujoco.mjtObj.mjOBJ_GEOM, n) for n in ("left_foot", "right_foot")}
    touching = {int(g) for c in d.contact[: d.ncon] for g in (c.geom1, c.geom2)}
    assert d.ncon > 0 and touching <= feet | {floor} and touching & feet
    assert d.qpos[2] < 0.7  # it fell onto the floor rather than through it


def test_checker_sees_the_composed_model(robot_dir):
    task = check_file(str(write_task(robot_dir)))
    assert task.model.nu == 4 and task.model.nkey == 1
    assert task.model.composition.floor == Floor(friction=0.8)
    assert task.model.composition.imus == (Imu("imu", site="imu_site"), Imu("body", body="torso"))
    assert task.actuators.joint_names == ("left_hip", "left_knee", "right_hip", "right_knee")
    assert task.model.default_qpos[2] == pytest.approx(0.7)


def test_model_xml_loads_anywhere_and_is_the_training_model(composed, tmp_path):
    spec, path = composed
    trained = load_model(spec, path)
    out = tmp_path / "elsewhere" / "model.xml"
    out.parent.mkdir()
    out.write_text(model_xml(spec, path))
    again = mujoco.MjModel.from_xml_path(str(out))  # meshes found through the absolute meshdir
    for field in ("nq", "nv", "nu", "nsensor", "nsensordata", "ngeom", "nmesh", "nkey"):
        assert getattr(again, field) == getattr(trained, field), field
    for field in ("actuator_gainprm", "actuator_biasprm", "actuator_forcerange", "dof_armature", "key_qpos",
                  "geom_contype", "geom_conaffinity", "sensor_type"):
        # MuJoCo's XML writer keeps 6 significant digits
        np.testing.assert_allclose(getattr(again, field), getattr(trained, field), rtol=1e-5, err_msg=field)
    assert again.opt.timestep == pytest.approx(spec.physics.dt)


def test_the_run_directory_gets_the_composed_model(composed, tmp_path):
    # train() writes model_xml(spec, model_path) through write_run_files (tests/test_train.py checks a real run)
    from ksimdsl.runtime.training.runs import MODEL_FILE, write_run_files

    spec, path = composed
    write_run_files(tmp_path, spec, engine="mujoco", task_text=None, generated_sources={},
                    model_xml=model_xml(spec, path))
    written = mujoco.MjModel.from_xml_path(str(tmp_path / MODEL_FILE))
    trained = load_model(spec, path)
    assert (written.nq, written.nu, written.nsensor) == (trained.nq, trained.nu, trained.nsensor)
    names = lambda m: [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_SENSOR, s) for s in range(m.nsensor)]  # noqa: E731
    assert names(written) == names(trained)


def test_composition_round_trips_through_the_spec(composed):
    spec, _ = composed
    comp = Composition.from_dict(spec.compose)
    assert comp.motors[1] == Motor("left_knee", effort=40.0, armature=0.02)
    assert comp.collide == Collide(("left_foot", "right_foot"), condim=3, friction=0.6, priority=1)
    assert comp.pose == Pose(0.7, (("left_hip", pytest.approx(-np.deg2rad(10))), ("left_knee", 0.3), ("right_knee", 0.3)))
    assert Composition.from_dict(comp.to_dict()) == comp
    assert TaskSpec.from_dict(spec.to_dict()) == spec
    assert "compose" not in TaskSpec.from_dict({**spec.to_dict(), "compose": {}}).to_dict()


def test_a_model_with_keyframes_keeps_them_after_the_pose(tmp_path):
    root = tmp_path / "r"
    xml = write_robot(root)
    xml.write_text(BARE_XML.replace("</mujoco>", '<keyframe><key name="crouch" qpos="0 0 0.5 1 0 0 0 0.1 0.2 0.3 0.4"/></keyframe></mujoco>'))
    spec = TaskSpec.from_dict(compile_task(str(write_task(root)), backend="jax").spec)
    m = load_model(spec, xml)
    assert [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_KEY, k) for k in range(m.nkey)] == ["ksim_pose", "crouch"]
    np.testing.assert_allclose(m.key_qpos[1][7:], [0.1, 0.2, 0.3, 0.4])


def test_torque_motors_are_clipped_to_their_effort(tmp_path):
    root = tmp_path / "r"
    write_robot(root)
    body = "observe actor\n    q = joint_pos\nreward\n    alive 1 : 1\n"
    task = write_task(root, block="    floor\n", actuators='actuators torque joints=["left_*"] effort=30 scale=30\n', body=body)
    spec = TaskSpec.from_dict(compile_task(str(task), backend="numba").spec)
    m = load_model(spec, root / "bare.xml")
    assert m.nu == 2 and spec.actuators.ctrl_range == ((-30.0, 30.0), (-30.0, 30.0))
    np.testing.assert_allclose(m.actuator_gainprm[:, 0], [1, 1])


@pytest.mark.parametrize("kind", ["velocity", "position_velocity"])
def test_velocity_motors_on_a_bare_model(tmp_path, kind):
    root = tmp_path / "r"
    write_robot(root)
    body = "observe actor\n    q = joint_pos\nreward\n    alive 1 : 1\n"
    gains = "kd=2" if kind == "velocity" else "kp=10 kd=2 velocity_scale=3"
    actuators = (f'actuators {kind} joints="*" {gains} effort=20 armature=0.01 action_scale=4\n'
                 '    joints "*_knee" kd=5 effort=40 armature=0.02\n'
                 '    kd["right_hip"] = 1\n')  # fmt: skip
    spec = TaskSpec.from_dict(compile_task(str(write_task(root, block="", actuators=actuators, body=body))).spec)
    assert spec.action_size == 4 * (2 if kind == "position_velocity" else 1)
    assert spec.actuators.kd == (2.0, 5.0, 1.0, 5.0)
    assert spec.actuators.kp == (() if kind == "velocity" else (10.0,) * 4)
    m = load_model(spec, root / "bare.xml")
    np.testing.assert_allclose(-m.actuator_biasprm[:, 2], [2, 5, 1, 5])
    np.testing.assert_allclose(m.actuator_gainprm[:, 0], [2, 5, 1, 5] if kind == "velocity" else [1, 1, 1, 1])
    np.testing.assert_allclose(m.actuator_forcerange, [[-20, 20], [-40, 40], [-20, 20], [-40, 40]])
    dofs = [m.jnt_dofadr[name_id(m, mujoco.mjtObj.mjOBJ_JOINT, n)] for n in ("left_hip", "left_knee")]
    np.testing.assert_allclose(m.dof_armature[dofs], [0.01, 0.02])


def test_collide_sets_the_contact_softness_of_the_kept_geoms(tmp_path):
    """timeconst / dampratio become the feet's solref, dmin / dmax their solimp[:2]; other geoms keep theirs,
    and a task without them has no softness keys in its SPEC (its hash is unchanged)."""
    root = tmp_path / "r"
    write_robot(root)
    soft = " timeconst=10ms dampratio=1.5 dmin=0.95 dmax=0.99"
    block = MODEL_BLOCK.replace("priority=1", "priority=1" + soft)
    spec = TaskSpec.from_dict(compile_task(str(write_task(root, block=block))).spec)
    assert {k: spec.compose["collide"][k] for k in Collide.SOFTNESS} == {
        "timeconst": 0.01, "dampratio": 1.5, "dmin": 0.95, "dmax": 0.99
    }
    m = load_model(spec, root / "bare.xml")
    foot = name_id(m, mujoco.mjtObj.mjOBJ_GEOM, "left_foot")
    np.testing.assert_allclose(m.geom_solref[foot], [0.01, 1.5])
    np.testing.assert_allclose(m.geom_solimp[foot][:3], [0.95, 0.99, 0.001])
    floor = next(g for g in range(m.ngeom) if m.geom_bodyid[g] == 0)
    np.testing.assert_allclose(m.geom_solref[floor], [0.02, 1.0])
    plain = TaskSpec.from_dict(compile_task(str(write_task(root, name="plain.ksim"))).spec)
    assert not set(Collide.SOFTNESS) & set(plain.compose["collide"])


# --------------------------------------------------------------------------- errors at FILE:LINE:COL


ERROR_CASES = [
    # (model block, actuators, expected (line, col), message fragment)
    ('    pose\n        "*_kne" = 0.3\n', ACTUATORS, (4, 9), "glob '*_kne' matches no hinge or slide joint (did you mean '*_knee'?)"),
    ('    imu imu at "imu_sit"\n', ACTUATORS, (3, 16), "no site or body named 'imu_sit' (did you mean 'imu_site'?)"),
    ('    collide only ["*_fot"]\n', ACTUATORS, (3, 19), "glob '*_fot' matches no geom of a moving body (did you mean '*_foot'?)"),
    ('    pose\n        "left_knee" = 3\n', ACTUATORS, (4, 23), "pose puts 'left_knee' at 3, outside its range [0, 2]"),
    ('    floor\n    floor\n', ACTUATORS, (4, 5), "duplicate `floor` in the model block"),
    ('    collide only ["*_foot"] condim=2\n', ACTUATORS, (3, 36), "condim must be one of 1, 3, 4, 6"),
    ('    collide only ["*_foot"] dmin=0.99 dmax=0.9\n', ACTUATORS, (3, 34), "dmin (0.99) must not exceed dmax (0.9)"),
    ('    collide only ["*_foot"] dmax=1.5\n', ACTUATORS, (3, 34), "setting 'dmax' must be"),
    ('    collide only ["*_foot"] timeconst=0s\n', ACTUATORS, (3, 39), "setting 'timeconst' must be"),
    ("", 'actuators position joints="*_kne" kp=1\n', (3, 27), "glob '*_kne' matches no hinge or slide joint"),
    ("", "actuators position kp=1 effort=3\n", (3, 25), "effort needs `joints=`"),
    ("", 'actuators position joints="*" kp=1\n    armature["lef_*"] = 1\n', (4, 14),
     "glob 'lef_*' matches no joint that `joints=` selects (did you mean 'left_*'?)"),
    ("", 'actuators position joints="*" kp=1 effort=-1\n', (3, 43), "setting 'effort' must be positive, got -1"),
]


@pytest.mark.parametrize("block, actuators, where, fragment", ERROR_CASES, ids=[c[3][:30] for c in ERROR_CASES])
def test_composition_errors_point_at_the_task(robot_dir, tmp_path, block, actuators, where, fragment):
    task = write_task(robot_dir, block=block, actuators=actuators, name=f"err_{tmp_path.name}.ksim")
    d = first_error(task)
    assert fragment in d.message
    assert (d.span.line, d.span.col) == where, d.format()
    assert d.format().startswith(f"{task}:{where[0]}:{where[1]}: error:")


def test_floor_and_actuators_the_model_already_has_are_errors(tmp_path):
    root = tmp_path / "r"
    xml = write_robot(root)
    xml.write_text(BARE_XML.replace("<worldbody>", '<worldbody><geom name="ground" type="plane" size="5 5 .1"/>')
                   .replace("</worldbody>", '</worldbody><actuator><motor joint="left_hip"/></actuator>'))
    d = first_error(write_task(root, block="    floor\n", actuators='actuators position kp=1\n'))
    assert "the model already has a floor (geom 'ground')" in d.message and (d.span.line, d.span.col) == (3, 5)
    d = first_error(write_task(root, block="", actuators='actuators position joints="*" kp=1\n'))
    assert "the model already has 1 actuators" in d.message and (d.span.line, d.span.col) == (3, 20)
    d = first_error(write_task(root, block='    imu imu at "imu_site"\n', actuators='actuators position kp=1\n', body=BODY))
    assert d.span.line > 3  # composition passed; the next error is the body's (no imu named body)


def test_an_imu_whose_sensors_exist_is_an_error(tmp_path):
    root = tmp_path / "r"
    xml = write_robot(root)
    xml.write_text(BARE_XML.replace("</mujoco>", '<sensor><gyro name="imu_gyro" site="imu_site"/></sensor></mujoco>'))
    d = first_error(write_task(root, block='    imu imu at "imu_site"\n'))
    assert "already has a sensor named 'imu_gyro'" in d.message and (d.span.line, d.span.col) == (3, 9)


def test_a_model_without_actuators_suggests_joints(robot_dir):
    d = first_error(write_task(robot_dir, block="", actuators="actuators position kp=1\n", name="noact.ksim"))
    assert "the model has no actuators" in d.message
    assert any('joints="*"' in n for n in d.notes)


# --------------------------------------------------------------------------- model sources


@pytest.fixture()
def menagerie_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "menagerie"
    write_robot(root / "tiny_bot", "bot.xml")
    (root / "other_bot").mkdir()
    monkeypatch.setenv("MENAGERIE_ROOT", str(root))
    return root


def test_menagerie_paths_resolve_under_menagerie_root_with_their_meshes(menagerie_root, tmp_path):
    assert resolve_model_path("menagerie:tiny_bot/bot.xml", None) == str(menagerie_root / "tiny_bot" / "bot.xml")
    task = check_file(str(write_task(tmp_path, model="menagerie:tiny_bot/bot.xml")))
    assert task.model.nu == 4 and task.model.path == "menagerie:tiny_bot/bot.xml"
    spec = TaskSpec.from_dict(compile_task(str(tmp_path / "t.ksim"), backend="jax").spec)
    assert load_model(spec, task.model.resolved_path).nmesh == 1


@pytest.mark.parametrize("written, fragment", [
    ("menagerie:tiny_bto/bot.xml", "no robot 'tiny_bto' under MENAGERIE_ROOT=") ,
    ("menagerie:tiny_bot/bto.xml", "no file 'bto.xml' for Menagerie robot 'tiny_bot'"),
    ("menagerie:tiny_bot", "write menagerie:ROBOT/FILE.xml"),
    ("menagerie:tiny_bot/../other_bot/x.xml", "must lie inside the robot's directory"),
])
def test_menagerie_path_errors(menagerie_root, written, fragment):
    with pytest.raises(ModelLoadError, match=r".*") as info:
        resolve_model_path(written, None)
    assert fragment in str(info.value)
    if "tiny_bto" in written:
        assert "did you mean 'tiny_bot'?" in str(info.value)
    if "bto.xml" in written:
        assert "its XML files: bot.xml" in str(info.value)


def test_menagerie_offline_without_the_package_says_how_to_fetch(monkeypatch):
    monkeypatch.delenv("MENAGERIE_ROOT", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mujoco_menagerie" else real(name, *a))
    with pytest.raises(ModelLoadError) as info:
        resolve_model_path("menagerie:unitree_go1/go1.xml", None)
    text = str(info.value)
    assert "MENAGERIE_ROOT" in text and "pip install mujoco-menagerie" in text
    assert "mujoco-menagerie prefetch unitree_go1" in text


def _fake_menagerie(monkeypatch, cache_dir: Path, cached: bool) -> None:
    """A stand-in for the mujoco-menagerie package's API (get, names, Cache)."""
    module = types.ModuleType("mujoco_menagerie")
    module.__spec__ = importlib.machinery.ModuleSpec("mujoco_menagerie", None)
    robots = {"unitree_go1": types.SimpleNamespace(name="unitree_go1", oid="4457a836cc377ad4e97b8e6a7edf")}

    class Cache:
        def model_path(self, robot):
            return cache_dir / "models" / f"{robot.name}-{robot.oid[:16]}"

        def is_cached(self, robot):
            return cached

    def get(name):
        if name not in robots:
            raise LookupError(name)
        return robots[name]

    module.Cache, module.get, module.names = Cache, get, lambda: sorted(robots)
    monkeypatch.setitem(sys.modules, "mujoco_menagerie", module)
    monkeypatch.delenv("MENAGERIE_ROOT", raising=False)


def test_menagerie_cache_of_the_package(monkeypatch, tmp_path):
    _fake_menagerie(monkeypatch, tmp_path, cached=False)
    with pytest.raises(ModelLoadError) as info:
        resolve_model_path("menagerie:unitree_go1/go1.xml", None)
    assert "is not in the cache" in str(info.value) and "never downloads" in str(info.value)
    assert "mujoco-menagerie prefetch unitree_go1" in str(info.value)
    with pytest.raises(ModelLoadError, match="has no robot 'unitree_go2' \\(did you mean 'unitree_go1'\\?\\)"):
        resolve_model_path("menagerie:unitree_go2/go1.xml", None)
    _fake_menagerie(monkeypatch, tmp_path, cached=True)
    path = write_robot(tmp_path / "models" / "unitree_go1-4457a836cc377ad4", "go1.xml")
    assert resolve_model_path("menagerie:unitree_go1/go1.xml", None) == str(path)


def test_pkg_paths():
    path = resolve_model_path("pkg:mujoco/mjx/test_data/humanoid/humanoid.xml", None)
    assert Path(path).is_file()
    with pytest.raises(ModelLoadError, match="pip install --no-deps mjlab==1.6.0") if importlib.util.find_spec("mjlab") is None \
            else pytest.raises(ModelLoadError, match="not found in package 'mjlab'"):
        resolve_model_path("pkg:mjlab/asset_zoo/robots/no_such/robot.xml", None)


# --------------------------------------------------------------------------- the shipped robots


MJLAB = importlib.util.find_spec("mjlab")
needs_mjlab = pytest.mark.skipif(MJLAB is None, reason="mjlab is not installed (pip install --no-deps mjlab==1.6.0)")


@needs_mjlab
@pytest.mark.parametrize("task, nu, nq", [("g1_walk", 29, 36), ("go1_walk", 12, 19)])
def test_unitree_tasks_check_compile_and_load(task, nu, nq):
    path = REPO / "tasks" / f"{task}.ksim"
    checked = check_file(str(path))
    assert checked.model.nu == nu and checked.model.nq == nq and checked.model.nkey == 1
    spec = TaskSpec.from_dict(compile_task(str(path), backend="numba").spec)
    m = load_model(spec, checked.model.resolved_path)
    assert m.nu == nu and m.nmesh > 0
    d = mujoco.MjData(m)
    mujoco.mj_resetDataKeyframe(m, d, 0)
    mujoco.mj_forward(m, d)
    # only feet touch the floor, each contact a capsule or sphere against the plane (cheap for MJX)
    assert d.ncon > 0
    for c in d.contact[: d.ncon]:
        types_ = sorted(int(m.geom_type[g]) for g in (c.geom1, c.geom2))
        assert types_[0] == mujoco.mjtGeom.mjGEOM_PLANE and types_[1] in (mujoco.mjtGeom.mjGEOM_SPHERE, mujoco.mjtGeom.mjGEOM_CAPSULE)
