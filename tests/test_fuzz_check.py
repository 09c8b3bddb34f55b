"""Fuzzing the checker: whatever a task file says, check_source returns a CheckedTask or raises KsimError.

Inputs are token-level mutations of the shipped tasks (so most of them parse
and reach the checker) with insertions drawn from the language's own names:
built-ins, functions, model names, units, selections. An InternalCompilerError
or any other exception is a bug in ksimdsl and fails the test.
"""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ksimdsl.errors import KsimError, Source
from ksimdsl.frontend.check import check_source
from ksimdsl.frontend.parse import parse_source
from ksimdsl.frontend.typed import CheckedTask

TASKS = Path(__file__).resolve().parents[1] / "tasks"
SOURCES = {p.name: p.read_text() for p in sorted(TASKS.glob("*.ksim"))}
_TOKEN = re.compile(r'[A-Za-z_][A-Za-z0-9_]*|[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|"[^"\n]*"|#[^\n]*|\s+|.', re.S)

PIECES = [
    *"joint_pos joint_vel qpos qvel base_pos base_quat base_lin_vel local_ang_vel projected_gravity".split(),
    *"actuator_force default_joint_pos joint_lower joint_upper com_vel time ctrl_dt level action".split(),
    *"cmd.vel cmd.nope air_time height feet pole cart moving __import__".split(),
    'sensor("imu_gyro")',
    'sensor("nope")',
    'body_pos("torso")',
    'body_up("pole_1")',
    'site_pos("tip")',
    'contact(["foot_left", "foot_right"], "floor")',
    'contact_force("foot_left", "floor")',
    '["*_knee*"]',
    '["slider"]',
    '["slidr"]',
    "[0]",
    "[1:3]",
    "[:2]",
    "[99]",
    ".x",
    ".xy",
    ".xyz",
    ".w",
    "[0, 0, 1]",
    "[cos(level), sin(level), joint_vel]",
    *"norm norm2 sum mean abs sqrt exp log sin cos tanh min max clip where angle dot cross".split(),
    "exp_kernel(joint_vel, 0.25)",
    "tolerance(qpos[0], lo=0, hi=1, margin=0.5, sigmoid=cosine)",
    "tolerance(qpos[0], sigmoid=nope)",
    "quat_rotate(base_quat, [1, 0, 0])",
    "one_hot(2, 4)",
    "prev(action)",
    "prev(prev(level))",
    "uniform(0.5, 2.0)",
    "gaussian(3deg)",
    *"10ms 3deg 2s 5 steps 0 1 -1 0.5 1e9 1e-9".split(),
    *"+ - * / ^ < > == and or not ( ) , = += *= : ~ ..".split(),
    " ",
    "\n    ",
]

fuzz = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_checks_or_reports(name: str, text: str) -> None:
    """The property under test: a CheckedTask, or a KsimError whose diagnostics point into the text."""
    source = Source(str(TASKS / name), text)
    try:
        task = check_source(source)
    except KsimError as err:
        n_lines = text.count("\n") + 1
        for diagnostic in err.diagnostics:
            diagnostic.format()
            if diagnostic.span is not None:
                assert 1 <= diagnostic.span.line <= n_lines, diagnostic.format()
        return
    assert isinstance(task, CheckedTask)


@st.composite
def mutated_task(draw: st.DrawFn) -> tuple[str, str]:
    name = draw(st.sampled_from(sorted(SOURCES)))
    tokens = _TOKEN.findall(SOURCES[name])
    words = [i for i, t in enumerate(tokens) if t.strip() and not t.startswith("#")]
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.sampled_from(words))
        op = draw(st.sampled_from(["replace", "replace", "insert", "delete", "duplicate"]))
        if op == "replace":
            tokens[i] = draw(st.sampled_from(PIECES))
        elif op == "insert":
            tokens.insert(i, draw(st.sampled_from(PIECES)))
        elif op == "delete":
            tokens[i] = ""
        else:
            tokens.insert(i, tokens[i])
        words = [k for k, t in enumerate(tokens) if t.strip() and not t.startswith("#")]
    return name, "".join(tokens)


@fuzz
@given(mutated_task())
def test_checker_only_raises_user_errors(case: tuple[str, str]) -> None:
    assert_checks_or_reports(*case)


def test_mutations_reach_the_checker() -> None:
    """The mutated files start from tasks that check, and one-token edits mostly still parse."""
    for name, text in SOURCES.items():
        assert isinstance(check_source(Source(str(TASKS / name), text)), CheckedTask)
    # a replaced name parses but fails in the checker: the fuzzer exercises check, not only parse
    text = SOURCES["cartpole.ksim"].replace('joint_pos["slider"]', 'joint_pos["slidr"]')
    parse_source(Source("cartpole.ksim", text))
    try:
        check_source(Source(str(TASKS / "cartpole.ksim"), text))
    except KsimError as err:
        assert "did you mean 'slider'" in str(err)
    else:
        raise AssertionError("a misspelled joint name must be a checker error")
