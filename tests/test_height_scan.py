"""`height_scan(BODY, grid=[nx, ny], spacing=S)`: the checker, both engines, hand-computed heights.

The scene (SCENE_XML, no gravity and no contacts, so nothing moves and MJX
compiles quickly): a plane tilted 10 degrees
about y (ground height -tan(10 deg) x everywhere: planes are infinite), a
height field with explicit elevations, a box turned 45 degrees about z, and
free bodies to scan from. Robot geoms under the probe (its `skirt`) and a
static geom that does not collide (`ghost`) are not ground and must not be seen.

MuJoCo stores an `<hfield elevation=...>` with its rows reversed (the first row
written lies at +y): row r of `hfield_data` is at y = -size_y + r * dy. Of the
XML below, that is

    r = 0 (y = -1):  0    0    0.8  0.2
    r = 1 (y =  0):  0.1  0.5  1    0.3
    r = 2 (y = +1):  0    0.2  0.4  0.6

columns at x = 3 - 1.5 + c (the geom sits at x = 3), elevation scale 0.5 above z = 0.2.
Each cell is two triangles split along the diagonal (r, c) - (r + 1, c + 1).
"""

from __future__ import annotations

import math
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from ksimdsl.abi import TaskSpec
from ksimdsl.codegen import compile_task
from ksimdsl.errors import KsimError, Source
from ksimdsl.frontend.check import check_source
from ksimdsl.runtime.engine.heightscan import MISS, ScanTables, grid_offsets
from ksimdsl.runtime.engine.mjx.env import MjxEnv
from ksimdsl.runtime.engine.mjx.heightscan import MjxHeightScan
from ksimdsl.runtime.engine.mujoco.env import MujocoEnv
from ksimdsl.runtime.engine.mujoco.rays import HostHeightScan
from ksimdsl.runtime.loader import load_module

SCENE_XML = """
<mujoco>
  <compiler eulerseq="zyx" angle="degree"/>
  <option timestep="0.005" gravity="0 0 0"><flag contact="disable"/></option>
  <asset>
    <hfield name="hf" nrow="3" ncol="4" size="1.5 1 0.5 0.1"
            elevation="0 0.2 0.4 0.6  0.1 0.5 1 0.3  0 0 0.8 0.2"/>
  </asset>
  <worldbody>
    <geom name="slope" type="plane" size="2 2 0.1" euler="0 10 0"/>
    <geom name="terrain" type="hfield" hfield="hf" pos="3 0 0.2"/>
    <geom name="step" type="box" size="0.5 0.5 0.3" pos="-3 0 1" euler="45 0 0"/>
    <geom name="ghost" type="box" size="0.5 0.5 0.5" pos="0 0 0.3" contype="0" conaffinity="0"/>
    <body name="probe" pos="0 0 1" euler="30 0 20">
      <freejoint/>
      <geom name="probe" type="box" size="0.1 0.1 0.05" mass="1"/>
      <body name="leg" pos="0 0 -0.4">
        <joint name="knee" type="hinge" axis="0 1 0"/>
        <geom name="skirt" type="box" size="0.4 0.4 0.02" mass="0.1"/>
      </body>
    </body>
    <body name="rover" pos="3 0 1.5" euler="90 0 0"><freejoint/><geom size="0.05" mass="1"/></body>
    <body name="skater" pos="2.1 -0.25 1.5"><freejoint/><geom size="0.05" mass="1"/></body>
    <body name="crawler" pos="2.25 -0.4 1.5"><freejoint/><geom size="0.05" mass="1"/></body>
    <body name="climber" pos="-3 0 2"><freejoint/><geom size="0.05" mass="1"/></body>
    <body name="kite" pos="0 5 12"><freejoint/><geom size="0.05" mass="1"/></body>
  </worldbody>
</mujoco>
"""

TASK = """\
task scan "height scans on a hand-made scene"
model "scene.xml"
physics dt=5ms ctrl_dt=10ms
episode 100 steps
actuators torque joints="knee" effort=1

observe actor
    probe   = height_scan("probe", grid=[3, 2], spacing=0.5) ~ gaussian(0.01)
    rover   = height_scan("rover", grid=[3, 3], spacing=0.5)
    skater  = height_scan("skater", grid=[2, 2], spacing=1)
    crawler = height_scan("crawler", grid=[2, 2], spacing=1)
    climber = height_scan("climber", grid=[3, 1], spacing=1.5)
    kite    = height_scan("kite", grid=[1, 1], spacing=0.1)
observe critic
    actor

reward
    low 1.0 : mean(height_scan("probe", grid=[3, 2], spacing=0.5))

policy mlp hidden=[4]
train num_envs=2 minibatches=1 steps=1
"""

TAN10 = math.tan(math.radians(10))
HF_Z, HF_SCALE = 0.2, 0.5  # the height field's base height and elevation scale


def _probe_heights() -> np.ndarray:
    """The probe (z = 1, yaw 30 deg, roll 20 deg) over the slope: only the yaw turns the grid."""
    out = []
    for oy in (-0.25, 0.25):
        for ox in (-0.5, 0.0, 0.5):
            x = math.cos(math.radians(30)) * ox - math.sin(math.radians(30)) * oy
            out.append(1.0 - (-TAN10 * x))
    return np.array(out)


#: Hand-computed heights (m) of every scan of TASK, by observation name.
EXPECTED = {
    "probe": _probe_heights(),
    # rover at (3, 0, 1.5), yaw 90 deg: point (ox, oy) lies at (3 - oy, ox); cell coordinates
    # u = 1.5 - oy (columns), v = 1 + ox (rows); all on cell edges and diagonals
    "rover": 1.5 - (HF_Z + HF_SCALE * np.array([0.9, 1.0, 0.7, 0.5, 0.75, 0.45, 0.25, 0.5, 0.35])),
    # skater at (2.1, -0.25): u = 0.1 | 1.1, v = 0.25 | 1.25, inside the triangles above the diagonal
    # (e.g. u = 1.1, v = 0.25: 0 + 0.25 (0.5 - 0) + 0.1 (1 - 0.5) = 0.175; bilinear would give 0.1375)
    "skater": 1.5 - (HF_Z + HF_SCALE * np.array([0.065, 0.175, 0.095, 0.445])),
    # crawler at (2.25, -0.4): u = 0.25 | 1.25, v = 0.1 | 1.1, inside the triangles below the diagonal
    "crawler": 1.5 - (HF_Z + HF_SCALE * np.array([0.05, 0.22, 0.17, 0.565])),
    # climber at (-3, 0, 2): x = -4.5 (past the plane's drawn size: the slope), -3 (the box top, 1.3), -1.5
    "climber": np.array([2.0 - TAN10 * 4.5, 2.0 - 1.3, 2.0 - TAN10 * 1.5]),
    # kite: 12 m above the ground, beyond the scan's reach
    "kite": np.array([MISS]),
}


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scan")
    (root / "scene.xml").write_text(SCENE_XML)
    (root / "scan.ksim").write_text(TASK)
    return root


def _split(spec: TaskSpec, obs_O: np.ndarray) -> dict[str, np.ndarray]:
    return {e.name: np.asarray(obs_O)[..., e.offset : e.offset + e.size] for e in spec.obs_critic}


@pytest.fixture(scope="module")
def compiled(scene: Path):
    out = {}
    for backend in ("jax", "numba"):
        task = compile_task(str(scene / "scan.ksim"), backend=backend)
        out[backend] = (TaskSpec.from_dict(task.spec), load_module(task.source, f"scan:{backend}"))
    return out


# --------------------------------------------------------------------------- both engines


def test_spec_lists_the_ground_and_each_distinct_scan_once(compiled, scene):
    spec, _ = compiled["numba"]
    model = mujoco.MjModel.from_xml_path(str(scene / "scene.xml"))
    names = [model.geom(g).name for g in spec.height_scan["ground"]]
    assert names == ["slope", "terrain", "step"]  # not the robot's geoms, not the ghost that never collides
    scans = spec.height_scan["scans"]
    assert [s["grid"] for s in scans] == [[3, 2], [3, 3], [2, 2], [2, 2], [3, 1], [1, 1]]  # the reward's scan is shared
    assert [s["offset"] for s in scans] == [0, 6, 15, 19, 23, 26]
    assert "height_scan" in spec.phys_inputs and "height_scan_EH" in spec.numba_args["step"]


def test_c_engine_heights_match_the_hand_computed_ones(compiled, scene):
    spec, kernels = compiled["numba"]
    env = MujocoEnv(spec, kernels, scene / "scene.xml", num_envs=2, threads=1)
    env.reset_all()
    reset_obs = _split(spec, env.obs_critic_EC)
    out = env.step(np.zeros((2, spec.action_size), np.float32))
    env.close()
    obs = _split(spec, out.final_obs_critic_EC)
    for name, want in EXPECTED.items():
        np.testing.assert_allclose(reset_obs[name], np.tile(want, (2, 1)), atol=1e-6, err_msg=name)
        np.testing.assert_allclose(obs[name], np.tile(want, (2, 1)), atol=1e-6, err_msg=name)
    np.testing.assert_allclose(out.reward_E, EXPECTED["probe"].mean(), atol=1e-6)  # a reward of a scan


def test_mjx_engine_heights_match_the_hand_computed_ones(compiled, scene):
    spec, kernels = compiled["jax"]
    env = MjxEnv(spec, kernels, scene / "scene.xml", num_envs=1)
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    state, out = jax.jit(env.step)(state, jnp.zeros((1, spec.action_size)))
    obs = _split(spec, np.asarray(out.final_obs_critic_EC))
    for name, want in EXPECTED.items():
        np.testing.assert_allclose(obs[name][0], want, atol=2e-5, err_msg=name)
    np.testing.assert_allclose(np.asarray(out.reward_E), EXPECTED["probe"].mean(), atol=2e-5)
    noisy = _split(spec, np.asarray(state.obs_actor_EO))["probe"][0]
    assert 0 < np.abs(noisy - EXPECTED["probe"]).max() < 0.1  # observation noise applies to a scan


# --------------------------------------------------------------------------- the evaluators, on random poses

PARITY_XML = """
<mujoco>
  <compiler angle="degree"/>
  <asset><hfield name="hf" nrow="9" ncol="12" size="2 1.5 0.6 0.1"/></asset>
  <worldbody>
    <geom type="plane" size="0 0 1" euler="-6 4 0"/>
    <geom type="hfield" hfield="hf" pos="1 0.5 0.3" euler="0 0 25"/>
    <geom type="box" size="0.4 0.3 0.2" pos="-1 -1 0.4" euler="10 20 30"/>
    <geom type="box" size="0.3 0.3 0.1" pos="-1 1 0.2"/>
    <body name="b"><freejoint/><geom size="0.1"/></body>
  </worldbody>
</mujoco>
"""


def _random_elevation(model: mujoco.MjModel, seed: int) -> None:
    model.hfield_data[:] = np.random.default_rng(seed).uniform(0, 1, model.hfield_data.shape)


def test_the_engines_agree_on_random_poses_over_tilted_boxes_planes_and_a_turned_height_field():
    model = mujoco.MjModel.from_xml_string(PARITY_XML)
    _random_elevation(model, 0)
    spec = types.SimpleNamespace(
        height_scan={"ground": [0, 1, 2, 3], "scans": [{"body": 1, "grid": [9, 7], "spacing": 0.23, "offset": 0}]}
    )
    tables = ScanTables.from_spec(spec, model)  # type: ignore[arg-type]
    rng = np.random.default_rng(1)
    E = 48
    datas = [mujoco.MjData(model) for _ in range(E)]
    for d in datas:
        quat = rng.normal(size=4)
        d.qpos[:] = [*rng.uniform([-2.5, -2, 0.2], [2.5, 2, 1.5]), *(quat / np.linalg.norm(quat))]
        mujoco.mj_kinematics(model, d)
    host = HostHeightScan(spec, model, datas)  # type: ignore[arg-type]
    host.run_envs(np.arange(E, dtype=np.int64))
    xpos_EB3 = jnp.asarray(np.stack([d.xpos for d in datas]), jnp.float32)
    xmat_EB33 = jnp.asarray(np.stack([d.xmat.reshape(-1, 3, 3) for d in datas]), jnp.float32)
    mjx_E = np.asarray(jax.jit(jax.vmap(MjxHeightScan(tables).one))(xpos_EB3, xmat_EB33))
    c_E = host.height_EH
    assert c_E.shape == (E, 63) and np.all(c_E < MISS)  # the plane is under every point
    np.testing.assert_allclose(mjx_E, c_E, atol=1e-4)
    # mj_ray itself (every world geom here is ground; the scanning body is left out) gives the same
    # heights, and every ground geom is under some point
    offsets = grid_offsets(9, 7, 0.23)
    hit = set()
    for e, d in enumerate(datas):
        yaw = math.atan2(d.xmat[1, 3], d.xmat[1, 0])
        turn = np.array([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
        for h, (x, y) in enumerate(d.xpos[1, :2] + offsets @ turn.T):
            geom = np.zeros(1, np.int32)
            dist = mujoco.mj_ray(model, d, np.array([x, y, d.xpos[1, 2] + 10]), np.array([0, 0, -1.0]), None, 1, 1, geom)
            assert dist >= 0
            np.testing.assert_allclose(c_E[e, h], dist - 10, atol=1e-9)
            hit.add(int(geom[0]))
    assert hit == {0, 1, 2, 3}


def test_grid_offsets_run_x_fastest_and_are_centred():
    np.testing.assert_allclose(grid_offsets(3, 2, 0.5), [[-0.5, -0.25], [0, -0.25], [0.5, -0.25],
                                                         [-0.5, 0.25], [0, 0.25], [0.5, 0.25]])  # fmt: skip


# --------------------------------------------------------------------------- the checker

BODY = """\
observe actor
    h = {call}
reward
    alive 1 : 1
"""


def _check(call: str, xml: str = SCENE_XML, tmp: Path | None = None):
    assert tmp is not None
    path = tmp / "m.xml"
    path.write_text(xml)
    text = 'task t "t"\nactuators torque joints="*" effort=1\n' + BODY.format(call=call)
    return check_source(Source("t.ksim", text), model_path=str(path))


def _error(call: str, tmp: Path, xml: str = SCENE_XML) -> str:
    with pytest.raises(KsimError) as info:
        _check(call, xml, tmp)
    return str(info.value)


def test_checked_scan_has_the_grid_shape(tmp_path):
    task = _check('height_scan("rover", grid=[4, 5], spacing=0.1) + height_scan("rover", [4, 5], 0.1)', tmp=tmp_path)
    (obs,) = task.obs_actor
    assert obs.value.type.shape == (20,)
    assert len(task.height_scans) == 1 and task.height_scans[0].spacing == 0.1


@pytest.mark.parametrize(
    "call, message, at",
    [
        ('height_scan("rovr", grid=[3, 3], spacing=0.1)', "no body named 'rovr' (did you mean 'rover'?)", '"rovr"'),
        ('height_scan("rover", grid=[3, 0], spacing=0.1)', "grid size must be at least 1, got 0", "0]"),
        ('height_scan("rover", grid=[2.5, 3], spacing=0.1)', "grid size must be a whole number, got 2.5", "2.5"),
        ('height_scan("rover", grid=[3], spacing=0.1)', "grid must be two whole numbers [nx, ny]", "[3]"),
        ('height_scan("rover", grid=[40, 30], spacing=0.1)', "40 x 30 = 1200 points, more than 1024", "[40"),
        ('height_scan("rover", grid=[3, 3], spacing=-0.1)', "spacing must be a positive length in meters, got -0.1", "-0.1"),
        ('height_scan("rover", grid=[3, 3], spacing=5deg)', "spacing is an angle; it is a length", "5deg"),
        ('height_scan("rover", grid=[3, 3], spacing=joint_pos[0])', "spacing must be a constant number", "joint_pos"),
        ('height_scan("rover", grid=[3, 3], spaceing=0.1)', "no parameter 'spaceing' (did you mean 'spacing'?)", "spaceing"),
        ('height_scan("rover", grid=[3, 3])', "height_scan() is missing its argument 'spacing'", "height_scan"),
        ('height_scan("r*", grid=[3, 3], spacing=0.1)', "takes one body name, not a glob", '"r*"'),
        ("height_scan(rover, grid=[3, 3], spacing=0.1)", "takes a body name as a string", "rover"),
    ],
)
def test_checker_errors_point_at_the_argument(tmp_path, call, message, at):
    text = _error(call, tmp_path)
    assert message in text, text
    column = len("    h = ") + call.index(at) + 1
    assert f"t.ksim:4:{column}: error:" in text, text


def test_ground_must_exist_and_be_of_a_kind_both_engines_scan(tmp_path):
    bare = '<mujoco><worldbody><body name="b"><joint name="j" type="slide"/><geom size="0.1"/></body></worldbody></mujoco>'
    call = 'height_scan("b", grid=[2, 2], spacing=0.1)'
    text = _error(call, tmp_path, bare)
    assert "needs ground to cast its rays on, but the model has none" in text and "add a `floor`" in text
    text = _error(call, tmp_path, bare.replace("<worldbody>", '<worldbody><geom name="rock" type="sphere" size="1"/>'))
    assert "ground geom 'rock' is a sphere; height_scan sees ground of kinds plane, hfield, box" in text
    tilted = bare.replace(
        "<worldbody>",
        '<asset><hfield name="hf" nrow="2" ncol="2" size="1 1 0.1 0.1"/></asset>'
        '<worldbody><geom name="hill" type="hfield" hfield="hf" euler="0.3 0 0"/>',
    )
    text = _error(call, tmp_path, tilted)
    assert "ground geom 'hill' is a height field whose z axis is not vertical" in text
    # visual-only world geoms and moving bodies are not ground: a scene with only those has none
    visual = bare.replace("<worldbody>", '<worldbody><geom type="box" size="1 1 1" contype="0" conaffinity="0"/>')
    assert "the model has none" in _error(call, tmp_path, visual)
