"""The middle end: sympy values with shapes (ir.vec), lowering (ir.lower) and CSE (ir.simplify).

Golden cases live in tests/golden/codegen/lower.test (`[case]` source = a whole
task file, `[ir]` = `format_task_ir` of its lowering); refresh them with
`pytest tests/test_ir.py --update-goldens`.
"""

from __future__ import annotations

from pathlib import Path

import sympy as sp

from ksimdsl.errors import Source
from ksimdsl.frontend.check import check_source
from ksimdsl.ir import vec
from ksimdsl.ir.lower import lower_task, quat_rotate, quat_rotate_inv
from ksimdsl.ir.program import format_task_ir
from ksimdsl.ir.simplify import count_ops, eliminate
from tests.casefile import read_case_file, update_section

GOLDEN = Path(__file__).parent / "golden" / "codegen" / "lower.test"
CARTPOLE = Path(__file__).resolve().parents[1] / "tasks" / "models" / "cartpole.xml"

# --------------------------------------------------------------------------- vec


def test_small_vectors_are_expanded_and_long_ones_packed():
    small = vec.from_array("qpos", [0, 1, 2])
    assert small.items == tuple(vec.array("qpos")[i] for i in range(3))
    packed = vec.from_array("qvel", range(6, 27))
    assert packed.packed and isinstance(packed.expr, vec.ArrSlice)
    assert vec.shape_of(packed.expr) == 21
    gathered = vec.from_array("qvel", [1, 3, 5, 7, 9])
    assert isinstance(gathered.expr, vec.ArrGather) and gathered.expr.indices == (1, 3, 5, 7, 9)


def test_shape_tracking_through_elementwise_ops_and_reductions():
    v = vec.from_array("qvel", range(6, 27)).expr
    lvl = sp.Symbol("level", real=True)
    assert vec.shape_of(sp.exp(-(v**2)) * lvl + 1) == 21
    assert vec.shape_of(vec.RSum(v**2)) == 0
    assert vec.shape_of(sp.Piecewise((v, v > 0), (0, True))) == 21
    assert vec.shape_of(vec.RSum(v) * v) == 21


def test_element_and_take_distribute_over_elementwise_expressions():
    v = vec.from_array("qvel", range(6, 27)).expr
    w = vec.from_array("action", range(21)).expr
    e = sp.exp(v) * w + vec.RSum(v)
    qvel, action = vec.array("qvel"), vec.array("action")
    assert vec.element(e, 2) == sp.exp(qvel[8]) * action[2] + vec.RSum(v)  # reductions stay whole
    t = vec.take(e, list(range(5, 12)))
    assert vec.shape_of(t) == 7
    assert t.has(vec.ArrSlice(sp.Symbol("qvel", real=True), 11, 18))


def test_reductions_fold_scalars_and_fills():
    v = vec.from_array("qvel", range(6, 27)).expr
    lvl = sp.Symbol("level", real=True)
    assert vec.RSum(3 * lvl * v) == 3 * lvl * vec.RSum(v)
    assert vec.RSum(vec.Fill(sp.Integer(2), 21)) == 42
    assert vec.RMax(vec.Fill(lvl, 21)) == lvl


def test_constant_arrays_fold_and_fill_disappears():
    a = vec.const_vector("LO", [float(i) for i in range(6)])
    b = vec.const_vector("HI", [2.0 * i for i in range(6)])
    mid = vec.elementwise(lambda x, y: (x + y) / 2, a, b)
    assert isinstance(mid.expr, vec.ConstArr) and mid.expr.values == tuple(1.5 * i for i in range(6))
    zeros = vec.const_vector("Z", [0.0] * 6)
    v = vec.from_array("qpos", range(6))
    assert vec.elementwise(lambda x, z: x - z, v, zeros).expr == v.expr


def test_select_concat_broadcast():
    v = vec.from_array("qvel", range(6, 27))
    assert vec.select(v, [0, 1]).items == (vec.array("qvel")[6], vec.array("qvel")[7])
    s = vec.scalar(sp.Symbol("level", real=True))
    c = vec.concat([s, vec.from_array("qpos", [0, 1]), v])
    assert c.size == 24 and isinstance(c.expr, vec.Concat)
    assert vec.element(c.expr, 0) == s.items[0]
    assert vec.element(c.expr, 3) == vec.array("qvel")[6]
    assert vec.broadcast(s, 8).expr == vec.Fill(s.items[0], 8)


def test_quaternion_helpers_invert_each_other():
    q = [sp.Symbol(n, real=True) for n in "wxyz"]
    v = [sp.Symbol(n, real=True) for n in ("a", "b", "c")]
    back = quat_rotate_inv(q, quat_rotate(q, v))
    # For a unit quaternion the composition is the identity.
    sub = {q[0]: sp.Rational(1, 2), q[1]: sp.Rational(1, 2), q[2]: sp.Rational(1, 2), q[3]: sp.Rational(1, 2)}
    assert [sp.simplify(b.subs(sub)) for b in back] == v


# --------------------------------------------------------------------------- CSE and op counts


def test_cse_shares_work_across_all_outputs_of_a_phase():
    q = vec.array("qpos")
    rot = quat_rotate([q[3], q[4], q[5], q[6]], [0, 0, -1])
    outputs = [rot[0] * 2, rot[1] + rot[2], sp.exp(rot[0])]
    elim = eliminate(outputs)
    assert elim.ops_after < elim.ops_before == count_ops(outputs)
    # Every temporary is used, and substituting them back gives the inputs.
    full = {}
    for sym, e in elim.temps:
        full[sym] = e.xreplace(full)
    assert [sp.expand(o.xreplace(full) - want) for o, want in zip(elim.outputs, outputs)] == [0, 0, 0]


def test_cse_off_keeps_outputs_and_counts():
    exprs = [sp.Symbol("a") * 2 + 1, sp.Symbol("a") * 2 + 3]
    elim = eliminate(exprs, cse=False)
    assert elim.temps == () and list(elim.outputs) == exprs and elim.ops_before == elim.ops_after


def test_cse_temporaries_take_quantity_names():
    q = vec.array("qpos")
    height = q[2] * 2 + q[1]
    elim = eliminate([sp.exp(height), height**2], names={height: "height"})
    assert sp.Symbol("height", real=True) in [s for s, _ in elim.temps]


def test_packed_temporaries_record_their_shape():
    v = vec.from_array("qvel", range(6, 27)).expr
    elim = eliminate([vec.RSum((2 * v) ** 2), vec.RMax(2 * v)])
    shapes = {str(s): n for s, n in elim.shapes.items()}
    assert 21 in shapes.values()


# --------------------------------------------------------------------------- lowering


def _task(body: str, model: str = str(CARTPOLE)):
    text = f'task t\nmodel "{model}"\nactuators ctrl\nepisode 10 steps\nobserve actor\n    x = qpos\n{body}'
    return check_source(Source("/virtual/t.ksim", text))


def test_zero_weight_terms_are_dropped():
    ir = lower_task(_task("reward\n    a 1.0 : qpos[0]\n    b 0 * level : qpos[1]\n    c 0.5 - 0.5 : 1\n"))
    assert ir.rewards == ("a",) and ir.dropped_rewards == ("b", "c")
    assert ir.phases["step"].output("reward_terms").size == 1


def test_random_draws_are_counted_per_phase():
    ir = lower_task(_task("reward\n    a 1.0 : 1\nreset\n    qpos += uniform(-0.1, 0.1)\n    qvel += gaussian(0.1)\n"))
    assert (ir.phases["reset"].rand_normal, ir.phases["reset"].rand_uniform) == (2, 2)
    assert (ir.phases["step"].rand_normal, ir.phases["step"].rand_uniform) == (0, 0)


def test_prev_reads_current_value_on_first_step():
    ir = lower_task(_task("reward\n    r 1.0 : prev(qpos[0])\n"))
    term = ir.phases["step"].output("reward_terms").segments[0].val.items[0]
    mem = vec.array("mem")
    first = ir.slot("first").offset
    prev = ir.slot("prev.0").offset if any(s.name == "prev.0" for s in ir.mem_slots) else None
    assert prev is not None
    assert term == sp.Piecewise((vec.array("qpos")[0], mem[first] > sp.Rational(1, 2)), (mem[prev], True))


def test_lowering_goldens(update_goldens):
    file = read_case_file(GOLDEN)
    assert file.cases, "no golden cases"
    failures = []
    for case in file.cases:
        task = check_source(Source(str(GOLDEN), case.source))
        got = format_task_ir(lower_task(task))
        if update_goldens:
            update_section(GOLDEN, case.name, "ir", got)
        elif case.section("ir") != got:
            failures.append(f"[case {case.name}] (line {case.line})\n--- expected\n{case.section('ir')}\n--- got\n{got}")
    assert not failures, "lowering changed; if intended run `pytest tests/test_ir.py --update-goldens`\n" + "\n".join(
        failures
    )


def test_let_definitions_become_named_variables_even_when_used_once():
    q = vec.array("qpos")
    up = sp.cos(q[1]) / 2 + sp.Rational(1, 2)
    centered = sp.exp(-(q[0] ** 2))
    reward = up * centered * 3
    elim = eliminate([reward, q[2]], lets={up: "up", centered: "centered"})
    temps = dict(elim.temps)
    assert temps[sp.Symbol("up", real=True)] == up
    assert temps[sp.Symbol("centered", real=True)] == centered
    assert elim.outputs[0] == 3 * sp.Symbol("up", real=True) * sp.Symbol("centered", real=True)
    # an unused let is not emitted
    elim = eliminate([q[2] + 1], lets={up: "up"})
    assert elim.temps == ()
