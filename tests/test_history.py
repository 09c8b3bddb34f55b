"""Observation `history K`: the last K values of an observation, newest first.

The checker's errors (with positions), the SPEC (sizes include K, the mem slots
are named), the kernels of both backends over several control steps (each older
slot is what was observed then: noisy for the actor, clean for the critic;
right after a reset every slot holds the reset-time value), and both engines
(the runtime keeps the mem that `observe` fills).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ksimdsl.abi import TaskSpec
from ksimdsl.codegen import compile_checked
from ksimdsl.errors import KsimError, Source
from ksimdsl.frontend import ast
from ksimdsl.frontend.check import check_source
from ksimdsl.frontend.parse import parse_source
from ksimdsl.lsp.symbols import Symbol, build_index, check_new_name
from ksimdsl.lsp.syntax import statement_exprs
from ksimdsl.runtime.engine.mjx.env import MjxEnv
from ksimdsl.runtime.engine.mujoco.env import MujocoEnv
from ksimdsl.runtime.loader import load_module
from tests.test_engine_parity import _noise_free_jax, _noise_free_numba
from tests.test_parity import CARTPOLE, assert_parity, compile_both, random_inputs, run_jax, run_numba

# cart-pole: qpos, qvel are [slider, hinge]
OBSERVE = """\
observe actor
    pos = qpos ~ gaussian(0.1) history 3
    t = time history 2
    v = qvel[0] ~ gaussian(0.05) bias gaussian(0.2) delay 0..1 history 4
    plain = qvel[1]
observe critic
    actor
    vel = qvel history 2
"""


def _source(observe: str, episode: str = "10 steps") -> str:
    return f'task t\nmodel "{CARTPOLE}"\nactuators ctrl\nepisode {episode}\n{observe}reward\n    alive 1.0 : 1\n'


def _check(observe: str = OBSERVE, episode: str = "10 steps"):
    return check_source(Source("/virtual/t.ksim", _source(observe, episode)))


def _error(line: str) -> str:
    with pytest.raises(KsimError) as info:
        _check(f"observe actor\n    {line}\n")
    return str(info.value)


# --------------------------------------------------------------------------- checker


@pytest.mark.parametrize(
    ("line", "message", "col", "width"),
    [
        ("q = qpos history 0", "history must be at least 1 (the current value alone), got 0", 22, 1),
        ("q = qpos history -2", "history must be at least 1 (the current value alone), got -2", 22, 2),
        ("q = qpos history 2.5", "history must be a whole number, got 2.5", 22, 3),
        ("q = qpos history 1s", "history is a count of control steps, not a time; write e.g. `history 3`", 22, 2),
        ("q = qpos history 20ms", "history is a count of control steps, not a time", 22, 4),
        ("q = qpos history 65", "history is at most 64 control steps, got 65", 22, 2),
        ("q = qpos history qvel", "history must be a constant number", 22, 4),
    ],
)
def test_history_errors_point_at_the_count(line, message, col, width):
    out = _error(line)
    assert f"t.ksim:6:{col}: error: {message}" in out
    caret = out.splitlines()[-1]
    assert caret.index("^") == len("    ") + col - 1 and caret.strip() == "^" + "~" * (width - 1)


def test_history_comes_last_and_needs_a_count():
    assert "t.ksim:6:24: error: unexpected 'delay'; expected end of line" in _error("q = qpos history 3 delay 0..1")
    assert "t.ksim:6:21: error: expected an expression, found end of line" in _error("q = qpos history")


def test_history_is_checked_on_both_groups_and_kept_by_the_actor_include():
    task = _check()
    actor = {o.name: o for o in task.obs_actor}
    assert (actor["pos"].history, actor["pos"].size, actor["pos"].obs_size) == (3, 2, 6)
    assert actor["v"].delay == (0, 1) and actor["v"].history == 4 and actor["plain"].history == 1
    critic = {o.name: o for o in task.obs_critic}
    assert {n: o.history for n, o in critic.items()} == {"pos": 3, "t": 2, "v": 4, "plain": 1, "vel": 2}
    assert critic["v"].noise is None and critic["v"].delay is None  # clean, but still a history
    # `K steps` is the same count; a name `history` stays a name
    task = _check("observe actor\n    history = qpos history 5 steps\n")
    assert [(o.name, o.history) for o in task.obs_actor] == [("history", 5)]
    # without `observe critic`, the critic sees the actor's observations clean, histories included
    assert [(o.name, o.history, o.noise) for o in task.obs_critic] == [("history", 5, None)]


def test_the_editor_knows_the_keyword_and_walks_the_count():
    module = parse_source(Source("/virtual/t.ksim", _source("observe actor\n    q = qpos history 3\n")))
    (stmt,) = [s for s in module.statements if isinstance(s, ast.ObserveStmt)]
    assert [type(e).__name__ for e in statement_exprs(stmt)] == ["Name", "Num"]  # the value, then the count
    index = build_index(module)
    let = Symbol("x", "let", stmt.span, stmt.span)
    assert check_new_name(index, let, "history") == "'history' is a keyword"


# --------------------------------------------------------------------------- SPEC


def test_spec_sizes_include_the_history_and_mem_slots_are_named():
    task = _check()
    jx = compile_checked(task, backend="jax")
    nb = compile_checked(task, backend="numba")
    assert jx.spec["obs"] == nb.spec["obs"]
    actor = [(o["name"], o["size"], o["offset"], o.get("history")) for o in nb.spec["obs"]["actor"]]
    assert actor == [("pos", 6, 0, 3), ("t", 2, 6, 2), ("v", 4, 8, 4), ("plain", 1, 12, None)]
    critic = [(o["name"], o["size"], o.get("history")) for o in nb.spec["obs"]["critic"]]
    assert critic == [("pos", 6, 3), ("t", 2, 2), ("v", 4, 4), ("plain", 1, None), ("vel", 4, 2)]
    spec = TaskSpec.from_dict(nb.spec)
    assert (spec.obs_actor_size, spec.obs_critic_size) == (13, 17)
    assert TaskSpec.from_dict(spec.to_dict()) == spec
    slots = {m["name"]: m["size"] for m in nb.spec["mem_layout"]}
    assert {k: v for k, v in slots.items() if k.startswith("history.")} == {
        "history.pos": 4,
        "history.t": 1,
        "history.v": 3,
        "history.critic.pos": 4,
        "history.critic.t": 1,
        "history.critic.v": 3,
        "history.critic.vel": 2,
    }
    # visible in the generated code; `observe` returns the memory with them filled
    assert "MEM_HISTORY_POS = " in nb.source and "mem[MEM_HISTORY_CRITIC_VEL + 1]" in nb.source
    assert nb.spec["numba_args"]["observe"][-3:] == ["actor_EO", "critic_EC", "mem_out_EM"]
    assert "the memory with the observation histories filled" in jx.source


def test_without_history_observe_leaves_the_memory_alone():
    nb = compile_checked(_check("observe actor\n    q = qpos ~ gaussian(0.1) history 1\n"), backend="numba")
    assert nb.spec["numba_args"]["observe"][-2:] == ["actor_EO", "critic_EC"]
    assert not any(m["name"].startswith("history.") for m in nb.spec["mem_layout"])
    assert "history" not in nb.spec["obs"]["actor"][0] and nb.spec["obs"]["actor"][0]["size"] == 2


@pytest.fixture(scope="module")
def compiled():
    """(task, jax module, numba module, spec) of OBSERVE, compiled once for the kernel tests."""
    task = _check()
    return (task, *compile_both(task))


def test_history_kernels_agree_on_random_memory(compiled):
    task, jx, nb, spec = compiled
    for phase in ("observe", "step"):
        inputs = random_inputs(task, spec, phase, 5, 3)
        assert_parity(run_jax(jx, spec, phase, inputs), run_numba(nb, spec, phase, inputs), phase)


# --------------------------------------------------------------------------- kernels over an episode


def _phys(spec, rng, E: int) -> dict[str, np.ndarray]:
    return {
        "qpos": rng.uniform(-1, 1, (E, 2)),
        "qvel": rng.uniform(-1, 1, (E, 2)),
        "time": rng.uniform(0, 3, E),
    }


def _episode(jx, nb, spec, task, *, steps: int, seed: int, E: int = 4):
    """reset, observe, `steps` x step on both backends (same inputs, each threading its own mem).

    Returns per call (observe first): the inputs and each backend's outputs.
    """
    rng = np.random.default_rng(seed)
    reset_in = random_inputs(task, spec, "reset", E, seed)
    mem = {"jax": run_jax(jx, spec, "reset", reset_in)["mem"], "numba": run_numba(nb, spec, "reset", reset_in)["mem"]}
    calls = []
    for k in range(steps + 1):
        phase = "observe" if k == 0 else "step"
        n, u = spec["rand"][phase]
        inputs = _phys(spec, rng, E) | {
            "action": rng.uniform(-1, 1, (E, spec["action_size"])),
            "level": np.zeros(E),
            "rand_n": rng.standard_normal((E, n)),
            "rand_u": rng.uniform(0, 1, (E, u)),
        }
        outs = {}
        for name, run, module in (("jax", run_jax, jx), ("numba", run_numba, nb)):
            outs[name] = run(module, spec, phase, inputs | {"mem": np.asarray(mem[name], np.float64)})
            mem[name] = outs[name]["mem"]
        calls.append((inputs, outs))
    return calls


def _parts(obs: np.ndarray, entry: dict) -> list[np.ndarray]:
    """The K values (newest first) of one observation entry in (E, O) observations."""
    k = entry.get("history", 1)
    block = obs[:, entry["offset"] : entry["offset"] + entry["size"]]
    n = entry["size"] // k
    return [block[:, i * n : (i + 1) * n] for i in range(k)]


def test_every_slot_holds_what_was_observed_then_and_both_backends_agree(compiled):
    task, jx, nb, spec = compiled
    calls = _episode(jx, nb, spec, task, steps=6, seed=1)
    for backend, tol in (("numba", 1e-12), ("jax", 1e-6)):
        for group in ("actor", "critic"):
            for entry in spec["obs"][group]:
                newest = [_parts(outs[backend][group], entry)[0] for _, outs in calls]
                for t, (_, outs) in enumerate(calls):
                    for k, part in enumerate(_parts(outs[backend][group], entry)):
                        # slot k: the value observed k calls ago; the reset-time value before that
                        np.testing.assert_allclose(part, newest[max(t - k, 0)], atol=tol, err_msg=f"{group}.{entry}")
    for t, (inputs, outs) in enumerate(calls):
        for key in ("actor", "critic", "mem"):
            np.testing.assert_allclose(outs["jax"][key], outs["numba"][key], rtol=2e-4, atol=2e-5, err_msg=f"{t}.{key}")
        actor = spec["obs"]["actor"][0]
        assert actor["name"] == "pos"  # noisy: the draws come first, rand_n[0:2]
        want = inputs["qpos"] + 0.1 * inputs["rand_n"][:, 0:2]
        np.testing.assert_allclose(_parts(outs["numba"]["actor"], actor)[0], want, atol=1e-12)
        vel = spec["obs"]["critic"][-1]  # clean: the physics values themselves
        np.testing.assert_allclose(_parts(outs["numba"]["critic"], vel)[0], inputs["qvel"], atol=1e-12)
        prev = calls[max(t - 1, 0)][0]["qvel"]
        np.testing.assert_allclose(_parts(outs["numba"]["critic"], vel)[1], prev, atol=1e-12)


def test_observe_after_a_reset_refills_every_slot_with_the_reset_time_value(compiled):
    """`observe` with the first-step flag set ignores what the slots held (the old episode's values)."""
    task, jx, nb, spec = compiled
    _, outs = _episode(jx, nb, spec, task, steps=3, seed=2)[-1]
    stale = outs["numba"]["mem"].copy()
    first = next(m["offset"] for m in spec["mem_layout"] if m["name"] == "first")
    assert (stale[:, first] == 0).all()
    stale[:, first] = 1.0
    n, u = spec["rand"]["observe"]
    rng = np.random.default_rng(9)
    obs_in = _phys(spec, rng, 4) | {
        "action": np.zeros((4, spec["action_size"])),
        "level": np.zeros(4),
        "mem": stale,
        "rand_n": rng.standard_normal((4, n)),
        "rand_u": rng.uniform(0, 1, (4, u)),
    }
    slots = {m["name"]: slice(m["offset"], m["offset"] + m["size"]) for m in spec["mem_layout"]}
    for run, module in ((run_jax, jx), (run_numba, nb)):
        out = run(module, spec, "observe", obs_in)
        for group in ("actor", "critic"):
            for entry in spec["obs"][group]:
                parts = _parts(out[group], entry)
                for part in parts[1:]:
                    np.testing.assert_array_equal(part, parts[0])
                if entry.get("history", 1) > 1:
                    name = f"history.{'critic.' if group == 'critic' else ''}{entry['name']}"
                    held = out["mem"][:, slots[name]]
                    np.testing.assert_allclose(held, np.tile(parts[0], entry["history"] - 1), rtol=1e-6)
                    assert not np.allclose(held, stale[:, slots[name]])


# --------------------------------------------------------------------------- both engines


@pytest.mark.slow
def test_both_engines_keep_the_filled_history_across_steps_and_auto_resets():
    task = _check(
        "observe actor\n    pos = qpos history 3\n    vel = qvel[1] history 2\n"
        "observe critic\n    vel = qvel history 2\n"
        "reset\n    joint_pos = [0.2, 0.1]\n    joint_vel = [0.5, -0.3]\n",  # a reset-time value that is not 0
        episode="3 steps",
    )
    jx = compile_checked(task, backend="jax")
    nb = compile_checked(task, backend="numba")
    spec_j, spec_n = TaskSpec.from_dict(jx.spec), TaskSpec.from_dict(nb.spec)
    kj, kn = load_module(jx.source, "hist:jax"), load_module(nb.source, "hist:numba")
    E = 3
    mjx_env = MjxEnv(spec_j, _noise_free_jax(kj), CARTPOLE, num_envs=E)
    c_env = MujocoEnv(spec_n, _noise_free_numba(kn, spec_n.numba_args), CARTPOLE, num_envs=E, threads=1)
    try:
        actions = np.random.default_rng(0).uniform(-1, 1, (5, E, spec_j.action_size)).astype(np.float32)
        state = jax.jit(mjx_env.reset)(jax.random.PRNGKey(0))
        c_env.reset_all()
        step = jax.jit(mjx_env.step)
        obs = {"mjx": [np.asarray(state.obs_actor_EO)], "mujoco": [c_env.obs_actor_EO.copy()]}
        dones = []
        for a in actions:
            state, out = step(state, jnp.asarray(a))
            c_out = c_env.step(a)
            obs["mjx"].append(np.asarray(state.obs_actor_EO))
            obs["mujoco"].append(c_env.obs_actor_EO.copy())
            np.testing.assert_array_equal(np.asarray(out.done_E), c_out.done_E)
            dones.append(c_out.done_E.copy())
    finally:
        c_env.close()
    assert all(d.all() for d in dones[2::3]) and not any(d.any() for d in dones[:2])  # 3-step episodes
    np.testing.assert_allclose(np.stack(obs["mjx"]), np.stack(obs["mujoco"]), atol=1e-4)
    pos, vel = spec_n.obs_actor
    for engine, seq in obs.items():
        for t, o in enumerate(seq):
            since_reset = t % 3  # the observation after an episode's last step is the next one's first
            for entry in (pos, vel):
                parts = _parts(o, {"offset": entry.offset, "size": entry.size, "history": entry.history})
                for k, part in enumerate(parts):
                    earlier = seq[t - min(k, since_reset)]
                    want = _parts(earlier, {"offset": entry.offset, "size": entry.size, "history": entry.history})[0]
                    np.testing.assert_allclose(part, want, atol=1e-6, err_msg=f"{engine} t={t} {entry.name}[{k}]")
