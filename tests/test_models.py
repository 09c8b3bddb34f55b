"""The MJCF models shipped in tasks/models load, simulate and convert to MJX.

Every model must load with C MuJoCo, survive 100 physics steps under random
controls without NaN, convert with `mjx.put_model`, and have its origin and
licence recorded in tasks/models/README.md. The humanoid and the walker also
provide what the shipped tasks rely on (root joints, IMU sensors, named feet,
a standing default pose).
"""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np
import pytest

MODELS_DIR = Path(__file__).resolve().parents[1] / "tasks" / "models"
MODEL_PATHS = sorted(MODELS_DIR.glob("*.xml"))


def _load(name: str) -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(str(MODELS_DIR / name))


def _default_data(model: mujoco.MjModel) -> mujoco.MjData:
    """MjData in the pose the runtime starts from: keyframe 0 if any, else qpos0."""
    data = mujoco.MjData(model)
    if model.nkey > 0:
        mujoco.mj_resetDataKeyframe(model, data, 0)
    mujoco.mj_forward(model, data)
    return data


def test_the_shipped_models_are_found():
    names = {p.name for p in MODEL_PATHS}
    assert {"cartpole.xml", "walker.xml", "humanoid.xml"} <= names


@pytest.mark.parametrize("path", MODEL_PATHS, ids=lambda p: p.stem)
def test_model_steps_100_times_without_nan(path: Path):
    model = mujoco.MjModel.from_xml_path(str(path))
    data = _default_data(model)
    rng = np.random.default_rng(0)
    lo_U, hi_U = model.actuator_ctrlrange[:, 0], model.actuator_ctrlrange[:, 1]
    for _ in range(100):
        data.ctrl[:] = rng.uniform(lo_U, hi_U)
        mujoco.mj_step(model, data)
        assert np.all(np.isfinite(data.qpos)), f"{path.name}: qpos became non-finite at t={data.time:.3f}"
        assert np.all(np.isfinite(data.qvel)), f"{path.name}: qvel became non-finite at t={data.time:.3f}"
    assert data.time == pytest.approx(100 * model.opt.timestep)


@pytest.mark.parametrize("path", MODEL_PATHS, ids=lambda p: p.stem)
def test_model_converts_to_mjx(path: Path):
    from mujoco import mjx

    model = mujoco.MjModel.from_xml_path(str(path))
    model_mjx = mjx.put_model(model)
    assert model_mjx.nq == model.nq
    assert model_mjx.nu == model.nu
    assert model_mjx.nsensordata == model.nsensordata


@pytest.mark.parametrize("path", MODEL_PATHS, ids=lambda p: p.stem)
def test_model_origin_and_licence_are_recorded(path: Path):
    readme = (MODELS_DIR / "README.md").read_text()
    section = readme.split(f"## {path.name}", 1)
    assert len(section) == 2, f"tasks/models/README.md has no '## {path.name}' section"
    body = section[1].split("\n## ", 1)[0]
    assert "Licence:" in body and "Origin:" in body, f"{path.name}: README section lacks Origin:/Licence:"


# --------------------------------------------------------------------------- humanoid


def test_humanoid_has_a_free_root_imu_and_named_feet():
    model = _load("humanoid.xml")
    assert model.jnt_type[0] == mujoco.mjtJoint.mjJNT_FREE
    assert model.joint(0).name == "root"
    assert model.body(model.jnt_bodyid[0]).name == "torso"
    gyro = model.sensor("imu_gyro")
    assert model.sensor_type[gyro.id] == mujoco.mjtSensor.mjSENS_GYRO
    assert model.sensor_dim[gyro.id] == 3
    assert model.sensor_type[model.sensor("imu_acc").id] == mujoco.mjtSensor.mjSENS_ACCELEROMETER
    for side in ("left", "right"):
        model.body(f"foot_{side}")  # raises KeyError when missing
        model.geom(f"foot1_{side}")
        model.geom(f"foot2_{side}")
    # Every actuator is a motor on one hinge joint: the runtime rewrites them as PD actuators.
    assert model.nu == 21
    assert np.all(model.actuator_trntype == mujoco.mjtTrn.mjTRN_JOINT)
    assert np.all(model.actuator_biastype == mujoco.mjtBias.mjBIAS_NONE)


def test_humanoid_keeps_only_the_foot_floor_contact_pairs():
    model = _load("humanoid.xml")
    floor = model.geom("floor").id
    assert model.npair == 4
    pairs = {tuple(sorted((int(a), int(b)))) for a, b in zip(model.pair_geom1, model.pair_geom2)}
    feet = {model.geom(f"foot{i}_{s}").id for i in (1, 2) for s in ("left", "right")}
    assert pairs == {tuple(sorted((f, floor))) for f in feet}
    # No other geom collides by contype/conaffinity (the floor is the only candidate).
    colliding = [g for g in range(model.ngeom) if model.geom_contype[g] or model.geom_conaffinity[g]]
    assert colliding == [floor]


def test_humanoid_default_pose_stands_on_the_floor():
    model = _load("humanoid.xml")
    assert model.key(0).name == "stand"
    data = _default_data(model)
    up_3 = data.xmat[model.body("torso").id].reshape(3, 3)[:, 2]
    assert up_3 @ np.array([0.0, 0.0, 1.0]) == pytest.approx(1.0)
    radius = model.geom_size[model.geom("foot1_left").id, 0]
    for name in ("foot1_left", "foot2_left", "foot1_right", "foot2_right"):
        # the capsule's lowest point is within 5 mm of the floor
        assert data.geom_xpos[model.geom(name).id, 2] - radius == pytest.approx(0.0, abs=5e-3)
    # Both feet touch the floor after a few steps and the torso barely moves.
    z0 = data.qpos[2]
    for _ in range(20):
        mujoco.mj_step(model, data)
    assert data.ncon >= 2
    assert abs(data.qpos[2] - z0) < 0.05


# --------------------------------------------------------------------------- walker


def test_walker_is_planar_with_six_motors():
    model = _load("walker.xml")
    root_types = [model.jnt_type[model.joint(n).id] for n in ("rootz", "rootx", "rooty")]
    assert root_types == [mujoco.mjtJoint.mjJNT_SLIDE, mujoco.mjtJoint.mjJNT_SLIDE, mujoco.mjtJoint.mjJNT_HINGE]
    assert model.nu == 6 and model.njnt == 9
    gears = {model.actuator(i).name: model.actuator_gear[i, 0] for i in range(model.nu)}
    assert gears == {
        "right_hip": 100.0,
        "right_knee": 50.0,
        "right_ankle": 20.0,
        "left_hip": 100.0,
        "left_knee": 50.0,
        "left_ankle": 20.0,
    }
    assert model.sensor_dim[model.sensor("torso_subtreelinvel").id] == 3


def test_walker_falls_onto_the_floor_not_through_it():
    model = _load("walker.xml")
    data = _default_data(model)
    for _ in range(2000):  # 5 s without control: it collapses and lies on the floor
        mujoco.mj_step(model, data)
    torso_z = data.xpos[model.body("torso").id, 2]
    assert 0.0 < torso_z < 1.3
    assert data.ncon > 0


# --------------------------------------------------------------------------- cartpole


def test_cartpole_has_slider_and_hinge_driven_by_one_motor():
    model = _load("cartpole.xml")
    assert [model.joint(i).name for i in range(model.njnt)] == ["slider", "hinge_1"]
    assert model.nu == 1 and model.actuator_gear[0, 0] == pytest.approx(10.0)
    # Upright at qpos0: the tip site is 1 m above the cart.
    data = _default_data(model)
    tip_z = data.site_xpos[model.site("tip").id, 2]
    cart_z = data.xpos[model.body("cart").id, 2]
    assert tip_z - cart_z == pytest.approx(1.0)
