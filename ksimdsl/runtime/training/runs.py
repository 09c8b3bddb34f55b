"""Run directories: where a training run leaves everything a person needs later.

    runs/<task>/<YYYYmmdd-HHMMSS>/
        config.json          resolved task spec (TaskSpec.to_dict: the SPEC format), engine, package versions
        task.ksim            copy of the task file as trained
        model.xml            the MJCF model as trained: composed, PD actuators, physics settings
                             (asset paths absolute, so MuJoCo's viewer and other tools load it as is)
        generated/           the generated kernel source(s)
        metrics.jsonl        one JSON object per training iteration
        tb/                  TensorBoard event files (tensorboardX)
        checkpoints/         see ksimdsl.runtime.training.checkpoint
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from ksimdsl.abi import TaskSpec
from ksimdsl.errors import KsimError

__all__ = [
    "create_run_dir",
    "write_run_files",
    "versions",
    "MetricsLog",
    "read_metrics",
    "METRICS_FILE",
    "CONFIG_FILE",
    "MODEL_FILE",
]

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
TASK_FILE = "task.ksim"
MODEL_FILE = "model.xml"
GENERATED_DIR = "generated"
TENSORBOARD_DIR = "tb"


def create_run_dir(task: str, *, root: str | Path = "runs", path: str | Path | None = None) -> Path:
    """The run directory `path` (created if missing), or a new `root/<task>/<timestamp>`.

    Whether an existing `path` may be used is decided under the run's lock (`reusable`).
    """
    try:
        if path is not None:
            run_dir = Path(path)
            if run_dir.exists() and not run_dir.is_dir():
                raise KsimError(f"run directory {run_dir} exists and is not a directory")
            run_dir.mkdir(parents=True, exist_ok=True)
            return run_dir
        base = Path(root) / task
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1000):
            run_dir = base / (stamp if n == 0 else f"{stamp}-{n}")
            try:
                run_dir.mkdir(parents=True, exist_ok=False)
                return run_dir
            except FileExistsError:
                continue
    except OSError as exc:
        raise KsimError(f"cannot create run directory {path or root}: {exc.strerror or exc}") from None
    raise KsimError(f"cannot create a run directory under {base}")


def reusable(run_dir: Path) -> bool:
    """True for an empty directory, or a run that stopped before writing its first checkpoint."""
    from ksimdsl.runtime.training.checkpoint import list_checkpoints
    from ksimdsl.runtime.training.runlock import LOCK_FILE

    entries = {p.name for p in run_dir.iterdir()} - {LOCK_FILE}
    return not entries or (CONFIG_FILE in entries and not list_checkpoints(run_dir))


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (Mapping, MappingProxyType)):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):  # numpy / jax scalars
        return _jsonable(value.item())
    return value


def versions() -> dict[str, str]:
    """Versions of the packages a run's numbers depend on."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("ksimdsl", "jax", "jaxlib", "mujoco", "mujoco-mjx", "numpy", "equinox", "optax", "numba"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def write_run_files(
    run_dir: Path,
    spec: TaskSpec,
    *,
    engine: str,
    task_text: str | None,
    generated_sources: Mapping[str, str],
    model_xml: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """config.json, task.ksim, model.xml and generated/ (overwritten on resume: they describe the latest session)."""
    config = {"task": spec.task, "engine": engine, "spec": _jsonable(spec.to_dict()), "versions": versions()}
    if extra:
        config.update(_jsonable(dict(extra)))
    _write_text(run_dir / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=False) + "\n")
    if task_text is not None:
        _write_text(run_dir / TASK_FILE, task_text)
    if model_xml is not None:
        _write_text(run_dir / MODEL_FILE, model_xml)
    gen = run_dir / GENERATED_DIR
    try:
        gen.mkdir(exist_ok=True)
    except OSError as exc:
        raise KsimError(f"cannot write {gen}: {exc.strerror or exc}") from None
    for name, text in generated_sources.items():
        safe = Path(name).name
        if not safe.endswith(".py"):
            safe += ".py"
        _write_text(gen / safe, text)


def _write_text(path: Path, text: str) -> None:
    """Write `path` atomically; a failure (full disk, read-only directory) is a KsimError, no partial file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise KsimError(f"cannot write {path}: {exc.strerror or exc}") from None


class MetricsLog:
    """Appends one JSON object per iteration to metrics.jsonl and mirrors scalars to TensorBoard.

    `start_after` (resume): records of later iterations already in the file are
    dropped first, so a resumed run's log reads like an uninterrupted one.
    """

    def __init__(self, run_dir: Path, *, start_after: int | None = None, tensorboard: bool = True):
        self.path = Path(run_dir) / METRICS_FILE
        if start_after is not None and self.path.exists():
            kept = [r for r in read_metrics(run_dir) if int(r.get("iteration", 0)) <= start_after]
            _write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        try:
            self._file = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise KsimError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(logdir=str(Path(run_dir) / TENSORBOARD_DIR), flush_secs=30)

    def write(self, record: Mapping[str, Any]) -> None:
        clean = _jsonable(dict(record))
        try:
            self._file.write(json.dumps(clean) + "\n")
            self._file.flush()
        except OSError as exc:
            raise KsimError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        if self._tb is not None:
            step = int(clean.get("env_steps", clean.get("iteration", 0)))
            for key, value in clean.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("iteration", "env_steps"):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All records of a run's metrics.jsonl (a torn last line, from a kill mid-write, is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
