"""Shared pytest configuration for the ksimdsl test suite.

Environment, set before any test module imports jax, numba or mujoco (and
inherited by the `ksimdsl` subprocesses the CLI tests start):

* `JAX_PLATFORMS=cpu` and `MUJOCO_GL=egl` unless the caller chose otherwise;
* one persistent JAX compilation cache for the whole session (every program is
  cached, however fast it compiled), so the identical training and environment
  programs that several test files and CLI subprocesses build compile once;
* `NUMBA_CACHE_DIR` and `KSIMDSL_CACHE_DIR` (file-backed generated numba
  modules) in the same writable place, so tests never write into the source
  tree or the user's home.

The caches live in a temporary directory removed at the end of the session;
set `KSIMDSL_TEST_CACHE_DIR` to keep them between sessions (CI can cache it).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

_KEEP_CACHE = bool(os.environ.get("KSIMDSL_TEST_CACHE_DIR"))
CACHE_ROOT = Path(os.environ.get("KSIMDSL_TEST_CACHE_DIR") or tempfile.mkdtemp(prefix="ksimdsl-test-cache-"))

_ENV_DEFAULTS = {
    "JAX_PLATFORMS": "cpu",
    "MUJOCO_GL": "egl",
}
_CACHE_ENV = {
    "JAX_COMPILATION_CACHE_DIR": str(CACHE_ROOT / "jax"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    "NUMBA_CACHE_DIR": str(CACHE_ROOT / "numba"),
    "KSIMDSL_CACHE_DIR": str(CACHE_ROOT / "ksimdsl"),
}

for _name, _value in _ENV_DEFAULTS.items():
    os.environ.setdefault(_name, _value)
os.environ.update(_CACHE_ENV)

if "jax" in sys.modules:  # a plugin imported jax before this file: its config already read the environment
    import jax

    jax.config.update("jax_compilation_cache_dir", _CACHE_ENV["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens",
        action="store_true",
        default=False,
        help="rewrite the expected outputs of data-driven golden tests instead of comparing",
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    if not _KEEP_CACHE:
        shutil.rmtree(CACHE_ROOT, ignore_errors=True)


@pytest.fixture
def update_goldens(request: pytest.FixtureRequest) -> bool:
    """True when the run should rewrite golden outputs (`pytest --update-goldens`)."""
    return bool(request.config.getoption("--update-goldens"))
