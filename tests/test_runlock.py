"""The run-directory lock: a second writer is refused with the holder's PID; a dead holder frees it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ksimdsl.errors import KsimError
from ksimdsl.runtime.training.runlock import LOCK_FILE, run_lock

_HOLD = """
import sys, time
from ksimdsl.runtime.training.runlock import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def _hold_in_child(run_dir: Path) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", _HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    return child


def test_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    child = _hold_in_child(tmp_path)
    try:
        with pytest.raises(KsimError) as err:
            with run_lock(tmp_path):
                pass
        assert f"in use by process {child.pid}" in str(err.value)
    finally:
        child.kill()
        child.wait()
    # kill -9 released the lock: the next run takes it, though the lock file is still there
    assert (tmp_path / LOCK_FILE).exists()
    with run_lock(tmp_path) as path:
        assert path.read_text().strip() == str(__import__("os").getpid())


def test_lock_is_released_after_the_body(tmp_path: Path) -> None:
    with run_lock(tmp_path):
        pass
    with run_lock(tmp_path):
        pass


def test_unlockable_directory_is_a_user_error(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(KsimError, match="cannot lock run directory"):
        with run_lock(missing):
            pass
