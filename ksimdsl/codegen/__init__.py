"""The compiler's back end: a checked task -> readable Python kernel modules.

    compile_task("tasks/cartpole.ksim", backend="jax") -> CompiledTask(source, spec, backend)

Pipeline: `ksimdsl.frontend.check` (typed task) -> `ksimdsl.ir.lower` (sympy per
phase) -> `ksimdsl.ir.simplify` (CSE across all outputs of a phase, op counts)
-> `ksimdsl.codegen.module` (JAX or numba source, header and SPEC).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from ksimdsl.codegen.module import BACKENDS, render_module
from ksimdsl.frontend.typed import CheckedTask
from ksimdsl.ir.lower import lower_task

__all__ = ["CompiledTask", "compile_task", "compile_checked", "BACKENDS"]


@dataclass(frozen=True)
class CompiledTask:
    """A generated module: its source text, its SPEC dict and the backend it targets."""

    source: str
    spec: Mapping[str, Any]
    backend: str


def _display_path(path: str) -> str:
    """`path` relative to the working directory when it lies below it (machine-independent headers)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel.replace(os.sep, "/")


def compile_checked(
    task: CheckedTask, *, backend: str = "jax", cse: bool = True, source_file: str | None = None
) -> CompiledTask:
    """Generate the kernel module of an already checked task.

    `source_file` is the task's name in the header and in SPEC (default: its path relative to the
    working directory when it lies below it).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (expected one of {', '.join(BACKENDS)})")
    ir = lower_task(task)
    shown = _display_path(task.source_path) if source_file is None else source_file
    source, spec = render_module(task, ir, backend=backend, cse=cse, source_file=shown)
    return CompiledTask(source, spec, backend)


def compile_task(
    path: str, *, backend: str = "jax", cse: bool = True, model_path: str | None = None
) -> CompiledTask:
    """Parse, check and compile the task file at `path` (raises `KsimError` on user errors)."""
    from ksimdsl.frontend.check import check_file

    return compile_checked(check_file(path, model_path=model_path), backend=backend, cse=cse)
