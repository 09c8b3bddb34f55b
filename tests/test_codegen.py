"""The back end: printers, module assembly (header, SPEC, functions), loader, op counts.

Golden generated code lives in tests/golden/codegen/kernels.test (`[case]`
source = a whole task file; `[jax]` / `[numba]` = the generated module without
its SPEC literal). Refresh with `pytest tests/test_codegen.py --update-goldens`.
"""

from __future__ import annotations

import ast
import json
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp

from ksimdsl import __version__
from ksimdsl.abi import TaskSpec
from ksimdsl.codegen import compile_checked, compile_task
from ksimdsl.codegen.jax_printer import JaxPrinter
from ksimdsl.codegen.numba_printer import NumbaPrinter
from ksimdsl.codegen.printer import float_literal
from ksimdsl.errors import KsimError, Source
from ksimdsl.frontend.check import check_source
from ksimdsl.ir import vec
from ksimdsl.runtime.loader import load_module
from tests.casefile import read_case_file, update_section

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "codegen" / "kernels.test"
CARTPOLE = ROOT / "tasks" / "models" / "cartpole.xml"
HUMANOID = "pkg:mujoco/mjx/test_data/humanoid/humanoid.xml"


def _task(body: str, model: str = str(CARTPOLE), actuators: str = "ctrl"):
    if "observe actor" not in body:
        body = "observe actor\n    x = qpos\n" + body
    if "reward" not in body:
        body += "reward\n    alive 1.0 : 1\n"
    text = f'task t\nmodel "{model}"\nactuators {actuators}\nepisode 10 steps\n{body}'
    return check_source(Source("/virtual/t.ksim", text))


# --------------------------------------------------------------------------- printers


def test_float_literals_are_short_and_python_floats():
    assert float_literal(0.1 + 0.2) == "0.3"
    assert float_literal(2.0) == "2.0"
    assert float_literal(1e-20) == "1e-20"
    assert float_literal(1.2 - 0.8) == "0.4"
    assert float(float_literal(np.pi)) == pytest.approx(np.pi, rel=1e-14)
    assert float_literal(float("inf"), "jnp") == "jnp.inf" and float_literal(float("-inf")) == "-np.inf"
    assert float_literal(float("nan"), "jnp") == "jnp.nan"


def test_jax_printer_emits_traceable_array_code():
    q = vec.array("qpos")
    p = JaxPrinter()
    assert p.doprint(sp.Piecewise((q[0], q[1] > 0.5), (0, True))) == "jnp.where(qpos[1] > 0.5, qpos[0], 0.0)"
    assert p.doprint(sp.And(q[0] > 1, q[1] < 2)) in (
        "jnp.logical_and(qpos[0] > 1.0, qpos[1] < 2.0)",
        "jnp.logical_and(qpos[1] < 2.0, qpos[0] > 1.0)",
    )
    assert p.doprint(sp.Not(q[0] > 1)) == "qpos[0] <= 1.0"  # sympy folds the negation
    assert set(p.doprint(sp.sqrt(q[0]) + sp.Rational(1, 2) * q[1]).split(" + ")) == {"0.5*qpos[1]", "jnp.sqrt(qpos[0])"}
    assert p.doprint(q[0] ** 2) == "qpos[0]**2"
    assert p.doprint(sp.Max(q[0], q[1])) == "jnp.maximum(qpos[0], qpos[1])"


def test_numba_printer_uses_python_conditionals_for_scalars_only():
    q = vec.array("qpos")
    v = vec.from_array("qvel", range(6, 27)).expr
    p = NumbaPrinter()
    assert p.doprint(sp.Piecewise((q[0], q[1] > 0.5), (0, True))) == "(qpos[0] if qpos[1] > 0.5 else 0.0)"
    assert p.doprint(sp.Piecewise((v, v > 0), (0, True))) == "np.where(qvel[6:27] > 0.0, qvel[6:27], 0.0)"
    assert p.doprint(sp.Max(q[0], q[1])) == "max(qpos[0], qpos[1])"
    assert p.doprint(sp.Abs(v)) == "np.abs(qvel[6:27])"


def test_packed_norm2_prints_as_one_reduction():
    v = vec.from_array("qvel", range(0, 30))  # 30 joints
    n2 = vec.reduce_sum(vec.elementwise(lambda x: x**2, v)).expr
    text = JaxPrinter().doprint(n2)
    assert text == "jnp.sum(qvel[0:30]**2)"
    # ...and traces to a handful of primitives, not 30 squares and 29 adds.
    jaxpr = jax.make_jaxpr(lambda qvel: eval(text, {"jnp": jnp, "qvel": qvel}))(jnp.ones(30))
    assert len(jaxpr.jaxpr.eqns) <= 3, jaxpr


def test_generated_step_for_humanoid_joints_stays_vectorized():
    task = _task("reward\n    still -0.1 : norm2(joint_vel)\n", model=HUMANOID, actuators="position kp=50")
    compiled = compile_checked(task, backend="jax")
    assert "jnp.sum(qvel[6:27]**2)" in compiled.source
    assert "qvel[6]" not in compiled.source
    module = load_module(compiled.source, "still:jax")
    spec = compiled.spec
    phys = {"qpos": jnp.zeros(28), "qvel": jnp.arange(27.0)}
    phys = {k: phys[k] for k in spec["phys_inputs"]}
    mem = jnp.zeros(spec["mem_size"])
    fn = lambda phys: module.step(phys, jnp.zeros(21), 0.5, mem, jnp.zeros(0), jnp.zeros(0))  # noqa: E731
    out = fn(phys)
    np.testing.assert_allclose(out["reward_terms"][0], (np.arange(6.0, 27.0) ** 2).sum())
    eqns = jax.make_jaxpr(fn)(phys).jaxpr.eqns
    squares = [e for e in eqns if e.primitive.name in ("integer_pow", "square", "mul")]
    assert len(squares) <= 2, [e.primitive.name for e in eqns]


# --------------------------------------------------------------------------- module and SPEC


def test_spec_is_accepted_by_the_abi_and_consistent():
    body = """
state t = 0 -> t + ctrl_dt
observe actor
    pos = qpos ~ gaussian(0.1)
    last = prev(action)
observe critic
    actor
    t = t
reward
    a 1.0 : qpos[0]
    b 0 : qpos[1]
terminate
    far : abs(qpos[0]) > 1    success
reset
    qpos += uniform(-0.1, 0.1)
"""
    for backend in ("jax", "numba"):
        c = compile_checked(_task(body), backend=backend)
        spec = TaskSpec.from_dict(c.spec)
        assert spec.obs_actor_size == 3 and spec.obs_critic_size == 4
        assert spec.rewards == ("a",) and c.spec["dropped_rewards"] == ["b"]
        assert spec.terminations == ("far",) and spec.success == (True,)
        assert spec.mem_size == sum(m["size"] for m in spec.mem_layout)
        assert spec.rand["observe"] == (2, 0) and spec.rand["reset"] == (0, 2)
        assert (backend == "numba") == bool(spec.numba_args)
        for phase, (before, after) in c.spec["ops"].items():
            assert after <= before, phase


def test_header_names_version_source_backend_and_op_counts():
    c = compile_task(str(ROOT / "tasks" / "cartpole.ksim"), backend="numba")
    head = c.source.splitlines()[:3]
    assert head[0].startswith(f"# Generated by ksimdsl {__version__} from ") and head[0].endswith("do not edit.")
    assert head[1] == "# backend: numba"
    ops = c.spec["ops"]
    assert f"step {ops['step'][0]} -> {ops['step'][1]}" in head[2]
    assert '@njit(cache=True, nogil=True, error_model="numpy")' in c.source and "for e in range(level_E.shape[0]):" in c.source


def test_cse_can_be_turned_off():
    task = _task("reward\n    a 1.0 : exp(cos(qpos[1])) + cos(qpos[1])\n    b 1.0 : cos(qpos[1])^2\n")
    on = compile_checked(task, backend="jax")
    off = compile_checked(task, backend="jax", cse=False)
    assert "x0 = jnp.cos(qpos[1])" in on.source
    assert "x0" not in off.source and off.source.count("jnp.cos(qpos[1])") >= 3
    assert off.spec["ops"]["step"][0] == off.spec["ops"]["step"][1] == on.spec["ops"]["step"][0]
    assert on.spec["ops"]["step"][1] < on.spec["ops"]["step"][0]


def test_let_names_survive_into_generated_code():
    task = _task("let lean = sin(qpos[1]) + qpos[0]\nreward\n    a 1.0 : lean^2\n    b 1.0 : exp(lean)\n")
    src = compile_checked(task, backend="jax").source
    assert "lean = jnp.sin(qpos[1]) + qpos[0]" in src or "lean = qpos[0] + jnp.sin(qpos[1])" in src
    assert "reward_a = lean**2" in src and "reward_b = jnp.exp(lean)" in src


WALKER = ROOT / "tasks" / "models" / "walker.xml"  # rootz, rootx, rooty have no range


def _statements(source: str) -> list[str]:
    """The source's statements, each on one line (generated code wraps long ones inside brackets)."""
    out: list[str] = []
    depth = 0
    for line in source.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if depth:
            out[-1] += " " + line.strip()
        else:
            out.append(line)
        depth += sum(line.count(c) for c in "([{") - sum(line.count(c) for c in ")]}")
    return [s.replace("( ", "(").replace("[ ", "[").replace(" )", ")").replace(" ]", "]") for s in out]


def test_joint_limits_fold_and_infinite_limits_print_as_array_constants():
    body = """
let beyond = max(abs(joint_pos - (joint_upper + joint_lower) / 2) - 0.9 * (joint_upper - joint_lower) / 2, 0)
observe actor
    lo = joint_lower
    hi = joint_upper[0:2]
reward
    soft -1.0 : sum(beyond[3:])
    hard -1.0 : sum(max(joint_pos - joint_upper, 0))
"""
    text = f'task t\nmodel "{WALKER}"\nactuators ctrl\nepisode 10 steps\n{body}'
    with pytest.raises(KsimError, match="no real value for joints 'rootz', 'rootx', 'rooty'"):
        check_source(Source("/virtual/t.ksim", text))
    # the midpoint and half-width are computed only for the limited joints
    text = text.replace("(joint_upper + joint_lower) / 2", "(joint_upper[3:] + joint_lower[3:]) / 2")
    text = text.replace("(joint_upper - joint_lower) / 2", "(joint_upper[3:] - joint_lower[3:]) / 2")
    text = text.replace("abs(joint_pos -", "abs(joint_pos[3:] -").replace("beyond[3:]", "beyond")
    task = check_source(Source("/virtual/t.ksim", text))
    for backend, arr in (("jax", "jnp"), ("numba", "np")):
        c = compile_checked(task, backend=backend)
        consts = {line.split(" = ")[0]: line for line in _statements(c.source) if f" = {arr}.array(" in line}
        assert f"[-{arr}.inf, -{arr}.inf, -{arr}.inf, " in consts["JOINT_LOWER"]
        assert f"[{arr}.inf, {arr}.inf, {arr}.inf, " in consts["JOINT_UPPER"]
        assert "inf," not in consts["JOINT_LOWER"].replace(f"{arr}.inf,", "")
        # (upper + lower) / 2 and 0.9 * (upper - lower) / 2 are folded: two constant arrays, no arithmetic on limits
        beyond = next(line for line in _statements(c.source) if line.strip().startswith("beyond = "))
        assert "JOINT_" not in beyond and beyond.count("CONST") == 2, beyond
        json.dumps(c.spec, allow_nan=False)  # SPEC stays plain JSON
        module = load_module(c.source, f"limits:{backend}")
        lower = np.asarray(module.JOINT_LOWER)
        assert np.isneginf(lower[:3]).all() and np.isfinite(lower[3:]).all()


def test_function_of_constants_without_a_real_value_is_a_user_error():
    task = _task("observe actor\n    s = sin(joint_upper)\n", model=str(WALKER))
    with pytest.raises(KsimError, match=r"t.ksim:6:9: error: sin\(\) has no real value for these constants") as err:
        compile_checked(task, backend="jax")
    assert "note: joint_lower and joint_upper are -inf and inf for a joint without a range" in str(err.value)
    # a small vector (sympy folds it inline) too
    task = _task("observe actor\n    s = sqrt(joint_lower[0:2])\n", model=str(WALKER))
    with pytest.raises(KsimError, match=r"sqrt\(\) has no real value"):
        compile_checked(task, backend="numba")


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend"):
        compile_checked(_task(""), backend="torch")


# --------------------------------------------------------------------------- shared sub-expressions


@pytest.mark.parametrize(
    "rule, n, x0, step",
    [
        # as deep as the checker's nesting limit allows this recurrence (3 levels a let)
        ("a{p} * a{p} + a{p}", 33, 0.01, lambda a: a * a + a),
        ("a{p} ^ a{p}", 40, 0.3, lambda a: a**a),
    ],
)
def test_let_chains_sharing_sub_expressions_compile_in_linear_time(rule, n, x0, step):
    # As a tree, a_n has about 2^n nodes: any walk that does not visit a shared node once never ends.
    lets = "let a1 = qpos[0]\n" + "".join(f"let a{i} = {rule.format(p=i - 1)}\n" for i in range(2, n + 1))
    task = _task(f"{lets}reward\n    chain 1.0 : a{n}\n")
    compiled = compile_checked(task, backend="jax")
    assert f"a{n} = " in compiled.source and compiled.spec["ops"]["step"][1] < 10 * n
    module = load_module(compiled.source, f"chain{n}:jax")
    spec = compiled.spec
    phys = {"qpos": jnp.array([x0, 0.0]), "qvel": jnp.zeros(2)}
    phys = {k: phys[k] for k in spec["phys_inputs"]}
    out = module.step(phys, jnp.zeros(1), 0.0, jnp.zeros(spec["mem_size"]), jnp.zeros(0), jnp.zeros(0))
    want = x0
    for _ in range(n - 1):
        want = step(want)
    np.testing.assert_allclose(float(out["reward_terms"][0]), want, rtol=1e-4)


@pytest.mark.parametrize("qpos, want_any, want_all", [([0.5, 0.2], 1.0, 1.0), ([0.5, -0.2], 1.0, 0.0), ([-0.5, -0.2], 0.0, 0.0)])
def test_any_and_all_reduce_booleans(qpos, want_any, want_all):
    task = _task("reward\n    some 1.0 : any(qpos > 0)\n    every 1.0 : all(qpos > 0)\n")
    compiled = compile_checked(task, backend="jax")
    compile_checked(task, backend="numba")  # both printers know the reductions
    module = load_module(compiled.source, "anyall:jax")
    spec = compiled.spec
    phys = {k: {"qpos": jnp.array(qpos), "qvel": jnp.zeros(2)}[k] for k in spec["phys_inputs"]}
    out = module.step(phys, jnp.zeros(1), 0.0, jnp.zeros(spec["mem_size"]), jnp.zeros(0), jnp.zeros(0))
    np.testing.assert_allclose(np.asarray(out["reward_terms"]), [want_any, want_all])


# --------------------------------------------------------------------------- loader


def test_loaded_jax_module_shows_generated_lines_in_tracebacks():
    src = "def step():\n    value = 1\n    raise ValueError('boom from generated code')\n"
    module = load_module(src, "demo:jax")
    with pytest.raises(ValueError) as err:
        module.step()
    text = "".join(traceback.format_exception(err.value))
    assert '<ksimdsl:demo:jax>", line 3' in text
    assert "raise ValueError('boom from generated code')" in text


def test_numba_modules_are_file_backed_for_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KSIMDSL_CACHE_DIR", str(tmp_path))
    c = compile_task(str(ROOT / "tasks" / "cartpole.ksim"), backend="numba")
    module = load_module(c.source, "cartpole:numba")
    assert Path(module.__file__).parent == tmp_path / "kernels"
    assert Path(module.__file__).read_text() == c.source
    assert module.SPEC == c.spec


# --------------------------------------------------------------------------- goldens


def _strip_spec(source: str) -> str:
    """The module without its SPEC literal (that is checked through the ABI instead)."""
    out, skipping = [], False
    for line in source.splitlines():
        if line.startswith("SPEC = "):
            skipping = True
            out.append("SPEC = ...")
            continue
        if skipping and line.startswith(" "):
            continue
        skipping = False
        out.append(line)
    return "\n".join(out)


def test_generated_code_goldens(update_goldens, monkeypatch):
    monkeypatch.chdir(ROOT)  # headers name the task file relative to the working directory
    file = read_case_file(GOLDEN)
    assert file.cases
    failures = []
    for case in file.cases:
        task = check_source(Source(str(GOLDEN.relative_to(ROOT)), case.source))
        for backend in ("jax", "numba"):
            got = _strip_spec(compile_checked(task, backend=backend).source)
            if update_goldens:
                update_section(GOLDEN, case.name, backend, got)
            elif case.section(backend) != got:
                failures.append(f"[case {case.name}] [{backend}]\n--- expected\n{case.section(backend)}\n--- got\n{got}")
    assert not failures, "generated code changed; if intended run `pytest tests/test_codegen.py --update-goldens`\n" + (
        "\n".join(failures)
    )


# --------------------------------------------------------------------------- readability


def test_generated_lines_are_wrapped_without_changing_the_code(monkeypatch):
    from ksimdsl.codegen import layout

    c = compile_task(str(ROOT / "tasks" / "walk.ksim"), backend="numba")
    assert max(len(line) for line in c.source.splitlines()) <= layout.WIDTH
    monkeypatch.setattr(layout, "WIDTH", 10**6)
    unwrapped = compile_task(str(ROOT / "tasks" / "walk.ksim"), backend="numba").source
    assert ast.dump(ast.parse(c.source)) == ast.dump(ast.parse(unwrapped))


def test_mem_slots_draws_and_task_lines_are_named_in_the_code():
    for backend in ("jax", "numba"):
        c = compile_task(str(ROOT / "tasks" / "walk.ksim"), backend=backend)
        lines = c.source.splitlines()
        delay = next(m for m in c.spec["mem_layout"] if m["name"] == "delay.gravity")
        assert f"MEM_DELAY_GRAVITY = {delay['offset']}  # delay.gravity, 1 float; walk.ksim:53  gravity" in c.source
        assert "mem[MEM_DELAY_GRAVITY] < 0.5" in c.source and f"mem[{delay['offset']}]" not in c.source
        stripped = [line.strip() for line in lines]
        assert "#   rand_u[21]      walk.ksim:108  base_yaw   = uniform(-180deg, 180deg)" in stripped
        assert "# walk.ksim:75  track_lin    1.5      : exp_kernel(local_lin_vel.xy - cmd.vel.xy, 0.35)" in stripped
        assert "# walk.ksim:69  (joint_upper + joint_lower) / 2" in lines  # above the folded constant
        assert "CONST_2 =" not in c.source.replace("BEYOND_LIMITS_CONST_2 =", "")
        # the code starts near the top; SPEC is the last statement, a literal
        tree = ast.parse(c.source)
        assert isinstance(tree.body[-1], ast.Assign) and tree.body[-1].targets[0].id == "SPEC"
        assert ast.literal_eval(tree.body[-1].value) == c.spec
        assert next(i for i, line in enumerate(lines) if line.startswith("def ")) < 80


def test_task_text_in_comments_is_escaped():
    task = _task("reward\n    a 1.0 : qpos[0]   # caf\u00e9 \u2192 import os\n")
    for backend in ("jax", "numba"):
        source = compile_checked(task, backend=backend).source
        assert source.isascii()
        assert "# t.ksim:8  a 1.0 : qpos[0]   # caf\\xe9 \\u2192 import os" in source
        imports = [n for n in ast.parse(source).body if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert all(a.name in ("jax.numpy", "numpy", "njit") for n in imports for a in n.names)
