"""Shared pytest configuration for the ksimdsl test suite.

Environment, set before any test module imports jax, numba or mujoco (and
inherited by the `ksimdsl` subprocesses the CLI tests start):

* `JAX_PLATFORMS=cpu` and `MUJOCO_GL=egl` unless the caller chose otherwise;
* `JAX_DISABLE_MOST_OPTIMIZATIONS=1` unless the caller chose otherwise: XLA's
  CPU backend compiles at LLVM -O0. The tests compile far more than they run
  (a few steps of a few envs per program), and compiling is most of the
  suite's time; measured on stand.ksim's MJX env (3 envs, one core), reset +
  step compile in 43 s instead of 67 s while 20 steps take 0.17 s instead of
  0.07 s, and tests/test_engine_parity.py with tests/test_sharding.py (`-n 0`,
  cold caches) take 104 s instead of 128 s. Training (`ksimdsl train`) keeps
  XLA's default optimizations; the HLO passes (fusion, simplification) still
  run here, so the numbers a test checks are computed by the same graph;
* one persistent JAX compilation cache for the whole session (every program is
  cached, however fast it compiled), so the identical training and environment
  programs that several test files and CLI subprocesses build compile once;
* `NUMBA_CACHE_DIR`, `KSIMDSL_CACHE_DIR` (file-backed generated numba
  modules) and `WARP_CACHE_PATH` (Warp's compiled kernels) in the same
  writable place, so tests never write into the source tree or the user's home.

The caches live in a temporary directory removed at the end of the session;
set `KSIMDSL_TEST_CACHE_DIR` to keep them between sessions (CI can cache it).
The JAX cache directory is the one `ksimdsl.session.enable_compilation_cache`
picks under `KSIMDSL_CACHE_DIR`, so in-process tests and `ksimdsl` subprocesses
share their compiled programs.

Run on directories (plain `pytest`, `pytest tests/`), the suite uses two
pytest-xdist workers when xdist is installed (the `test` extra has it): one
process keeps only about one of CI's two cores busy. Whole files go to one
worker (`--dist loadfile`, so module fixtures run once), files holding `slow`
tests first, so that no long file starts last while the other worker idles.
`-n 0` runs in one process, `-n N` picks another count; runs of single files
or tests stay in one process. The controller creates the cache directory and
the workers inherit it, so compiled programs are shared across workers too.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

#: Set by the session that created the temporary cache directory; xdist workers inherit it.
_SESSION_CACHE_ENV = "KSIMDSL_TEST_SESSION_CACHE_DIR"
_IS_XDIST_WORKER = bool(os.environ.get("PYTEST_XDIST_WORKER"))

if os.environ.get("KSIMDSL_TEST_CACHE_DIR"):
    CACHE_ROOT, _OWNS_CACHE = Path(os.environ["KSIMDSL_TEST_CACHE_DIR"]), False
elif _IS_XDIST_WORKER and os.environ.get(_SESSION_CACHE_ENV):
    CACHE_ROOT, _OWNS_CACHE = Path(os.environ[_SESSION_CACHE_ENV]), False
else:
    CACHE_ROOT, _OWNS_CACHE = Path(tempfile.mkdtemp(prefix="ksimdsl-test-cache-")), True
    os.environ[_SESSION_CACHE_ENV] = str(CACHE_ROOT)

_ENV_DEFAULTS = {
    "JAX_PLATFORMS": "cpu",
    "MUJOCO_GL": "egl",
    "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
}
_CACHE_ENV = {
    # = enable_compilation_cache()'s directory, $KSIMDSL_CACHE_DIR/jax
    "JAX_COMPILATION_CACHE_DIR": str(CACHE_ROOT / "ksimdsl" / "jax"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    "NUMBA_CACHE_DIR": str(CACHE_ROOT / "numba"),
    "KSIMDSL_CACHE_DIR": str(CACHE_ROOT / "ksimdsl"),
    "WARP_CACHE_PATH": str(CACHE_ROOT / "warp"),  # MuJoCo Warp's compiled kernels (tests/test_mjx_warp.py)
}

for _name, _value in _ENV_DEFAULTS.items():
    os.environ.setdefault(_name, _value)
os.environ.update(_CACHE_ENV)

if "jax" in sys.modules:  # a plugin imported jax before this file: its config already read the environment
    import jax

    jax.config.update("jax_compilation_cache_dir", _CACHE_ENV["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    # jax's own reading of a boolean variable (config.bool_env)
    _disable = os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"].lower() in ("y", "yes", "t", "true", "on", "1")
    jax.config.update("jax_disable_most_optimizations", _disable)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens",
        action="store_true",
        default=False,
        help="rewrite the expected outputs of data-driven golden tests instead of comparing",
    )


#: xdist workers for a run of whole directories (see the module docstring).
DEFAULT_WORKERS = 2


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Default to `-n 2 --dist loadfile --no-loadscope-reorder` for directory runs, unless `-n` was given.

    Runs before xdist's own `pytest_cmdline_main` (both are `tryfirst`; a conftest registers later),
    which turns the worker count into its workers.
    """
    if _IS_XDIST_WORKER or not config.pluginmanager.hasplugin("xdist"):
        return
    if config.option.numprocesses is not None or config.option.dist != "no" or config.option.collectonly:
        return
    if config.getoption("usepdb", False):  # xdist refuses --pdb with workers
        return
    if not all((config.invocation_params.dir / arg).is_dir() for arg in config.args):
        return
    config.option.numprocesses = DEFAULT_WORKERS
    config.option.dist = "loadfile"
    config.option.loadscopereorder = False


def pytest_unconfigure(config: pytest.Config) -> None:
    if _OWNS_CACHE:
        shutil.rmtree(CACHE_ROOT, ignore_errors=True)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files holding a `slow` test first (stable: same order within each group and each file)."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture
def update_goldens(request: pytest.FixtureRequest) -> bool:
    """True when the run should rewrite golden outputs (`pytest --update-goldens`)."""
    return bool(request.config.getoption("--update-goldens"))
