"""Compile-time benchmarks: `compile_task` of a humanoid-size task (goal: < 2 s).

Op counts (sympy count_ops per phase, before and after CSE) are recorded in
the benchmark's extra_info, with and without CSE.

    pytest benchmarks/test_compile.py --benchmark-only
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ksimdsl.codegen import compile_checked
from ksimdsl.frontend.check import check_file

WALK = Path(__file__).resolve().parents[1] / "tasks" / "walk.ksim"


@pytest.fixture(scope="module")
def walk_task():
    return check_file(str(WALK))


@pytest.mark.parametrize("backend", ["jax", "numba"])
@pytest.mark.parametrize("cse", [True, False], ids=["cse", "no_cse"])
def test_compile_walk(benchmark, walk_task, backend, cse):
    compiled = benchmark.pedantic(
        compile_checked, args=(walk_task,), kwargs={"backend": backend, "cse": cse}, rounds=3, iterations=1
    )
    for phase, (before, after) in compiled.spec["ops"].items():
        benchmark.extra_info[f"ops_{phase}_before"] = before
        benchmark.extra_info[f"ops_{phase}_after"] = after
    benchmark.extra_info["source_lines"] = compiled.source.count("\n")
    assert compiled.spec["ops"]["step"][1] <= compiled.spec["ops"]["step"][0]


def test_check_and_compile_walk(benchmark):
    """The whole front-to-back pipeline, parse and check included."""

    def run():
        return compile_checked(check_file(str(WALK)), backend="jax")

    compiled = benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info["ops"] = compiled.spec["ops"]
