"""Load generated kernel source as a Python module.

Generated modules are plain Python text printed by `ksimdsl.codegen` (never
user text). `load_module` executes one in a fresh module object:

* JAX modules are compiled under a pseudo file name (`<ksimdsl:TASK:jax>`)
  that is registered with `linecache`, so tracebacks and debuggers show the
  generated lines;
* numba modules (`@njit(cache=True)`) need a real file for numba's on-disk
  cache: the source is written once to `$KSIMDSL_CACHE_DIR/kernels/` (default
  `~/.cache/ksimdsl/kernels/`) under a name derived from its content hash, and
  imported from there.

`load_kernel_file` loads a generated file that already exists (e.g. kernels/).
"""

from __future__ import annotations

import hashlib
import importlib.util
import linecache
import os
import re
import sys
import types
from pathlib import Path

__all__ = ["load_module", "load_kernel_file", "cache_dir"]


def cache_dir() -> Path:
    """Where file-backed generated modules live (`$KSIMDSL_CACHE_DIR/kernels`)."""
    root = os.environ.get("KSIMDSL_CACHE_DIR") or os.path.join(Path.home(), ".cache", "ksimdsl")
    return Path(root) / "kernels"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name) or "kernel"


def _needs_file(source: str) -> bool:
    return "@njit(cache=True" in source


def load_module(source: str, name: str) -> types.ModuleType:
    """Execute generated `source` in a fresh module named `name` (e.g. "walk:jax")."""
    if _needs_file(source):
        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        path = cache_dir() / f"{_safe(name)}_{digest}.py"
        if not path.exists() or path.read_text() != source:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(source)
            os.replace(tmp, path)
        return load_kernel_file(path, module_name=f"ksimdsl_kernel_{_safe(name)}_{digest}")
    filename = f"<ksimdsl:{name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(f"ksimdsl_kernel_{_safe(name)}")
    module.__file__ = filename
    code = compile(source, filename, "exec")
    exec(code, module.__dict__)
    return module


def load_kernel_file(path: str | os.PathLike, module_name: str | None = None) -> types.ModuleType:
    """Import the generated module at `path` (it is registered in `sys.modules` under `module_name`)."""
    path = Path(path).resolve()
    name = module_name or f"ksimdsl_kernel_{_safe(path.stem)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load generated module {path}")
    module = importlib.util.module_from_spec(spec)
    # numba's cache locator and pickling of jitted functions look the module up by name.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
