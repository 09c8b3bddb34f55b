"""`physics sphere_hfield=deepest` (ksimdsl/runtime/engine/mjx/hfield.py): one MJX contact per sphere on a
height field, the deepest of MJX's manifold.

Checked against MJX's own manifold and against C MuJoCo: the contact depth of a ball pressed into slope and
stairs tiles is the same; a ball dropped on them comes to rest at the same height; the contact slots (and so
the constraint rows) are a plane's; the default never touches MJX's table; the setting reaches the engine
from the task file, is in the SPEC only where set, and a bad value is an error at its position.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from test_terrain import BODY, TERRAIN_BLOCK, bot_dir, first_error, surface, task_text  # noqa: F401 (bot_dir: a fixture)

from ksimdsl.model.terrain import Param, Terrain, Tile, add_terrain
from ksimdsl.runtime.engine.mjx.hfield import collisions
from ksimdsl.runtime.engine.mjx.mjximport import import_mjx

mjx = import_mjx()

#: points on the slope and stairs tiles of `ball_model`, stair edges among them
POINTS = [(-1.5, -0.7), (1.6, -1.2), (0.3, -0.9), (-0.6, 1.3), (1.2, 0.8), (1.0, -1.0)]
RADIUS = 0.05


def ball_model() -> mujoco.MjModel:
    slope = Tile("slope", (Param("grade", 0.1, 0.5),))
    stairs = Tile("stairs", (Param("height", 0.05, 0.1), Param("width", 0.3, 0.3)))
    spec = mujoco.MjSpec()
    add_terrain(spec, Terrain(rows=2, cols=2, size=2.0, resolution=0.1, platform=0.4, tiles=(slope, stairs)))
    ball = spec.worldbody.add_body(name="ball")
    ball.add_freejoint()
    ball.add_geom(type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[RADIUS, 0.0, 0.0])
    return spec.compile()


@pytest.fixture(scope="module")
def ball():
    model = ball_model()
    qpos = np.array([[x, y, surface(model, x, y) + RADIUS - 0.01, 1, 0, 0, 0] for x, y in POINTS])
    return model, qpos


def _mjx_forward(model: mujoco.MjModel, qpos: np.ndarray, choice: str):
    """(contact dist of every slot, per ball) after mjx.forward with `choice`."""
    with collisions(choice):
        m = mjx.put_model(model)
        template = mjx.make_data(m)

        def one(q):
            with collisions(choice):
                return mjx.forward(m, template.replace(qpos=q))._impl.contact.dist

        return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(qpos, jnp.float32)))


def test_the_deepest_contact_is_the_manifolds_deepest_and_c_mujocos(ball):
    model, qpos = ball
    manifold, deepest = _mjx_forward(model, qpos, "manifold"), _mjx_forward(model, qpos, "deepest")
    assert manifold.shape == (len(POINTS), 4) and deepest.shape == (len(POINTS), 1)
    data = mujoco.MjData(model)
    c_depth = []
    for q in qpos:
        data.qpos[:] = q
        mujoco.mj_forward(model, data)
        c_depth.append(data.contact.dist[: data.ncon].min())
    assert max(c_depth) < -0.009  # every ball is pressed 1 cm in
    np.testing.assert_allclose(deepest[:, 0], manifold.min(axis=1), atol=1e-6)
    np.testing.assert_allclose(deepest[:, 0], c_depth, atol=1e-5)


def test_a_dropped_ball_stays_on_top_of_the_ground_as_on_c_mujoco(ball):
    """Dropped 3 cm onto slope and stairs points, 0.2 s of physics (it lands, then rolls down slopes and
    off stair edges): its centre ends a radius above the ground under it on MJX with one contact, as on C MuJoCo,
    never sunk into the height field."""
    model, qpos = ball
    start = qpos.copy()
    start[:, 2] += 0.04
    steps = 100
    data = mujoco.MjData(model)
    c_end = []
    for q in start:
        mujoco.mj_resetData(model, data)
        data.qpos[:] = q
        for _ in range(steps):
            mujoco.mj_step(model, data)
        c_end.append(data.qpos[:3].copy())
    with collisions("deepest"):
        m = mjx.put_model(model)
        template = mjx.make_data(m)

    def drop(q):
        def body(d, _):
            with collisions("deepest"):
                return mjx.step(m, d), None

        return jax.lax.scan(body, template.replace(qpos=q), None, length=steps)[0].qpos[:3]

    mjx_end = np.asarray(jax.jit(jax.vmap(drop))(jnp.asarray(start, jnp.float32)))
    for end in (np.asarray(c_end), mjx_end):
        above = end[:, 2] - np.array([surface(model, x, y) for x, y, _ in end])
        # a radius above a level surface, up to radius / cos(atan(0.5)) on the steepest slope
        assert np.all((above > RADIUS - 0.005) & (above < 1.12 * RADIUS + 0.005)), above


def test_the_default_leaves_mjx_alone_and_deepest_is_undone_after_the_block():
    from mujoco.mjx._src import collision_driver
    from mujoco.mjx._src.types import GeomType

    key = (GeomType.HFIELD, GeomType.SPHERE)
    own = collision_driver._COLLISION_FUNC[key]
    with collisions("manifold"):
        assert collision_driver._COLLISION_FUNC[key] is own
    with collisions("deepest"):
        assert collision_driver._COLLISION_FUNC[key].ncon == 1
    assert collision_driver._COLLISION_FUNC[key] is own and own.ncon == 4


def test_the_setting_reaches_the_mjx_engine_and_the_spec_only_where_set(bot_dir):
    from ksimdsl.session import load_task

    path = bot_dir / "ball.ksim"
    text = task_text()
    path.write_text(text)
    plain = load_task(str(path), engine="mjx")
    assert plain.spec.physics.sphere_hfield == "manifold" and "sphere_hfield" not in plain.source
    path.write_text(text.replace("    pose base_height=0.5\n", "    pose base_height=0.5\nphysics sphere_hfield=deepest\n"))
    chosen = load_task(str(path), engine="mjx")
    assert chosen.spec.physics.sphere_hfield == "deepest" and "'sphere_hfield': 'deepest'" in chosen.source
    from ksimdsl.runtime.engine.mjx.physics import MjxPhysics

    physics = MjxPhysics.create(chosen.spec, ball_model(), num_envs=1, device=jax.local_devices()[0])
    assert physics.sphere_hfield == "deepest" and physics.template._impl.contact.dist.shape == (1,)
    physics = MjxPhysics.create(plain.spec, ball_model(), num_envs=1, device=jax.local_devices()[0])
    assert physics.template._impl.contact.dist.shape == (4,)


def test_a_bad_choice_is_an_error_at_its_position(bot_dir):
    line, col, text = first_error(bot_dir, TERRAIN_BLOCK, BODY + "physics sphere_hfield=biggest\n")
    assert (line, col) == (20, 23)  # the value, on the task's last line
    assert text == "physics setting 'sphere_hfield' must be one of manifold, deepest, got 'biggest'"
