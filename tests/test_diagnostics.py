"""Data-driven diagnostics: every tests/diagnostics/*.test file, one test per `[case]`.

A case is a task source, optionally a `[model]` section, and an `[out]`
section with the exact text the user sees (`str(KsimError)`): each
`FILE:LINE:COL: error: MESSAGE`, the source line, the caret and any notes,
then `N errors` when there are several. The task is reported as `task.ksim`.
An empty `[out]` means the source must be accepted.

    [case reward_missing_colon]
    reward
        alive 1.0 1
    [out]
    task.ksim:2:15: error: expected ':' after reward weight, found number '1'
            alive 1.0 1
                      ^

Cases run through the parser (`parse_source`), or through the checker
(`ksimdsl.frontend.check.check_source(source, model_path=...)`) when the case
has a `[model]` section or the file name starts with `check`. The `[model]`
section is one path, relative to the repository root (e.g.
`tasks/models/cartpole.xml`); it is passed to the checker as an absolute path.

`pytest tests/test_diagnostics.py --update-goldens` rewrites every `[out]`.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest
from casefile import DataCase, read_case_file, update_section

from ksimdsl.errors import KsimError, Source
from ksimdsl.frontend.parse import parse_source

TESTS = Path(__file__).parent
REPO = TESTS.parent
DIAGNOSTICS = TESTS / "diagnostics"
TASK_NAME = "task.ksim"


def _all_cases() -> list[DataCase]:
    cases: list[DataCase] = []
    for path in sorted(DIAGNOSTICS.glob("*.test")):
        cases.extend(read_case_file(path).cases)
    return cases


CASES = _all_cases()


def _uses_checker(case: DataCase) -> bool:
    return case.section("model") is not None or case.path.name.startswith("check")


def _checker():
    """`check_source`, or skip the test while the checker is not written yet."""
    if importlib.util.find_spec("ksimdsl.frontend.check") is None:
        pytest.skip("ksimdsl.frontend.check does not exist yet")
    module = importlib.import_module("ksimdsl.frontend.check")
    check_source = getattr(module, "check_source", None)
    if check_source is None:
        pytest.skip("ksimdsl.frontend.check has no check_source yet")
    return check_source


def _run(case: DataCase) -> str:
    """What the user sees for this case: the formatted diagnostics, or '' if accepted."""
    source = Source(TASK_NAME, case.source + "\n")
    try:
        if _uses_checker(case):
            check_source = _checker()
            model = (case.section("model") or "").strip()
            check_source(source, model_path=str(REPO / model) if model else None)
        else:
            parse_source(source)
    except KsimError as err:
        return str(err)
    return ""


@pytest.mark.parametrize("case", CASES, ids=[f"{c.path.stem}:{c.name}" for c in CASES])
def test_diagnostics(case: DataCase, update_goldens: bool) -> None:
    actual = _run(case)
    if update_goldens:
        update_section(case.path, case.name, "out", actual)
        return
    expected = case.section("out")
    assert expected is not None, f"{case.path}:{case.line}: case {case.name} has no [out] section"
    assert actual.rstrip() == expected, f"{case.path}:{case.line}: diagnostics of case {case.name} differ"


def test_every_diagnostics_file_has_cases() -> None:
    files = sorted(DIAGNOSTICS.glob("*.test"))
    assert files, "no tests/diagnostics/*.test files"
    for path in files:
        assert read_case_file(path).cases, f"{path} has no [case] blocks"
