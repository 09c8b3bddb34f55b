"""The committed kernels/ files are exactly what the compiler generates for tasks/*.ksim."""

from __future__ import annotations

import difflib

import pytest

from ksimdsl.codegen.refresh import REPO_ROOT, expected_kernels, refresh, unavailable_tasks


def test_committed_kernels_are_fresh(update_goldens):
    if update_goldens:
        refresh()
    stale = []
    for path, source in expected_kernels().items():
        rel = path.relative_to(REPO_ROOT)
        if not path.exists():
            stale.append(f"{rel}: missing")
            continue
        committed = path.read_text()
        if committed != source:
            diff = difflib.unified_diff(
                committed.splitlines(), source.splitlines(), f"{rel} (committed)", f"{rel} (generated)", lineterm="", n=1
            )
            stale.append("\n".join(list(diff)[:40]))
    assert not stale, (
        "kernels/ is stale; regenerate with `python -m ksimdsl.codegen.refresh` "
        "(or `pytest --update-goldens`):\n" + "\n".join(stale)
    )
    skipped = unavailable_tasks()
    if skipped:  # the rest were checked above
        pytest.skip("not checked, their models are not installed: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))


def test_every_shipped_task_has_both_kernels():
    tasks = sorted(p.stem for p in (REPO_ROOT / "tasks").glob("*.ksim"))
    kernels = sorted((REPO_ROOT / "kernels").glob("*.py"))
    assert [k.name for k in kernels] == sorted(f"{t}_{b}.py" for t in tasks for b in ("jax", "numba"))
