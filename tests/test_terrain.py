"""Rough terrain (`terrain` in the model block, ksimdsl/model/terrain.py) and `curriculum distance`.

The height field is deterministic per seed; slope and stairs tiles have the
surface their parameters describe (read back with MuJoCo's ray cast, so the
hfield's layout is checked too); both engines load the same field; the reset
kernels of both backends put an env on the tile of its level; the distance
curriculum moves levels up and down the same way on numpy and jax; bad terrain
parameters are errors at their position.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from test_parity import _kernel_cache, compile_both, run_jax, run_numba  # noqa: F401 (a fixture)

from ksimdsl.abi import MEM_TRAVELLED, TaskSpec
from ksimdsl.errors import KsimError, Source
from ksimdsl.frontend.check import check_file, check_source
from ksimdsl.model.terrain import Param, Terrain, Tile, add_terrain, generate, heights, tile_origins
from ksimdsl.runtime.engine.base import EpisodeCounters, KernelStep, OutcomeRules, step_outcome
from ksimdsl.runtime.engine.curriculum import Curriculum
from ksimdsl.runtime.engine.model import default_pose, load_model

BOT_XML = """
<mujoco model="bot">
  <worldbody>
    <body name="torso" pos="0 0 0.5">
      <freejoint name="root"/>
      <geom name="torso_geom" type="box" size="0.1 0.1 0.05" mass="2"/>
      <body name="leg" pos="0 0 -0.05">
        <joint name="hip" axis="0 1 0" range="-1 1"/>
        <geom name="foot" type="capsule" fromto="0 0 0 0 0 -0.3" size="0.03"/>
      </body>
    </body>
  </worldbody>
</mujoco>
"""

TERRAIN_BLOCK = """\
    terrain rows=3 size=2m resolution=0.1m seed=3 platform=0.4m
        rough  amplitude=0.02m..0.10m
        slope  grade=0..0.3
        stairs height=0.02m..0.15m width=0.3m
        flat
"""

BODY = """\
    pose base_height=0.5
actuators position joints="*" kp=10 effort=5
observe actor
    q = joint_pos
reward
    alive 1 : 1
    feet  1 : where(contact("foot", "terrain"), 1, 0)
terminate
    fell : base_pos.z < 0.1
reset
    base_pos.x += 0.25
curriculum distance up=1m down=0.5m
"""

MIXED = (
    Tile("rough", (Param("amplitude", 0.02, 0.1),)),
    Tile("slope", (Param("grade", 0.0, 0.3),)),
    Tile("stairs", (Param("height", 0.02, 0.15), Param("width", 0.3, 0.3))),
    Tile("flat"),
)


def task_text(block: str = TERRAIN_BLOCK, body: str = BODY) -> str:
    return f'task bot "terrain"\nmodel "bot.xml"\n{block}{body}'


@pytest.fixture(scope="module")
def bot_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bot")
    (root / "bot.xml").write_text(BOT_XML)
    (root / "t.ksim").write_text(task_text())
    return root


def surface(model: mujoco.MjModel, x: float, y: float) -> float:
    """The height of the model's ground at (x, y), by a ray cast straight down."""
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    geom = np.zeros(1, np.int32)
    dist = mujoco.mj_ray(model, data, np.array([x, y, 50.0]), np.array([0.0, 0.0, -1.0]), None, 1, -1, geom)
    assert geom[0] == mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "terrain")
    return 50.0 - dist


def terrain_model(terrain: Terrain) -> mujoco.MjModel:
    spec = mujoco.MjSpec()
    add_terrain(spec, terrain)
    return spec.compile()


# --------------------------------------------------------------------------- the height field


def test_generation_is_deterministic_per_seed_and_differs_across_seeds():
    terrain = Terrain(rows=3, cols=4, size=2.0, resolution=0.1, tiles=MIXED, seed=3)
    again = dataclasses.replace(terrain)  # equal, but a fresh object and a fresh generation
    a, b = generate(terrain), generate(again)
    assert a.shape == terrain.samples == (81, 61)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(terrain_model(terrain).hfield_data, terrain_model(again).hfield_data)
    other = generate(dataclasses.replace(terrain, seed=4))
    rough = slice(0, 21)  # the rough column (y samples 0..20); every other tile has no randomness
    assert not np.allclose(a[rough], other[rough])
    np.testing.assert_array_equal(a[21:], other[21:])
    # the rough tiles' noise lies in [0, amplitude], the amplitude rising with the row
    for r, amplitude in enumerate((0.02, 0.06, 0.10)):
        tile = a[0:20, r * 20 : r * 20 + 20]  # (a tile's last sample row and column are its neighbours' first)
        assert 0 <= tile.min() and 0.7 * amplitude < tile.max() <= amplitude


def test_a_slope_tile_is_the_hand_computed_pyramid():
    # row 1 of 2 has difficulty 1: grade 0.5; the platform is 0.4 m wide
    terrain = Terrain(rows=2, cols=1, size=2.0, resolution=0.1, platform=0.4, tiles=(Tile("slope", (Param("grade", 0.1, 0.5),)),))
    model = terrain_model(terrain)
    cx, cy = terrain.center(1, 0)
    assert (cx, cy) == (1.0, 0.0)
    for dx, dy in [(0.3, 0.0), (0.55, 0.2), (0.8, -0.7), (0.95, 0.1)]:  # the +x face: dx >= |dy|, dx > 0.2
        assert surface(model, cx + dx, cy + dy) == pytest.approx(0.5 * (1.0 - dx), abs=1e-5)
        assert surface(model, cx - dy, cy + dx) == pytest.approx(0.5 * (1.0 - dx), abs=1e-5)  # the +y face
    assert surface(model, cx + 0.1, cy - 0.15) == pytest.approx(0.5 * 0.8, abs=1e-5)  # the platform
    # row 0 (difficulty 0): grade 0.1
    assert surface(model, -1.0 + 0.6, 0.0) == pytest.approx(0.1 * 0.4, abs=1e-5)
    np.testing.assert_allclose(tile_origins(terrain), [[-1.0, 0.0, 0.1 * 0.8], [1.0, 0.0, 0.5 * 0.8]])


def test_stairs_step_by_their_height_every_width():
    terrain = Terrain(
        rows=1, cols=1, size=3.0, resolution=0.05, platform=0.6,
        tiles=(Tile("stairs", (Param("height", 0.05, 0.05), Param("width", 0.3, 0.3))),),
    )  # fmt: skip
    model = terrain_model(terrain)
    # from the edge (1.5 m out) inwards: steps 0.3 m deep, each 0.05 m higher, up to the platform (|x| < 0.3)
    for k, x in enumerate([1.35, 1.05, 0.75, 0.45]):
        assert surface(model, x, 0.0) == pytest.approx(0.05 * k, abs=1e-5)
        assert surface(model, 0.02, -x) == pytest.approx(0.05 * k, abs=1e-5)
    assert surface(model, 0.0, 0.0) == pytest.approx(0.2, abs=1e-5)
    h = heights(terrain)
    assert sorted(np.unique(np.round(h, 6))) == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    assert tile_origins(terrain)[0, 2] == pytest.approx(0.2)


def test_both_engines_load_the_identical_terrain(bot_dir):
    """The MJX and the C engine build their models with `load_model` from their own generated SPEC."""
    from ksimdsl.runtime.engine.mjx.env import MjxEnv
    from ksimdsl.runtime.engine.mujoco.env import MujocoEnv

    task = check_file(str(bot_dir / "t.ksim"))
    jx, nb, nb_spec = compile_both(task)
    jax_spec = TaskSpec.from_dict(jx.SPEC)
    assert jax_spec.compose == TaskSpec.from_dict(nb_spec).compose
    path = bot_dir / "bot.xml"
    mjx_env = MjxEnv(jax_spec, jx, path, num_envs=2)
    c_env = MujocoEnv(TaskSpec.from_dict(nb_spec), nb, path, num_envs=2, threads=1)
    try:
        c_model, j_model = c_env.mj_model, mjx_env.mj_model
        for field in ("hfield_data", "hfield_size", "hfield_nrow", "hfield_ncol", "geom_pos", "geom_type"):
            np.testing.assert_array_equal(getattr(c_model, field), getattr(j_model, field), err_msg=field)
        np.testing.assert_array_equal(np.asarray(mjx_env.model.hfield_data), c_model.hfield_data)  # on the device
        terrain = task.model.composition.terrain
        h = heights(terrain)
        g = mujoco.mj_name2id(c_model, mujoco.mjtObj.mjOBJ_GEOM, "terrain")
        surface_ = c_model.geom_pos[g, 2] + c_model.hfield_data.reshape(h.shape) * c_model.hfield_size[0, 2]
        np.testing.assert_allclose(surface_, h, atol=1e-6)
    finally:
        c_env.close()


@pytest.mark.slow
def test_mjx_and_c_mujoco_collide_with_the_same_surface():
    """A ball pressed 1 cm into slope and stairs tiles: MJX's contact depth is C MuJoCo's (hfield layout,
    heights and MJX's hfield collisions). (Trajectories on terrain still drift apart by ~1e-3 within
    ten contact steps, against ~1e-5 on a plane: the two generate different hfield contact points.)"""
    import jax

    from ksimdsl.runtime.engine.mjx.mjximport import import_mjx

    mjx = import_mjx()
    slope = Tile("slope", (Param("grade", 0.1, 0.5),))
    stairs = Tile("stairs", (Param("height", 0.05, 0.1), Param("width", 0.3, 0.3)))
    terrain = Terrain(rows=2, cols=2, size=2.0, resolution=0.1, platform=0.4, tiles=(slope, stairs))
    spec = mujoco.MjSpec()
    add_terrain(spec, terrain)
    ball = spec.worldbody.add_body(name="ball")
    ball.add_freejoint()
    ball.add_geom(type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[0.05, 0.0, 0.0])
    model = spec.compile()
    points = [(-1.5, -0.7), (1.6, -1.2), (0.3, -0.9), (-0.6, 1.3), (1.2, 0.8), (1.0, -1.0)]
    qpos = np.array([[x, y, surface(model, x, y) + 0.04, 1, 0, 0, 0] for x, y in points])
    data = mujoco.MjData(model)
    c_depth = []
    for q in qpos:
        data.qpos[:] = q
        mujoco.mj_forward(model, data)
        c_depth.append(data.contact.dist[: data.ncon].min())
    mjx_model = mjx.put_model(model)

    def depth(q):
        d = mjx.forward(mjx_model, mjx.make_data(mjx_model).replace(qpos=q))
        return jax.numpy.min(d._impl.contact.dist)

    mjx_depth = jax.jit(jax.vmap(depth))(jax.numpy.asarray(qpos, jax.numpy.float32))
    assert max(c_depth) < -0.009  # every ball touches
    np.testing.assert_allclose(np.asarray(mjx_depth), c_depth, atol=1e-5)


# --------------------------------------------------------------------------- spawning


def test_reset_puts_an_env_on_the_tile_of_its_level(bot_dir):
    task = check_file(str(bot_dir / "t.ksim"))
    terrain = task.model.composition.terrain
    assert (terrain.rows, terrain.cols) == (3, 4) and task.curriculum.levels == 2  # one level per row
    jx, nb, spec = compile_both(task)
    assert spec["rand"]["reset"] == [0, 1]  # one draw: the column
    qpos0, qvel0 = default_pose(load_model(TaskSpec.from_dict(spec), bot_dir / "bot.xml"))
    levels = np.array([0.0, 0.5, 1.0, 0.5, 0.26])
    rows = np.array([0, 1, 2, 1, 1])
    cols = np.array([0, 3, 2, 1, 3])
    inputs = {
        "qpos": np.repeat(qpos0[None].astype(np.float64), 5, axis=0),
        "qvel": np.repeat(qvel0[None].astype(np.float64), 5, axis=0),
        "level": levels,
        "rand_n": np.zeros((5, 0)),
        "rand_u": ((cols + 0.5) / 4)[:, None],
    }
    origins = tile_origins(terrain)
    want = origins[rows * 4 + cols] + [0.25, 0.0, 0.5]  # the tile, plus `base_pos.x += 0.25` and the pose's height
    for out in (run_jax(jx, spec, "reset", inputs), run_numba(nb, spec, "reset", inputs)):
        np.testing.assert_allclose(out["qpos"][:, :3], want, atol=1e-5)
        np.testing.assert_allclose(out["qpos"][:, 3:], inputs["qpos"][:, 3:], atol=1e-6)
        spawn = next(s for s in spec["mem_layout"] if s["name"] == "curriculum.spawn")["offset"]
        np.testing.assert_allclose(out["mem"][:, spawn : spawn + 2], want[:, :2], atol=1e-5)
    # tile (1, 3) is flat at 0, tile (2, 2) the top of the hardest stairs: 0.15 * floor(0.8 / 0.3)
    assert origins[1 * 4 + 3, 2] == 0.0 and origins[2 * 4 + 2, 2] == pytest.approx(0.3)
    # the step kernel keeps the distance travelled from there: 5 m for a base moved by (3, -4)
    assert spec["phys_inputs"] == ["qpos", "contact"]
    mem = np.zeros((1, spec["mem_size"]))
    mem[0, spawn : spawn + 2] = want[1, :2]
    step_in = {
        "qpos": np.array([[want[1, 0] + 3.0, want[1, 1] - 4.0, 0.5, 1, 0, 0, 0, 0]]),
        "contact": np.zeros((1, 1)),
        "action": np.zeros((1, 1)),
        "level": np.zeros(1),
        "mem": mem,
        "rand_n": np.zeros((1, 0)),
        "rand_u": np.zeros((1, 0)),
    }
    travelled = next(s for s in spec["mem_layout"] if s["name"] == MEM_TRAVELLED)["offset"]
    for out in (run_jax(jx, spec, "step", step_in), run_numba(nb, spec, "step", step_in)):
        assert out["mem"][0, travelled] == pytest.approx(5.0, rel=1e-6)
        np.testing.assert_allclose(out["mem"][0, spawn : spawn + 2], want[1, :2], atol=1e-6)  # kept


# --------------------------------------------------------------------------- the distance curriculum


def test_distance_curriculum_moves_up_and_down_alike_on_numpy_and_jax():
    cur = Curriculum.from_spec({"kind": "distance", "levels": 4, "up": 2.0, "down": 0.5, "min_steps": 3})
    level_E = np.array([0.25, 0.25, 0.5, 0.5, 0.5, 0.5, 1.0, 0.0, 0.5])
    steps_E = np.array([5, 5, 5, 5, 5, 5, 5, 5, 1])
    done_E = np.array([True, True, True, True, True, False, True, True, True])
    failure_E = np.array([False, True, True, False, False, False, False, True, False])
    travelled_E = np.array([3.0, 2.5, 1.0, 0.2, 1.0, 9.0, 4.0, 0.0, 9.0])
    # up | up (far enough beats the fall) | down (fell) | down (too short) | stays | not done |
    # up, clipped at 1 | down, clipped at 0 | too few steps at its level
    want = [0.5, 0.5, 0.25, 0.25, 0.5, 0.5, 1.0, 0.0, 0.5]
    results = []
    for xp in (np, jnp):
        level, steps = cur.on_step(
            xp.asarray(level_E, xp.float32), xp.asarray(steps_E), xp.asarray(done_E), xp.full(9, 10), 100,
            failure_E=xp.asarray(failure_E), travelled_E=xp.asarray(travelled_E, xp.float32), xp=xp,
        )  # fmt: skip
        results.append((np.asarray(level), np.asarray(steps)))
        np.testing.assert_allclose(results[-1][0], want)
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][1], [0, 0, 0, 0, 6, 6, 6, 6, 2])  # reset where the level changed


def test_step_outcome_reads_the_distance_from_the_kernels_memory(bot_dir):
    _, _, spec = compile_both(check_file(str(bot_dir / "t.ksim")))
    rules = OutcomeRules.from_spec(TaskSpec.from_dict(spec))
    mem_EM = np.zeros((3, spec["mem_size"]))
    mem_EM[:, rules.travelled_slot] = [1.5, 0.7, 0.1]  # up=1m down=0.5m
    kernel = KernelStep(
        reward_terms_ER=np.ones((3, 2)),
        reward_weights_ER=np.ones((3, 2)),
        terminations_EK=np.array([[False], [True], [False]]),  # env 1 fell
        obs_actor_EO=np.zeros((3, 1)),
        obs_critic_EC=np.zeros((3, 1)),
        metrics_EJ=np.zeros((3, 0)),
        mem_EM=mem_EM,
    )
    counters = EpisodeCounters(np.full(3, spec["episode_steps"] - 1), np.zeros(3), np.full(3, 0.5), np.full(3, 50))
    out, after = step_outcome(np, rules, kernel, np.zeros(3, bool), counters)
    assert out.done_E.all()
    np.testing.assert_allclose(after.level_E, [1.0, 0.0, 0.0])  # levels=2: up | down (fell) | down (too short)


# --------------------------------------------------------------------------- errors


def first_error(bot_dir: Path, block: str, body: str = BODY):
    with pytest.raises(KsimError) as info:
        check_source(Source(str(bot_dir / "t.ksim"), task_text(block, body)))
    d = info.value.diagnostics[0]
    return d.span.line, d.span.col, d.message


@pytest.mark.parametrize(
    "block, where, message",
    [
        ("    terrain size=-8m\n        flat\n", (3, 18), "terrain setting 'size' must be positive, got -8"),
        ("    terrain size=8s\n        flat\n", (3, 18), "unit mismatch: terrain setting 'size' is a length in m (or a plain number of meters), got a time"),
        ("    terrain rows=3\n        stair height=0.1m width=0.3m\n", (4, 9), "unknown terrain tile kind 'stair' (did you mean 'stairs'?)"),
        ("    terrain rows=3\n        rough amplitude=-0.1m..0.1m\n", (4, 25), "rough tile setting 'amplitude' must be at least 0, got -0.1"),
        ("    terrain rows=3\n        stairs height=0.1m width=0m\n", (4, 34), "stairs tile setting 'width' must be positive, got 0"),
        ("    terrain rows=3\n        slope grde=0.2\n", (4, 15), "unknown slope tile setting 'grde' (did you mean 'grade'?)"),
        ("    terrain rows=3\n        slope\n", (4, 9), "a slope tile needs grade=... (one value, or lo..hi by difficulty)"),
        ("    terrain rows=3 size=1m..2m\n        flat\n", (3, 25), "terrain setting 'size' takes one value; ranges lo..hi are for the tile lines"),
        ("    terrain size=8m resolution=0.03m\n        flat\n", (3, 18), "size (8m) must be a whole multiple of the resolution (0.03m)"),
        ("    terrain rows=50 cols=50 size=8m resolution=0.05m\n        flat\n", (3, 48),
         "the terrain has 8001 x 8001 = 64016001 height samples, more than 2000000"),
        ("    terrain rows=100 cols=50 resolution=1m\n        flat\n", (3, 18), "the terrain has 100 x 50 tiles, more than 4096"),
        ("    floor\n    terrain rows=3\n        flat\n", (4, 5), "a model block has either `floor` or `terrain`, not both"),
        ("    terrain rows=3\n", (3, 5), "the terrain needs at least one tile line below it"),
        ("    terrain cols=1\n        flat\n        slope grade=0.1\n", (5, 9), "cols=1, so this tile line and those after"),
    ],
)  # fmt: skip
def test_bad_terrain_is_an_error_at_its_position(bot_dir, block, where, message):
    line, col, text = first_error(bot_dir, block)
    assert (line, col) == where and text.startswith(message), text


def test_floor_contacts_on_a_terrain_say_what_the_ground_is_called(bot_dir):
    body = BODY.replace('contact("foot", "terrain")', 'contact("foot", "floor")')
    with pytest.raises(KsimError) as info:
        check_source(Source(str(bot_dir / "t.ksim"), task_text(TERRAIN_BLOCK, body)))
    d = info.value.diagnostics[0]
    assert (d.span.line, d.span.col) == (14, 37) and "'floor'" in d.message
    assert d.notes[-1] == "the model block's terrain is the geom 'terrain'"


def test_distance_curriculum_takes_lengths(bot_dir):
    body = BODY.replace("curriculum distance up=1m down=0.5m", "curriculum distance up=2s")
    line, col, text = first_error(bot_dir, TERRAIN_BLOCK, body)
    assert (line, col) == (19, 24)
    assert text == "unit mismatch: curriculum distance setting 'up' is a length in m (or a plain number of meters), got a time"
