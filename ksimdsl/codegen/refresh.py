"""Regenerate the committed kernels of the shipped tasks.

    python -m ksimdsl.codegen.refresh            # rewrite kernels/<task>_{jax,numba}.py
    python -m ksimdsl.codegen.refresh --check    # exit 1 if any kernel is stale

For every `tasks/*.ksim`, the JAX and numba modules are written to
`kernels/<task>_jax.py` and `kernels/<task>_numba.py`. Paths in the generated
headers are relative to the repository root, so the output does not depend on
the machine. `tests/test_kernels_fresh.py` fails when a committed kernel
differs from what the compiler produces now. A task whose model lives in a
package that is not installed here (the G1 and Go1 tasks without mjlab) is
left out and named by `unavailable_tasks`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ksimdsl.codegen import BACKENDS, compile_task
from ksimdsl.frontend import ast
from ksimdsl.frontend.model_info import ModelLoadError, resolve_model_path
from ksimdsl.frontend.parse import parse_file

__all__ = ["REPO_ROOT", "kernel_path", "unavailable_tasks", "expected_kernels", "stale_kernels", "refresh", "main"]

#: The repository root (parent of the `ksimdsl` package directory).
REPO_ROOT = Path(__file__).resolve().parents[2]


def kernel_path(task_file: Path, backend: str, root: Path = REPO_ROOT) -> Path:
    return root / "kernels" / f"{task_file.stem}_{backend}.py"


def unavailable_tasks(root: Path = REPO_ROOT) -> dict[str, str]:
    """{task file name: why it cannot compile here} for shipped tasks whose `pkg:` model is not installed."""
    out: dict[str, str] = {}
    for task_file in sorted((root / "tasks").glob("*.ksim")):
        stmt = next((s for s in parse_file(task_file).statements if isinstance(s, ast.ModelStmt)), None)
        if stmt is not None and stmt.path.startswith("pkg:"):
            try:
                resolve_model_path(stmt.path, str(task_file.parent))
            except ModelLoadError as exc:
                out[task_file.name] = str(exc)
    return out


def expected_kernels(root: Path = REPO_ROOT) -> dict[Path, str]:
    """{kernel file: the source the compiler generates now} for every shipped task that compiles here."""
    out: dict[Path, str] = {}
    skip = unavailable_tasks(root)
    cwd = os.getcwd()
    os.chdir(root)  # relative paths in headers and SPEC["source_file"]
    try:
        for task_file in sorted((root / "tasks").glob("*.ksim")):
            if task_file.name in skip:
                continue
            rel = task_file.relative_to(root).as_posix()
            for backend in BACKENDS:
                out[kernel_path(task_file, backend, root)] = compile_task(rel, backend=backend).source
    finally:
        os.chdir(cwd)
    return out


def stale_kernels(root: Path = REPO_ROOT) -> list[Path]:
    """Kernel files that are missing or differ from a fresh compile."""
    return [p for p, src in expected_kernels(root).items() if not p.exists() or p.read_text() != src]


def refresh(root: Path = REPO_ROOT) -> list[Path]:
    """Rewrite every stale kernel file; returns the files written."""
    written = []
    for path, src in expected_kernels(root).items():
        if not path.exists() or path.read_text() != src:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(src)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ksimdsl.codegen.refresh", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale kernels (exit 1 if any)")
    args = parser.parse_args(argv)
    for name, why in unavailable_tasks().items():
        print(f"skipped tasks/{name}: {why}", file=sys.stderr)
    if args.check:
        stale = stale_kernels()
        for p in stale:
            print(f"stale: {p.relative_to(REPO_ROOT)}")
        return 1 if stale else 0
    for p in refresh():
        print(f"wrote {p.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
