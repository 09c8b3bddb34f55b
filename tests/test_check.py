"""The semantic checker: names resolve against the MJCF model, shapes and units are static."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

from ksimdsl.errors import InternalCompilerError, KsimError, Source, Span
from ksimdsl.frontend import ast
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.check import check_file, check_module, check_source
from ksimdsl.frontend.model_info import load_model_info, resolve_model_path

REPO = Path(__file__).resolve().parents[1]
CARTPOLE = str(REPO / "tasks" / "models" / "cartpole.xml")
HUMANOID = "pkg:mujoco/mjx/test_data/humanoid/humanoid.xml"

# A small floating model with sensors and a site (the MJX humanoid has neither).
ROBOT_XML = """
<mujoco model="robot">
  <worldbody>
    <geom name="floor" type="plane" size="5 5 0.1"/>
    <body name="base" pos="0 0 1">
      <freejoint name="root"/>
      <geom name="base" type="box" size="0.2 0.1 0.05" mass="3"/>
      <site name="imu" pos="0 0 0.05"/>
      <body name="leg" pos="0 0 -0.1">
        <joint name="hip" type="hinge" axis="0 1 0" range="-1 1"/>
        <geom name="leg" type="capsule" fromto="0 0 0 0 0 -0.4" size="0.03"/>
        <body name="foot" pos="0 0 -0.45">
          <joint name="knee" type="hinge" axis="0 1 0" range="-2 0"/>
          <geom name="foot" type="sphere" size="0.04"/>
        </body>
      </body>
    </body>
  </worldbody>
  <actuator>
    <motor name="hip" joint="hip" gear="20" ctrlrange="-1 1"/>
    <motor name="knee" joint="knee" gear="20" ctrlrange="-1 1"/>
  </actuator>
  <sensor>
    <gyro name="imu_gyro" site="imu"/>
    <accelerometer name="imu_acc" site="imu"/>
    <touch name="foot_touch" site="imu"/>
  </sensor>
</mujoco>
"""

HEADER = """\
task t "test"
"""
MINIMAL_BODY = """\
observe actor
    q = joint_pos
reward
    alive 1 : 1
"""


@pytest.fixture(scope="module")
def robot(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("models") / "robot.xml"
    path.write_text(ROBOT_XML)
    return str(path)


def check(text: str, model: str = CARTPOLE, body: str = MINIMAL_BODY) -> t.CheckedTask:
    text = textwrap.dedent(text)
    if text and not text.endswith("\n"):
        text += "\n"
    source = Source("t.ksim", HEADER + text + body)
    return check_source(source, model_path=model)


def errors(text: str, model: str = CARTPOLE, body: str = MINIMAL_BODY) -> str:
    with pytest.raises(KsimError) as info:
        check(text, model, body)
    return str(info.value)


def strip_lets(e: t.Expr) -> t.Expr:
    while isinstance(e, (t.Let, t.Quantity)):
        e = e.value
    return e


# --------------------------------------------------------------------------- the spec example


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> t.CheckedTask:
    """The language spec's example adapted to the MJX humanoid's names (it has no IMU)."""
    text = (REPO / "tests" / "data" / "spec_example.ksim").read_text()
    text = text.replace('"*_knee*"', '"knee_*"').replace("models/humanoid.xml", HUMANOID)
    text = "\n".join(line for line in text.splitlines() if "imu_gyro" not in line)
    path = tmp_path_factory.mktemp("tasks") / "walk.ksim"
    path.write_text(text)
    return check_file(str(path))


def test_spec_example_settings_and_units(walk: t.CheckedTask) -> None:
    assert walk.name == "walk"
    assert walk.physics == t.Physics(dt=0.004, ctrl_dt=0.02, substeps=5, solver="newton", iterations=4, ls_iterations=8)
    assert walk.engine == "mjx"
    assert walk.episode_steps == 1000  # 20s / 20ms
    assert walk.model.nq == 28 and walk.model.root is not None and walk.model.root.qpos_adr == 0
    assert walk.train.num_envs == 2048 and walk.train.lam == 0.95
    assert walk.train.normalize_obs is True  # default merged in
    assert walk.policy.dist == "mixture" and walk.policy.mixtures == 5 and walk.policy.hidden == (256, 256)
    assert walk.curriculum.to_dict() == {"kind": "episode_length", "levels": 10, "up": 0.8, "down": 0.3, "min_steps": 20}


def test_spec_example_actuators(walk: t.CheckedTask) -> None:
    act = walk.actuators
    assert act.kind == "position" and walk.action_size == 21
    knees = [i for i, j in enumerate(act.joint_names) if j.startswith("knee_")]
    assert len(knees) == 2
    assert [act.kp[i] for i in knees] == [80.0, 80.0]
    assert sorted(set(act.kp)) == [50.0, 80.0] and set(act.kd) == {1.0}
    assert act.action_scale == 0.5
    assert act.latency == pytest.approx((0.0, 0.01))
    assert act.zero_offset is not None and act.zero_offset.type.shape == (21,)
    assert act.zero_offset.params[1].value == pytest.approx(math.radians(3))
    # abdomen_y is actuator 0 and drives joint 2 (qpos 8)
    assert act.joint_names[0] == "abdomen_y" and act.joint_qpos_adr[0] == 8 and act.joint_dof_adr[0] == 7


def test_spec_example_observations(walk: t.CheckedTask) -> None:
    actor = {o.name: o for o in walk.obs_actor}
    assert [o.name for o in walk.obs_actor] == ["joint_pos", "joint_vel", "gravity", "command", "last"]
    assert actor["joint_pos"].size == 21 and actor["gravity"].size == 3 and actor["command"].size == 3
    assert actor["gravity"].delay == (0, 2)
    noise = actor["joint_vel"].noise
    assert noise is not None and noise.kind == "gaussian" and noise.type.shape == (21,)
    # critic: every actor observation, clean, then its own
    critic = [o.name for o in walk.obs_critic]
    assert critic == ["joint_pos", "joint_vel", "gravity", "command", "last", "lin_vel", "feet"]
    assert all(o.noise is None and o.delay is None for o in walk.obs_critic)
    feet = walk.obs_critic[-1].value
    assert isinstance(feet, t.Cast) and feet.type == t.Type("float", (2,))  # bool[2] observed as floats


def test_spec_example_rewards_and_terminations(walk: t.CheckedTask) -> None:
    assert [r.name for r in walk.rewards] == ["alive", "track_vel", "height", "ang_vel_xy", "action_rate", "air_time"]
    assert all(r.value.type == t.FLOAT and r.weight.type == t.FLOAT for r in walk.rewards)
    weights = {r.name: r.weight for r in walk.rewards}
    assert weights["ang_vel_xy"] == t.Const(-0.05, t.FLOAT)
    assert any(isinstance(n, t.Level) for n in t.walk(weights["air_time"]))
    assert [(x.name, x.success) for x in walk.terminations] == [("fell", False), ("tilted", False), ("escaped", True)]
    tilted = walk.terminations[1].cond
    assert isinstance(tilted, t.Compare) and tilted.right == t.Const(math.radians(60), t.FLOAT)


def test_spec_example_prev_and_contacts(walk: t.CheckedTask) -> None:
    # prev(action) appears twice (observation and reward) but gets one slot; prev(feet) another
    assert len(walk.prev_slots) == 2
    assert isinstance(walk.prev_slots[0].expr, t.Action)
    foot_left, foot_right, floor = (12, 13), (8, 9), (0,)
    assert walk.contact_queries == (t.ContactQuery(foot_left, floor), t.ContactQuery(foot_right, floor))


def test_spec_example_randomize_reset_events(walk: t.CheckedTask) -> None:
    rand = {r.field: r for r in walk.randomize}
    assert rand["geom_friction"].field_shape == (20, 3) and rand["geom_friction"].value.type.shape == (20,)
    assert rand["body_mass"].rows == (1,)  # torso
    assert rand["dof_damping"].rows == tuple(range(27))
    jpos, jvel, yaw = walk.reset
    assert (jpos.target, jpos.op, jpos.index) == ("qpos", "+=", tuple(range(7, 28)))
    assert isinstance(jpos.value, t.Dist) and jpos.value.type.shape == (21,)
    assert (jvel.target, jvel.index) == ("qvel", tuple(range(6, 27)))
    assert (yaw.target, yaw.index, yaw.op) == ("base_yaw", (), "=")
    assert yaw.value.params[0].value == pytest.approx(-math.pi)
    (push,) = walk.events
    assert push.every == t.Dist("uniform", (t.Const(50.0, t.FLOAT), t.Const(150.0, t.FLOAT)), t.FLOAT)
    (write,) = push.writes
    assert (write.target, write.index, write.op) == ("qvel", (0, 1), "+=")
    assert write.value.type.shape == (2,)


# --------------------------------------------------------------------------- quantities and shapes


def test_cartpole_quantities_and_defaults() -> None:
    task = check(
        """
        let tip = site_pos("tip")
        """,
        body="""\
observe actor
    q = joint_pos
    v = joint_vel
    tip = tip.xz
    cart = body_pos("cart").x
reward
    upright 1 : body_up("pole_1").z
    centered 0.5 : -abs(joint_pos["slider"])
""",
    )
    assert task.model.root is None and task.model.nq == 2
    assert task.actuators.kind == "ctrl" and task.action_size == 1  # default action source
    assert task.physics.dt == 0.01 and task.physics.substeps == 2  # the model's timestep, default ctrl_dt
    assert task.episode_steps == 1000  # default 20 s
    q, v, tip, cart = task.obs_actor
    assert strip_lets(q.value) == t.PhysRead("qpos", ((0,), (1,)), t.Type("float", (2,)))
    assert strip_lets(v.value) == t.PhysRead("qvel", ((0,), (1,)), t.Type("float", (2,)))
    assert tip.size == 2 and isinstance(tip.value, t.Gather) and tip.value.indices == (0, 2)
    assert isinstance(tip.value.base, t.Let) and tip.value.base.name == "tip"
    assert strip_lets(tip.value.base) == t.PhysRead("site_xpos", ((0, 0), (0, 1), (0, 2)), t.Type("float", (3,)))
    assert cart.size == 1 and cart.value.type == t.FLOAT
    up = strip_lets(task.rewards[0].value)
    assert isinstance(up, t.Gather) and strip_lets(up.base) == t.PhysRead(
        "xmat", ((2, 2), (2, 5), (2, 8)), t.Type("float", (3,))
    )


def test_root_quantities_expand_to_phys_reads(robot: str) -> None:
    task = check(
        "",
        model=robot,
        body="""\
observe actor
    g = projected_gravity
    w = base_ang_vel
    lv = local_lin_vel
    gyro = sensor("imu_gyro")
    touch = sensor("foot_touch")
    vel = body_lin_vel("foot")
reward
    up 1 : base_pos.z
""",
    )
    root = task.model.root
    assert root is not None and (root.qpos_adr, root.dof_adr, root.body_id) == (0, 0, 1)
    g, w, lv, gyro, touch, vel = (o.value for o in task.obs_actor)
    vec3 = t.Type("float", (3,))
    quat = t.PhysRead("qpos", ((3,), (4,), (5,), (6,)), t.Type("float", (4,)))
    down = t.Const((0.0, 0.0, -1.0), vec3)
    assert strip_lets(g) == t.Apply("quat_rotate_inv", (quat, down), vec3)
    body_ang_vel = t.PhysRead("qvel", ((3,), (4,), (5,)), vec3)
    assert strip_lets(w) == t.Apply("quat_rotate", (quat, body_ang_vel), vec3)
    assert strip_lets(lv).func == "quat_rotate_inv"
    assert strip_lets(gyro) == t.PhysRead("sensordata", ((0,), (1,), (2,)), t.Type("float", (3,)))
    assert strip_lets(touch) == t.PhysRead("sensordata", ((6,),), t.FLOAT)  # dim-1 sensors are scalars
    arrays = {n.array for n in t.walk(vel) if isinstance(n, t.PhysRead)}
    assert arrays == {"cvel", "xpos", "subtree_com"}
    assert task.model.nsensordata == 7


def test_base_quantity_without_free_joint_is_an_error() -> None:
    out = errors("", body="observe actor\n    h = base_pos.z\nreward\n    alive 1 : 1\n")
    assert "'base_pos' needs a root free joint, but the model has no free root joint" in out


def test_swizzles_indices_slices_and_globs() -> None:
    task = check(
        "",
        model=HUMANOID,
        body="""\
observe actor
    xy = base_pos.xy
    hips_left = joint_pos["hip_*_left"]
    knee = joint_pos["knee_left"]
    tail = joint_pos[-2:]
    first = qpos[0]
    root = qpos["root"]
    lit = [1, 2, 3].zy
reward
    alive 1 : 1
""",
    )
    xy, hips, knee, tail, first, root, lit = task.obs_actor
    assert xy.value.indices == (0, 1)
    names = ["hip_x_left", "hip_z_left", "hip_y_left"]
    assert [task.actuators.names.count(n) for n in names] == [1, 1, 1]
    assert strip_lets(hips.value.base).elements[hips.value.indices[0]] == (16,)  # hip_x_left is qpos 16
    assert hips.size == 3
    assert knee.value.type == t.FLOAT
    assert tail.value.indices == (19, 20)
    assert first.value.type == t.FLOAT
    assert root.value.indices == tuple(range(7))  # the free joint's 7 qpos
    assert lit.value == t.Const((3.0, 2.0), t.Type("float", (2,)))  # constants fold


def _model_limits(path: str) -> list[tuple[str, float, float]]:
    """(name, lower, upper) of every hinge and slide joint, read from MuJoCo directly."""
    model = load_model_info(resolve_model_path(path, None)).model
    out = []
    for j in range(model.njnt):
        if int(model.jnt_type[j]) in (2, 3):  # slide, hinge
            lo, hi = model.jnt_range[j] if model.jnt_limited[j] else (-math.inf, math.inf)
            out.append((model.joint(j).name, float(lo), float(hi)))
    return out


def _known_values(e: t.Expr) -> tuple[float, ...]:
    """Values of a selection from a constant built-in (Gather of a Quantity holding a Const)."""
    if isinstance(e, t.Gather):
        base = strip_lets(e.base)
        assert isinstance(base, t.Const)
        return tuple(base.values[i] for i in e.indices)
    base = strip_lets(e)
    assert isinstance(base, t.Const)
    return base.values


@pytest.mark.parametrize("model", [CARTPOLE, HUMANOID], ids=["cartpole", "humanoid"])
def test_joint_limits_are_constants_shaped_like_joint_pos(model: str) -> None:
    task = check(
        "",
        model=model,
        body="""observe actor
    q = joint_pos
    lo = joint_lower
    hi = joint_upper
reward
    alive 1 : 1
""",
    )
    q, lo, hi = task.obs_actor
    limits = _model_limits(model)
    assert lo.value.type == hi.value.type == q.value.type == t.Type("float", (len(limits),))
    assert isinstance(lo.value, t.Quantity) and lo.value.labels == q.value.labels == tuple(n for n, _, _ in limits)
    assert strip_lets(lo.value) == t.Const(tuple(l for _, l, _ in limits), lo.value.type)
    assert strip_lets(hi.value) == t.Const(tuple(h for _, _, h in limits), hi.value.type)


def test_joint_limits_select_like_joint_pos() -> None:
    task = check(
        "",
        model=HUMANOID,
        body="""observe actor
    knees_lo = joint_lower["knee_*"]
    knee_hi = joint_upper["knee_left"]
    first = joint_lower[0]
    tail = joint_upper[-3:]
reward
    alive joint_upper["knee_left"] - joint_lower["knee_left"] : 1
""",
    )
    limits = {n: (lo, hi) for n, lo, hi in _model_limits(HUMANOID)}
    names = list(limits)
    knees_lo, knee_hi, first, tail = (o.value for o in task.obs_actor)
    assert knees_lo.type.shape == (2,) and _known_values(knees_lo) == (limits["knee_right"][0], limits["knee_left"][0])
    assert knee_hi.type == t.FLOAT and _known_values(knee_hi) == (limits["knee_left"][1],)
    assert first.type == t.FLOAT and _known_values(first) == (limits[names[0]][0],)
    assert _known_values(tail) == tuple(limits[n][1] for n in names[-3:])
    # a constant: allowed where only numbers and `level` are
    weight = task.rewards[0].weight
    assert isinstance(weight, t.Binary) and weight.type == t.FLOAT


def test_joint_limits_of_unlimited_joints_are_infinite() -> None:
    task = check(
        "",
        body="""observe actor
    q = joint_pos
reward
    over -1 : sum(max(joint_pos - joint_upper, 0) + max(joint_lower - joint_pos, 0))
    slider -1 : abs(joint_pos["slider"] - (joint_upper["slider"] + joint_lower["slider"]) / 2)
""",
    )
    (_, hinge_lo, hinge_hi), = [x for x in _model_limits(CARTPOLE) if x[0] == "hinge_1"]
    assert (hinge_lo, hinge_hi) == (-math.inf, math.inf)
    assert len(task.rewards) == 2
    # inf - inf has no value: an error naming the joint, with the fix
    out = errors(
        "",
        body="observe actor\n    q = joint_pos\nreward\n    mid 1 : sum((joint_upper + joint_lower) / 2)\n",
    )
    assert "t.ksim:5:18: error: this constant expression has no real value for joint 'hinge_1'" in out
    assert "note: joint_lower and joint_upper are -inf and inf for a joint without a range" in out
    out = errors("let w = 0 * joint_upper\n")
    assert "this constant expression has no real value for joint 'hinge_1'" in out and "'slider'" not in out
    # no infinity involved: the same error, without the note on joint ranges
    out = errors('let r = 1 / (joint_upper["slider"] - joint_upper["slider"])\n')
    assert "t.ksim:2:9: error: this constant expression has no real value\n" in out
    assert "note:" not in out


def test_vector_literals_concatenate() -> None:
    task = check(
        "let a = joint_pos[0]",
        body="observe actor\n    o = [cos(a), sin(a), joint_vel, 1]\nreward\n    alive 1 : 1\n",
    )
    (o,) = task.obs_actor
    assert isinstance(o.value, t.Concat) and o.size == 5


def test_function_keyword_arguments_are_normalized() -> None:
    task = check(
        "",
        body="""\
observe actor
    q = joint_pos
reward
    a 1 : sum(tolerance(joint_pos, hi=0.1, margin=0.5, sigmoid=linear))
    b 1 : tolerance(joint_pos[0], -1, 1)
    c 1 : exp_kernel(joint_vel, 0.25)
    d 1 : min(joint_pos)
    e 1 : max(joint_pos[0], 0)
""",
    )
    a = task.rewards[0].value
    assert isinstance(a, t.Apply) and a.func == "sum"
    tol = a.args[0]
    assert tol.func == "tolerance" and tol.mode == "linear" and tol.type.shape == (2,)
    assert [x.value for x in tol.args[1:]] == [0.0, 0.1, 0.5, 0.1]  # lo, hi, margin, value_at_margin
    b = task.rewards[1].value
    assert b.mode == "gaussian" and [x.value for x in b.args[1:]] == [-1.0, 1.0, 0.0, 0.1]
    assert task.rewards[2].value.type == t.FLOAT
    assert task.rewards[3].value.func == "reduce_min"
    assert task.rewards[4].value.func == "max"


def test_let_state_and_prev() -> None:
    task = check(
        """
        state a[2] = 0 -> where(joint_pos > 0, b + ctrl_dt, 0)
        state b[2] = uniform(0, 1) -> a
        let s = sum(a)
        """,
        body="""\
observe actor
    s = s
    d = joint_pos - prev(joint_pos)
reward
    r 1 : norm(prev(joint_pos) - joint_pos)
""",
    )
    a, b = task.states
    assert a.type == t.Type("float", (2,)) and a.init == t.Const(0.0, t.FLOAT)
    assert isinstance(b.init, t.Dist) and b.init.type.shape == (2,)  # one draw per element
    assert isinstance(b.update, t.StateRef) and b.update.name == "a"
    assert any(isinstance(n, t.StateRef) and n.name == "b" for n in t.walk(a.update))  # later state, in an update
    assert len(task.prev_slots) == 1  # prev(joint_pos) twice -> one slot
    assert [x.name for x in task.lets] == ["s"]


def test_reset_dist_broadcasts_inside_expressions() -> None:
    task = check(
        """
        reset
            joint_pos = default_joint_pos + uniform(-0.1, 0.1)
            qvel[1] = gaussian(1, 0.5)
        """,
        model=HUMANOID,
    )
    jpos, qvel = task.reset
    assert jpos.value.type.shape == (21,)
    dist = next(n for n in t.walk(jpos.value) if isinstance(n, t.Dist))
    assert dist.type.shape == (21,)
    assert qvel.index == (1,) and qvel.value.params[0].value == 1.0


def test_commands_and_curriculum_levels() -> None:
    task = check(
        """
        command vel resample every 2s zero_prob=0.25
            x uniform(-1, 1)
            yaw 0.5
        curriculum linear step=0.05
        """,
        body="""\
observe actor
    c = cmd.vel
    yaw = cmd.vel.yaw
reward
    track 1 : exp_kernel(joint_vel[0] - cmd.vel.x, 0.5 * level + 0.1)
""",
    )
    (vel,) = task.commands
    assert vel.resample_steps == 100 and vel.zero_prob == 0.25 and vel.size == 2
    assert task.obs_actor[1].value.indices == (1,)
    assert task.curriculum.to_dict() == {"kind": "linear", "step": 0.05, "every": 100}


def test_latency_in_steps_and_episode_in_steps() -> None:
    task = check(
        """
        physics dt=5ms ctrl_dt=20ms
        episode 300 steps
        actuators position kp=10
            latency 0..1 steps
        """,
    )
    assert task.episode_steps == 300 and task.physics.substeps == 4
    assert task.actuators.latency == pytest.approx((0.0, 0.02))
    assert task.actuators.default_pos == (0.0,) and task.actuators.kp == (10.0,)


def test_randomize_rows_by_object_names_and_indices() -> None:
    task = check(
        """
        randomize
            dof_damping["hip_*_left"] *= uniform(0.9, 1.1)
            jnt_range["knee_*"] *= 0.5 * level + 0.5
            geom_friction[1:3] = 0.8
        """,
        model=HUMANOID,
    )
    damping, jrange, friction = task.randomize
    assert damping.rows == (15, 16, 17) and damping.value.type.shape == (3,)
    assert jrange.rows == (7, 13) and jrange.field_shape == (22, 2) and jrange.value.type == t.FLOAT
    assert (friction.rows, friction.op, friction.value) == ((1, 2), "=", t.Const(0.8, t.FLOAT))


def test_event_writes_may_read_the_state(robot: str) -> None:
    task = check(
        """
        state pushes = 0 -> pushes + 1
        event push every 2s
            base_lin_vel.xy += 0.1 * pushes * [1, -1]
            base_ang_vel.z = 0
            joint_pos["knee"] = default_joint_pos["knee"]
        """,
        model=robot,
    )
    (push,) = task.events
    lin, ang, knee = push.writes
    assert push.every == t.Const(100.0, t.FLOAT)
    assert (lin.target, lin.index) == ("qvel", (0, 1))
    assert any(isinstance(n, t.StateRef) for n in t.walk(lin.value))
    assert (ang.target, ang.index, ang.value.type) == ("base_ang_vel", (2,), t.FLOAT)
    assert (knee.target, knee.index) == ("qpos", (8,))


def test_torque_and_ctrl_actuators(robot: str) -> None:
    task = check("actuators torque scale=2\n", model=robot)
    act = task.actuators
    assert (act.kind, act.scale, act.kp, act.default_pos) == ("torque", 2.0, (), ())
    assert act.joint_names == ("hip", "knee") and act.joint_qpos_adr == (7, 8) and act.joint_dof_adr == (6, 7)
    assert act.ctrl_range == ((-1.0, 1.0), (-1.0, 1.0))


# --------------------------------------------------------------------------- errors


def test_unknown_name_suggests() -> None:
    out = errors("", body="observe actor\n    q = joint_poss\nreward\n    alive 1 : 1\n")
    assert "t.ksim:3:9: error: unknown name 'joint_poss' (did you mean 'joint_pos'?)" in out
    out = errors("", body="observe actor\n    q = __import__\nreward\n    alive 1 : 1\n")
    assert "unknown name '__import__'" in out


def test_joint_name_typo_points_at_the_string() -> None:
    out = errors("", model=HUMANOID, body='observe actor\n    k = joint_pos["kne_left"]\nreward\n    alive 1 : 1\n')
    assert "t.ksim:3:19: error: no joint named 'kne_left' (did you mean 'knee_left'?)" in out
    assert '                      ^~~~~~~~~~' in out


def test_glob_matching_nothing_suggests_a_glob() -> None:
    out = errors("actuators position kp=50\n    kp[\"*_kne*\"] = 80\n", model=HUMANOID)
    assert "glob '*_kne*' matches no actuated joint (did you mean '*knee*'?)" in out


def test_vector_reward_message() -> None:
    out = errors("", body="observe actor\n    q = joint_pos\nreward\n    x 1 : joint_pos\n")
    assert "reward 'x' must be a scalar, got vector[2]; wrap it in sum(...) or norm(...)" in out


def test_shape_mismatch_names_both_shapes() -> None:
    out = errors("", model=HUMANOID, body="observe actor\n    q = joint_pos + base_pos\nreward\n    alive 1 : 1\n")
    assert "elementwise '+' needs equal lengths or a scalar, got vector[21] and vector[3]" in out


def test_swizzle_and_index_range_errors() -> None:
    out = errors("", body="observe actor\n    q = joint_pos.z\n    r = joint_pos[2]\nreward\n    alive 1 : 1\n")
    assert "'.z' needs a vector of at least 3 elements, got vector[2]" in out
    assert "index 2 is out of range for 'joint_pos' (vector[2])" in out


def test_all_independent_errors_are_reported() -> None:
    out = errors(
        "",
        body="observe actor\n    q = nope1\nreward\n    a 1 : nope2\nterminate\n    f : joint_pos[0]\n",
    )
    assert "unknown name 'nope1'" in out and "unknown name 'nope2'" in out
    assert "termination 'f' must be a condition (bool), got scalar" in out
    assert out.endswith("3 errors")


def test_let_used_before_definition() -> None:
    out = errors("let a = b + 1\nlet b = 2\n")
    assert "'b' is used before its `let` (line 3)" in out


def test_state_update_shape_must_match() -> None:
    out = errors("state s[3] = 0 -> joint_pos\n")
    assert "state 's' is vector[3] but its update is vector[2]" in out


def test_units_where_a_duration_is_due() -> None:
    assert "the episode length needs a unit: write 20s or 20 steps" in errors("episode 20\n")
    out = errors("", body="observe actor\n    q = joint_pos delay 0..20ms\nreward\n    alive 1 : 1\n")
    assert "delay is a count of control steps, not a time" in out
    out = errors("command c resample every 3\n    x uniform(-1, 1)\n")
    assert "resample every needs a unit: write 3s or 3 steps" in out


def test_distribution_outside_random_contexts() -> None:
    out = errors("", body="observe actor\n    q = joint_pos\nreward\n    a 1 : uniform(0, 1)\n")
    assert "a distribution is not allowed in reward 'a'" in out


def test_weights_and_reset_values_cannot_read_the_simulation() -> None:
    out = errors("", body="observe actor\n    q = joint_pos\nreward\n    a joint_pos[0] : 1\n")
    assert "the weight of reward 'a' may use only numbers and `level`; 'joint_pos' changes during an episode" in out
    out = errors("reset\n    joint_pos = action\n")
    assert "'action' is not available in reset" in out


def test_settings_are_validated() -> None:
    out = errors("train num_envs=8 lrr=1e-3\n")
    assert "unknown train setting 'lrr' (did you mean 'lr'?)" in out
    assert "note: valid train settings: num_envs, rollout," in out
    out = errors("physics dt=0.004\n")
    assert "physics setting 'dt' needs a unit: write 0.004s" in out
    out = errors("policy mlp dist=mixtur(3)\n")
    assert "policy setting 'dist' must be `normal` or `mixture(K)`" in out
    out = errors("engine mjxx\n")
    assert "unknown engine 'mjxx' (did you mean 'mjx'?)" in out


def test_randomize_fields_are_real_model_fields() -> None:
    out = errors("randomize\n    body_mas *= uniform(0.9, 1.1)\n")
    assert "'body_mas' is not an MjModel field (did you mean 'body_mass'?)" in out
    out = errors('randomize\n    body_mass["pole"] *= uniform(0.9, 1.1)\n')
    assert "no body named 'pole' (did you mean 'pole_1'?)" in out


def test_duplicate_statements_and_missing_required() -> None:
    out = errors('model "a.xml"\nmodel "b.xml"\n')
    assert "duplicate `model` statement; a task has at most one" in out
    source = Source("t.ksim", 'task t\nobserve actor\n    q = joint_pos\n')
    with pytest.raises(KsimError) as info:
        check_source(source, model_path=CARTPOLE)
    assert "the task has no reward" in str(info.value)


def test_missing_model_file_points_at_the_path(tmp_path: Path) -> None:
    task = tmp_path / "t.ksim"
    task.write_text('task t\nmodel "nowhere.xml"\n' + MINIMAL_BODY)
    with pytest.raises(KsimError) as info:
        check_file(str(task))
    assert f"{task}:2:7: error: model file 'nowhere.xml' not found" in str(info.value)


def test_model_relative_to_task_file_and_cache(tmp_path: Path) -> None:
    (tmp_path / "m.xml").write_text(Path(CARTPOLE).read_text())
    (tmp_path / "t.ksim").write_text('task t\nmodel "m.xml"\n' + MINIMAL_BODY)
    task = check_file(str(tmp_path / "t.ksim"))
    assert task.model.resolved_path == str(tmp_path / "m.xml") and task.model.path == "m.xml"
    path = resolve_model_path(HUMANOID, None)
    assert path.endswith("humanoid.xml")
    assert load_model_info(path) is load_model_info(path)


def test_checker_bugs_are_internal_errors() -> None:
    span = Span(1, 1, 1, 2)
    bogus = ast.RewardTerm("r", ast.Num(1.0, None, span), object(), span, span)  # type: ignore[arg-type]
    module = ast.Module(
        (
            ast.TaskStmt("t", None, span),
            ast.ObserveStmt(
                "actor", (ast.ObsItem("q", ast.Name("joint_pos", span), None, None, None, span, span),), span, span
            ),
            ast.RewardStmt((bogus,), span),
        ),
        "t.ksim",
    )
    with pytest.raises(InternalCompilerError):
        check_module(module, Source("t.ksim", "task t\n"), model_path=CARTPOLE)


# --------------------------------------------------------------------------- large inputs (issue 18)


def _let_chain(n: int, step: str, first: str = "joint_pos[0]") -> str:
    """`let a1 = FIRST` then `let a{i} = STEP` with `{p}` the previous name."""
    return f"let a1 = {first}\n" + "".join(f"let a{i} = {step.format(p=f'a{i - 1}')}\n" for i in range(2, n + 1))


def test_squaring_let_chain_checks_in_linear_time() -> None:
    # each let uses the previous one twice: exponential if any walk is not memoized (hangs)
    task = check(_let_chain(30, "{p} * {p}", first="2"))
    assert [d.name for d in task.lets][-1] == "a30"
    body = "observe actor\n    q = prev(a25)\nreward\n    alive 1 : 1\n    last 1 : a25\n"
    task = check(_let_chain(25, "{p} * {p} + {p}"), body=body)
    assert task.rewards[-1].name == "last"


@pytest.mark.parametrize("n", [500, 2000])
def test_long_let_chain_is_a_positioned_error_not_a_recursion_error(n: int) -> None:
    out = errors(_let_chain(n, "{p} + 1"), body=MINIMAL_BODY + f"    last 1 : a{n}\n")
    assert "error: expression nested too deeply (more than 100 levels, counting the lets it uses)" in out
    assert out.count("error:") == 1  # later lets and the reward using them stay silent
    assert "t.ksim:51:11:" in out  # `let a50 = a49 + 1`: the first definition past the limit


def test_long_let_chain_compiles_to_a_clean_exit_2(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    task = tmp_path / "chain.ksim"
    task.write_text(f'{HEADER}model "{CARTPOLE}"\n' + _let_chain(2000, "{p} + 1") + MINIMAL_BODY + "    last 1 : a2000\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    run = subprocess.run(
        [sys.executable, "-m", "ksimdsl.cli", "compile", str(task)], capture_output=True, text=True, env=env, timeout=600
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and "nested too deeply" in run.stderr


def test_flat_sums_and_products_of_hundreds_of_terms() -> None:
    terms = " + ".join(["1"] * 500)
    task = check(f"let s = {terms}\nlet p = " + " * ".join(["joint_pos[0]"] * 300) + "\n")
    assert task.lets[0].value == t.Const(500.0, t.FLOAT)
    mixed = "1" + "".join(f" {'-' if i % 3 else '+'} {i % 7 + 1}" for i in range(300))
    task = check(f"let m = {mixed}\nlet d = 1000" + " / 2 * 3" * 100 + "\n")
    assert task.lets[0].value.value == pytest.approx(eval(mixed))  # noqa: S307 - our own arithmetic
    assert task.lets[1].value.value == pytest.approx(1000 * 1.5**100)


def test_many_lets_check() -> None:
    task = check("".join(f"let a{i} = {i}\n" for i in range(5000)))
    assert len(task.lets) == 5000


def test_a_very_long_line_is_quoted_as_a_window() -> None:
    line = "let x = " + "1 + " * 2000 + "nope  # " + "x" * 1_000_000
    out = errors(line)
    assert "error: unknown name 'nope'" in out
    assert len(out) < 1000
    quoted, caret = out.splitlines()[1:3]
    assert quoted.startswith("    ...") and quoted.endswith("...") and len(quoted) <= 4 + 120
    assert quoted[caret.index("^") : caret.index("^") + 4] == "nope"


def test_constant_math_outside_its_domain_is_an_error_at_the_argument() -> None:
    for call, col, shown in (("log(-1)", 15, "-1"), ("log(0)", 15, "0"), ("sqrt(-4)", 16, "-4")):
        out = errors("", body=f"observe actor\n    q = joint_pos\nreward\n    a 1 : {call}\n")
        assert f"t.ksim:5:{col}: error: {call.split('(')[0]}() has no real value for {shown}" in out


def test_unit_mismatches_are_errors() -> None:
    assert "t.ksim:2:9: error: unit mismatch: cannot add a time and an angle" in errors("let x = 1s + 1deg")
    out = errors("", body="observe actor\n    q = joint_pos\nreward\n    a 1 : 5ms\n")
    assert "error: unit mismatch: reward 'a' is a time; a reward is a plain number" in out
    out = errors("", body="observe actor\n    q = joint_pos\nreward\n    a 3deg : 1\n")
    assert "error: unit mismatch: the weight of reward 'a' is an angle; a weight is a plain number" in out
    check("let x = joint_pos[0] + 10deg\nlet r = 20ms / 1ms\n", body=MINIMAL_BODY + "    r 1 : r + abs(x - 5deg)\n")
