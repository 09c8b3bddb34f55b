"""Numerical parity of the generated JAX and numba kernels (and against numpy references).

Both backends are fed the same random inputs (physics arrays, action, level,
mem, standard draws) and must agree within float32 tolerance on every output of
every phase. Small tasks exercise each built-in and function; the shipped tasks
exercise whole pipelines. `tolerance()` is also checked against a plain-numpy
re-implementation of dm_control's `rewards.tolerance` (written here from its
documented formulas; dm_control is not a dependency).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from ksimdsl.abi import TaskSpec
from ksimdsl.codegen import compile_checked
from ksimdsl.errors import KsimError, Source
from ksimdsl.frontend.check import check_file, check_source
from ksimdsl.runtime.engine.model import load_model
from ksimdsl.runtime.loader import load_module

ROOT = Path(__file__).resolve().parents[1]
CARTPOLE = ROOT / "tasks" / "models" / "cartpole.xml"
HUMANOID = "pkg:mujoco/mjx/test_data/humanoid/humanoid.xml"

RTOL = 2e-4
ATOL = 2e-5

# --------------------------------------------------------------------------- harness


def compile_both(task, cse: bool = True):
    """(jax module, numba module, spec) of a checked task."""
    jx = compile_checked(task, backend="jax", cse=cse)
    nb = compile_checked(task, backend="numba", cse=cse)
    name = f"{task.name}_{'cse' if cse else 'nocse'}"
    return load_module(jx.source, f"{name}:jax"), load_module(nb.source, f"{name}:numba"), nb.spec


def phys_shapes(task, spec) -> dict[str, tuple[int, ...]]:
    m = task.model
    c = len(spec["contact_queries"])
    scan_points = sum(int(np.prod(scan["grid"])) for scan in spec.get("height_scan", {}).get("scans", ()))
    return {
        "qpos": (m.nq,),
        "qvel": (m.nv,),
        "qacc": (m.nv,),
        "actuator_force": (m.nu,),
        "xpos": (m.nbody, 3),
        "xquat": (m.nbody, 4),
        "xmat": (m.nbody, 9),
        "cvel": (m.nbody, 6),
        "cinert": (m.nbody, 10),
        "subtree_com": (m.nbody, 3),
        "site_xpos": (m.nsite, 3),
        "sensordata": (m.nsensordata,),
        "time": (),
        "contact": (c,),
        "contact_force": (c,),
        "height_scan": (scan_points,),
    }


def field_shapes(task, spec) -> dict[str, tuple[int, ...]]:
    # the model the kernels were compiled against: composed when the task composes it (g1_walk, go1_walk)
    model = load_model(TaskSpec.from_dict(spec), task.model.resolved_path)
    return {f: tuple(getattr(model, f).shape) for f in spec["randomize_fields"]}


def random_mem(spec, E: int, rng: np.random.Generator) -> np.ndarray:
    """Plausible mem: random values, with flags, timers and delays of the right kind."""
    mem = rng.uniform(-1.0, 1.0, (E, spec["mem_size"]))
    for slot in spec["mem_layout"]:
        sl = slice(slot["offset"], slot["offset"] + slot["size"])
        name = slot["name"]
        if name == "first":
            mem[:, sl] = rng.integers(0, 2, (E, 1))
        elif name.endswith(".timer"):
            mem[:, sl] = rng.integers(1, 4, (E, 1))
        elif name.startswith("delay."):
            mem[:, sl] = rng.integers(0, 3, (E, 1))
    return mem


def random_inputs(task, spec, phase: str, E: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs of one phase by ABI name (batched over E envs, float64)."""
    rng = np.random.default_rng(seed)
    n, u = spec["rand"][phase]
    out: dict[str, np.ndarray] = {
        "level": rng.uniform(0, 1, E),
        "rand_n": rng.standard_normal((E, n)),
        "rand_u": rng.uniform(0, 1, (E, u)),
    }
    shapes = phys_shapes(task, spec)
    if phase == "reset":
        out["qpos"] = rng.uniform(-1, 1, (E,) + shapes["qpos"])
        out["qvel"] = rng.uniform(-1, 1, (E,) + shapes["qvel"])
        for f, shape in field_shapes(task, spec).items():
            out[f] = rng.uniform(0.1, 2.0, (E,) + shape)
        return out
    for name in spec["phys_inputs"]:
        if name in ("contact",):
            out[name] = rng.integers(0, 2, (E,) + shapes[name]).astype(np.float64)
        elif name == "time":
            out[name] = rng.uniform(0, 3, E)
        else:
            out[name] = rng.uniform(-1.5, 1.5, (E,) + shapes[name])
    out["action"] = rng.uniform(-1, 1, (E, spec["action_size"]))
    out["mem"] = random_mem(spec, E, rng)
    return out


def run_jax(module, spec, phase: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    f32 = {k: jnp.asarray(v, jnp.float32) for k, v in inputs.items()}
    if phase == "reset":
        fields = {f: f32[f] for f in spec["randomize_fields"]}
        out = jax.vmap(module.reset)(f32["qpos"], f32["qvel"], fields, f32["level"], f32["rand_n"], f32["rand_u"])
        flat = {"qpos": out["qpos"], "qvel": out["qvel"], "mem": out["mem"]}
        flat |= {f: out["fields"][f] for f in spec["randomize_fields"]}
        return {k: np.asarray(v) for k, v in flat.items()}
    phys = {k: f32[k] for k in spec["phys_inputs"]}
    fn = getattr(module, phase)
    out = jax.vmap(fn)(phys, f32["action"], f32["level"], f32["mem"], f32["rand_n"], f32["rand_u"])
    return {k: np.asarray(v) for k, v in out.items()}


def _out_shape(key: str, spec, inputs, E: int):
    sizes = {
        "actor": sum(o["size"] for o in spec["obs"]["actor"]),
        "critic": sum(o["size"] for o in spec["obs"]["critic"]),
        "reward_terms": len(spec["rewards"]),
        "reward_weights": len(spec["rewards"]),
        "terminations": len(spec["terminations"]),
        "metrics": len(spec.get("metrics", ())),
        "mem": spec["mem_size"],
    }
    if key in sizes:
        return (E, sizes[key])
    return inputs[key].shape  # qpos, qvel, fields: same shape as their input


def run_numba(module, spec, phase: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    E = inputs["level"].shape[0]
    args = []
    outputs: dict[str, np.ndarray] = {}
    for arg in spec["numba_args"][phase]:
        base = arg.rsplit("_", 1)[0]
        if base in inputs:
            args.append(np.ascontiguousarray(inputs[base]))
            continue
        key = base[: -len("_out")] if base.endswith("_out") else base
        dtype = np.bool_ if key == "terminations" else np.float64
        buf = np.full(_out_shape(key, spec, inputs, E), np.nan if dtype == np.float64 else False, dtype=dtype)
        outputs[key] = buf
        args.append(buf)
    getattr(module, phase)(*args)
    return outputs


def assert_parity(a: dict, b: dict, what: str) -> None:
    assert set(a) == set(b), f"{what}: outputs differ: {sorted(a)} vs {sorted(b)}"
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.shape == y.shape, f"{what}.{k}: shapes {x.shape} vs {y.shape}"
        if x.dtype == np.bool_ or y.dtype == np.bool_:
            np.testing.assert_array_equal(x, y, err_msg=f"{what}.{k}")
        else:
            np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL, equal_nan=True, err_msg=f"{what}.{k}")


def check_task_parity(task, E: int = 6, seed: int = 0, cse: bool = True, phases=("reset", "observe", "step")):
    """Run `phases` of both backends on the same random inputs; returns (spec, {phase: (inputs, jax out)})."""
    jx, nb, spec = compile_both(task, cse=cse)
    results = {}
    for phase in phases:
        inputs = random_inputs(task, spec, phase, E, seed)
        a = run_jax(jx, spec, phase, inputs)
        b = run_numba(nb, spec, phase, inputs)
        assert_parity(a, b, f"{task.name}.{phase}")
        results[phase] = (inputs, a)
    return spec, results


@pytest.fixture(autouse=True, scope="module")
def _kernel_cache(tmp_path_factory):
    """Keep numba's on-disk cache of generated modules out of the user's home."""
    old = os.environ.get("KSIMDSL_CACHE_DIR")
    os.environ["KSIMDSL_CACHE_DIR"] = str(tmp_path_factory.mktemp("ksimdsl_cache"))
    yield
    if old is None:
        os.environ.pop("KSIMDSL_CACHE_DIR", None)
    else:
        os.environ["KSIMDSL_CACHE_DIR"] = old


def task_source(body: str, model: str = str(CARTPOLE), name: str = "t", actuators: str = "ctrl") -> object:
    """Check a task made of `body` (observe/reward/... blocks) on `model`."""
    if "observe actor" not in body:
        body += "observe actor\n    time_obs = time\n"
    if "\nreward" not in "\n" + body:
        body += "reward\n    alive 1.0 : 1\n"
    text = f'task {name}\nmodel "{model}"\nactuators {actuators}\nepisode 10 steps\n{body}'
    return check_source(Source(f"/virtual/{name}.ksim", text))


# --------------------------------------------------------------------------- dm_control reference


def reference_sigmoid(x, value_at_1, sigmoid):
    if sigmoid == "gaussian":
        scale = np.sqrt(-2 * np.log(value_at_1))
        return np.exp(-0.5 * (x * scale) ** 2)
    if sigmoid == "hyperbolic":
        scale = np.arccosh(1 / value_at_1)
        return 1 / np.cosh(x * scale)
    if sigmoid == "long_tail":
        scale = np.sqrt(1 / value_at_1 - 1)
        return 1 / ((x * scale) ** 2 + 1)
    if sigmoid == "reciprocal":
        scale = 1 / value_at_1 - 1
        return 1 / (abs(x) * scale + 1)
    if sigmoid == "cosine":
        scale = np.arccos(2 * value_at_1 - 1) / np.pi
        scaled_x = x * scale
        with np.errstate(invalid="ignore"):
            cos_pi_scaled_x = np.cos(np.pi * scaled_x)
        return np.where(abs(scaled_x) < 1, (1 + cos_pi_scaled_x) / 2, 0.0)
    if sigmoid == "linear":
        scale = 1 - value_at_1
        scaled_x = x * scale
        return np.where(abs(scaled_x) < 1, 1 - scaled_x, 0.0)
    if sigmoid == "quadratic":
        scale = np.sqrt(1 - value_at_1)
        scaled_x = x * scale
        return np.where(abs(scaled_x) < 1, 1 - scaled_x**2, 0.0)
    if sigmoid == "tanh_squared":
        scale = np.arctanh(np.sqrt(1 - value_at_1))
        return 1 - np.tanh(x * scale) ** 2
    raise ValueError(sigmoid)


def reference_tolerance(x, bounds=(0.0, 0.0), margin=0.0, sigmoid="gaussian", value_at_margin=0.1):
    lower, upper = bounds
    in_bounds = np.logical_and(lower <= x, x <= upper)
    if margin == 0:
        return np.where(in_bounds, 1.0, 0.0)
    d = np.where(x < lower, lower - x, x - upper) / margin
    return np.where(in_bounds, 1.0, reference_sigmoid(d, value_at_margin, sigmoid))


SIGMOIDS = ["gaussian", "hyperbolic", "long_tail", "reciprocal", "cosine", "linear", "quadratic", "tanh_squared"]


def test_tolerance_all_sigmoids_match_dm_control_reference():
    # One task, one reward term per (sigmoid, parameters): x = qpos[0] (the cart).
    params = [(-0.2, 0.3, 0.5, 0.1), (0.0, 0.0, 1.0, 0.3), (0.1, 0.4, 0.0, 0.1), (-0.5, -0.1, 2.0, 0.7)]
    terms, expected = [], []
    for s in SIGMOIDS:
        for k, (lo, hi, margin, vam) in enumerate(params):
            terms.append(
                f"    {s}_{k} 1.0 : tolerance(qpos[0], lo={lo}, hi={hi}, margin={margin}, sigmoid={s},"
                f" value_at_margin={vam})"
            )
            expected.append((s, lo, hi, margin, vam))
    task = task_source("reward\n" + "\n".join(terms) + "\n")
    jx, nb, spec = compile_both(task)
    inputs = random_inputs(task, spec, "step", 64, seed=3)
    inputs["qpos"][:, 0] = np.linspace(-3.0, 3.0, 64)  # inside, at and beyond every margin
    a = run_jax(jx, spec, "step", inputs)
    b = run_numba(nb, spec, "step", inputs)
    assert_parity(a, b, "tolerance")
    x = inputs["qpos"][:, 0]
    for r, (s, lo, hi, margin, vam) in enumerate(expected):
        ref = reference_tolerance(x, (lo, hi), margin, s, vam)
        np.testing.assert_allclose(b["reward_terms"][:, r], ref, rtol=1e-6, atol=1e-7, err_msg=f"numba {s} {r}")
        np.testing.assert_allclose(a["reward_terms"][:, r], ref, rtol=1e-5, atol=1e-6, err_msg=f"jax {s} {r}")


def test_tolerance_elementwise_on_vectors():
    task = task_source("reward\n    t 1.0 : sum(tolerance(qvel, lo=-0.1, hi=0.2, margin=0.5, sigmoid=linear))\n")
    jx, nb, spec = compile_both(task)
    inputs = random_inputs(task, spec, "step", 16, seed=4)
    b = run_numba(nb, spec, "step", inputs)
    assert_parity(run_jax(jx, spec, "step", inputs), b, "tolerance vector")
    ref = reference_tolerance(inputs["qvel"], (-0.1, 0.2), 0.5, "linear", 0.1).sum(axis=1)
    np.testing.assert_allclose(b["reward_terms"][:, 0], ref, rtol=1e-6)


@pytest.mark.parametrize(
    "args",
    ["lo=1, hi=0", "margin=-1", "margin=1, value_at_margin=1", "margin=1, sigmoid=linear, value_at_margin=1"],
)
def test_tolerance_invalid_parameters_are_user_errors(args):
    with pytest.raises(KsimError) as err:
        compile_checked(task_source(f"reward\n    t 1.0 : tolerance(qpos[0], {args})\n"), backend="jax")
    text = str(err.value)
    assert text.startswith("/virtual/t.ksim:6:") and "tolerance" in text


# --------------------------------------------------------------------------- built-ins and functions


FUNCTION_TERMS = {
    "exp_kernel": "exp_kernel(qvel - [0.1, 0.2], 0.3)",
    "norm": "norm(qpos)",
    "norm2": "norm2(qvel)",
    "mean": "mean(qpos) + sum(qvel)",
    "elementwise": "abs(qpos[0]) + sqrt(abs(qvel[1])) + exp(qpos[1]) + log(abs(qvel[0]) + 1) + tanh(qpos[0])",
    "trig": "sin(qpos[0]) * cos(qvel[1])",
    "minmax": "min(qpos) + max(qvel) + sum(min(qpos, qvel)) + sum(max(qpos, 0.1))",
    "clip": "sum(clip(qvel, -0.3, 0.4))",
    "dot": "dot(qpos, qvel)",
    "where": "sum(where(qpos > 0, qvel, -qvel))",
    "logic": "where(qpos[0] > 0 and not qvel[0] > 0.5 or qpos[1] < -0.2, 1, 2)",
    "one_hot": "dot(one_hot(qpos[0] * 2 + 1, 3), [1, 2, 3])",
    "power": "qpos[0] ^ 2 + abs(qvel[0]) ^ 0.5 - 1 / (qpos[1] ^ 2 + 1)",
    "level_time": "level * time",
    "action": "norm2(action) * 2",
}


def test_every_function_agrees_across_backends():
    body = "reward\n" + "".join(f"    {n} 1.0 : {e}\n" for n, e in FUNCTION_TERMS.items())
    task = task_source(body)
    spec, results = check_task_parity(task, E=32, seed=5)
    inputs, out = results["step"]
    r = {n: out["reward_terms"][:, i] for i, n in enumerate(FUNCTION_TERMS)}
    q, v = inputs["qpos"], inputs["qvel"]
    # spot-check a few against numpy directly
    np.testing.assert_allclose(r["norm2"], (v**2).sum(1), rtol=1e-5)
    np.testing.assert_allclose(r["dot"], (q * v).sum(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r["exp_kernel"], np.exp(-((v - [0.1, 0.2]) ** 2).sum(1) / (2 * 0.09)), rtol=1e-5)
    np.testing.assert_allclose(r["one_hot"], _one_hot_ref(q[:, 0] * 2 + 1))
    np.testing.assert_allclose(r["level_time"], inputs["level"] * inputs["time"], rtol=1e-5)


def test_division_by_zero_is_inf_on_both_backends_never_an_exception():
    """`1 / max(x, 0)` at x <= 0: numba kernels use numpy's error model, so both give inf (issue 18)."""
    body = "reward\n    inv 1.0 : 1 / max(qpos[0], 0)\n    lg 1.0 : log(max(qpos[0], 0))\n"
    spec, results = check_task_parity(task_source(body), E=32, seed=7)
    inputs, out = results["step"]
    q0 = inputs["qpos"][:, 0]
    assert (q0 <= 0).any() and (q0 > 0).any()
    inv, lg = out["reward_terms"][:, 0], out["reward_terms"][:, 1]
    assert np.all(np.isposinf(inv[q0 <= 0])) and np.all(np.isneginf(lg[q0 <= 0]))
    assert np.all(np.isfinite(inv[q0 > 0]))


def _one_hot_ref(i):
    return sum((k + 1) * (np.abs(i - k) < 0.5) for k in range(3))


HUMANOID_QUANTITIES = [
    "base_pos",
    "base_quat",
    "base_lin_vel",
    "base_ang_vel",
    "local_lin_vel",
    "local_ang_vel",
    "base_lin_acc",
    "base_ang_acc",
    "projected_gravity",
    "joint_pos - default_joint_pos",
    "joint_vel",
    "joint_acc",
    "actuator_force",
    'body_pos("torso")',
    'body_quat("torso")',
    'body_lin_vel("torso")',
    'body_up("torso")',
    'body_forward("torso")',
    'contact(["foot1_left", "foot2_left"], "floor")',
    'contact_force(["foot1_right"], "floor")',
    "angle(projected_gravity, [0, 0, -1])",
    "quat_rotate(base_quat, [1, 0, 0])",
    "quat_rotate_inv(base_quat, base_lin_vel)",
    "cross(base_lin_vel, base_ang_vel)",
    "com_vel",
]


def test_builtin_quantities_agree_across_backends():
    body = "observe actor\n" + "".join(f"    q{i} = {q}\n" for i, q in enumerate(HUMANOID_QUANTITIES))
    task = task_source(body, model=HUMANOID, actuators="position kp=50")
    check_task_parity(task, E=4, seed=6, phases=("observe",))  # step computes the same observations


def _hinge_slide_limits(model_path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(qpos address, lower, upper) of every hinge and slide joint from MuJoCo; +-inf where not limited."""
    from ksimdsl.frontend.model_info import resolve_model_path

    m = mujoco.MjModel.from_xml_path(resolve_model_path(model_path, None))
    # ints: mujoco >= 3.17's enums no longer equal numpy integers (`enum == np.int32(3)` is False)
    hinge_slide = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))
    joints = [j for j in range(m.njnt) if int(m.jnt_type[j]) in hinge_slide]
    limited = m.jnt_limited[joints].astype(bool)
    lower = np.where(limited, m.jnt_range[joints, 0], -np.inf)
    upper = np.where(limited, m.jnt_range[joints, 1], np.inf)
    return m.jnt_qposadr[joints], lower, upper


@pytest.mark.parametrize("model", [str(ROOT / "tasks" / "models" / "walker.xml"), HUMANOID], ids=["walker", "humanoid"])
def test_joint_limits_equal_the_model_ranges_on_both_backends(model):
    qpos_adr, lower, upper = _hinge_slide_limits(model)
    n = len(lower)
    limited = np.isfinite(lower) & np.isfinite(upper)
    first = int(np.argmax(limited))  # the walker's first three joints (its root) have no range
    assert limited[first:].all()
    body = f"""
let mid = (joint_upper[{first}:] + joint_lower[{first}:]) / 2
let half = 0.9 * (joint_upper[{first}:] - joint_lower[{first}:]) / 2
observe actor
    lo = joint_lower
    hi = joint_upper
    last_hi = joint_upper[-1]
    beyond = max(abs(joint_pos[{first}:] - mid) - half, 0)
    over = max(joint_pos - joint_upper, 0)
"""
    task = task_source(body, model=model, actuators="position kp=50" if model == HUMANOID else "ctrl")
    _, results = check_task_parity(task, E=4, seed=11, phases=("observe",))
    inputs, out = results["observe"]
    actor = out["actor"]
    f32 = np.float32
    np.testing.assert_array_equal(actor[:, :n], np.broadcast_to(lower.astype(f32), (4, n)))
    np.testing.assert_array_equal(actor[:, n : 2 * n], np.broadcast_to(upper.astype(f32), (4, n)))
    np.testing.assert_array_equal(actor[:, 2 * n], np.full(4, upper[-1], f32))
    q = inputs["qpos"][:, qpos_adr]
    mid, half = (upper[first:] + lower[first:]) / 2, 0.9 * (upper[first:] - lower[first:]) / 2
    k = n - first
    beyond = np.maximum(np.abs(q[:, first:] - mid) - half, 0)
    np.testing.assert_allclose(actor[:, 2 * n + 1 : 2 * n + 1 + k], beyond, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(actor[:, 2 * n + 1 + k :], np.maximum(q - upper, 0), rtol=1e-5, atol=1e-6)


def _quat_to_mat(q):
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def test_root_frame_quantities_match_rotation_matrices():
    body = "observe actor\n    g = projected_gravity\n    w = base_ang_vel\n    v = local_lin_vel\n"
    task = task_source(body, model=HUMANOID, actuators="position kp=50")
    jx, nb, spec = compile_both(task)
    inputs = random_inputs(task, spec, "observe", 8, seed=7)
    q = inputs["qpos"][:, 3:7]
    inputs["qpos"][:, 3:7] = q / np.linalg.norm(q, axis=1, keepdims=True)
    out = run_numba(nb, spec, "observe", inputs)
    assert_parity(run_jax(jx, spec, "observe", inputs), out, "root frame")
    for e in range(8):
        r = _quat_to_mat(inputs["qpos"][e, 3:7])  # body -> world
        np.testing.assert_allclose(out["actor"][e, 0:3], r.T @ [0, 0, -1.0], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(out["actor"][e, 3:6], r @ inputs["qvel"][e, 3:6], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(out["actor"][e, 6:9], r.T @ inputs["qvel"][e, 0:3], rtol=1e-6, atol=1e-9)


def test_prev_state_commands_noise_delay_events():
    body = """
let up = qpos[1]
state hold = 0 -> where(up > 0, hold + ctrl_dt, 0)
state seen[2] = uniform(0, level) -> seen * 0.5 + qvel
command goal resample every 3 steps zero_prob=0.3
    x uniform(-1, 1)
    y gaussian(0.5)
observe actor
    pos  = qpos ~ gaussian(0.1) delay 0..2
    vel  = qvel ~ uniform(0.05) * bias gaussian(0.2)
    goal = cmd.goal
    last = prev(action) + prev(up > 0)
    hold = hold + sum(seen)
reward
    rate -0.1 : norm2(action - prev(action))
    hold 0.5 * level : hold
event kick every uniform(2 steps, 4 steps)
    qvel += uniform(-0.5, 0.5)
reset
    qpos += uniform(-0.1, 0.1)
    qvel = gaussian(0.01)
randomize
    body_mass *= uniform(0.8, 1.2)
    geom_friction *= uniform(0.5, 1.5)
"""
    task = task_source(body)
    spec, results = check_task_parity(task, E=16, seed=8)
    assert spec["writes_phys"]
    names = [s["name"] for s in spec["mem_layout"]]
    for want in ("state.hold", "state.seen", "prev.action", "cmd.goal", "cmd.goal.timer", "bias.vel", "delay.pos"):
        assert want in names
    # CSE on and off compute the same numbers.
    spec_off, results_off = check_task_parity(task, E=16, seed=8, cse=False, phases=("step",))
    assert_parity(results["step"][1], results_off["step"][1], "cse-off step")


def test_metrics_agree_across_backends_and_leave_everything_else_alone():
    """`metric` values are one more output of `step`: equal on both backends, equal to what they
    name, and the task's other outputs are exactly those of the task without the block."""
    body = (
        'let pole = joint_pos["hinge_1"]\n'
        "reward\n    upright 1.0 : (cos(pole) + 1) / 2\n    still -0.1 : norm2(joint_vel)\n"
        "terminate\n    fell : cos(pole) < 0.75\n"
    )
    metrics = (
        'metric\n    cart = joint_pos["slider"]\n    speed = norm(joint_vel)\n'
        "    up = cos(pole) > 0.9\n    same_as_upright = (cos(pole) + 1) / 2\n"
    )
    spec, with_metrics = check_task_parity(task_source(body + metrics, name="with_metrics"))
    plain_spec, without = check_task_parity(task_source(body, name="without_metrics"))
    assert [m["name"] for m in spec["metrics"]] == ["cart", "speed", "up", "same_as_upright"]
    assert "metrics" not in plain_spec and "metrics_EJ" not in plain_spec["numba_args"]["step"]
    inputs, out = with_metrics["step"]
    qpos, qvel = inputs["qpos"], inputs["qvel"]
    m = out["metrics"]
    np.testing.assert_allclose(m[:, 0], qpos[:, 0], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(m[:, 1], np.linalg.norm(qvel, axis=1), rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(m[:, 2], (np.cos(qpos[:, 1].astype(np.float32)) > 0.9).astype(np.float32))
    np.testing.assert_array_equal(m[:, 3], out["reward_terms"][:, 0])
    for phase in ("reset", "observe", "step"):
        a, b = with_metrics[phase][1], without[phase][1]
        assert set(a) - {"metrics"} == set(b), phase
        for key in b:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{phase}.{key}")


@pytest.mark.parametrize("task_file", sorted((ROOT / "tasks").glob("*.ksim")), ids=lambda p: p.stem)
def test_shipped_tasks_agree_across_backends(task_file):
    check_task_parity(check_file(str(task_file)), E=4, seed=9)


def _yaw(q):
    w, x, y, z = q
    return np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


@pytest.mark.parametrize("op", ["=", "+="])
def test_base_yaw_reset_sets_or_turns_heading_and_keeps_tilt(op):
    task = task_source(f"reset\n    base_yaw {op} uniform(-180deg, 180deg)\n", model=HUMANOID, actuators="position kp=50")
    jx, nb, spec = compile_both(task)
    inputs = random_inputs(task, spec, "reset", 16, seed=10)
    q = inputs["qpos"][:, 3:7]
    inputs["qpos"][:, 3:7] = q / np.linalg.norm(q, axis=1, keepdims=True)
    out = run_numba(nb, spec, "reset", inputs)
    assert_parity(run_jax(jx, spec, "reset", inputs), out, "base_yaw")
    drawn = -np.pi + 2 * np.pi * inputs["rand_u"][:, 0]
    for e in range(16):
        q0, q1 = inputs["qpos"][e, 3:7], out["qpos"][e, 3:7]
        want = drawn[e] if op == "=" else _yaw(q0) + drawn[e]
        assert np.isclose(np.angle(np.exp(1j * (_yaw(q1) - want))), 0, atol=1e-9)
        # rotating about world z keeps the up-axis tilt (the angle between body z and world z)
        tilt = lambda qq: 1 - 2 * (qq[1] ** 2 + qq[2] ** 2)  # noqa: E731
        assert np.isclose(tilt(q1), tilt(q0), atol=1e-9)
        assert np.isclose(np.linalg.norm(q1), 1, atol=1e-9)
