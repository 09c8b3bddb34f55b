"""What the CLI runs: compile a task, load its kernels, and hand them to the runtime.

This is the one place (besides the CLI) that sees both halves of ksimdsl: the
compiler turns the `.ksim` file into kernel source text, and the runtime loads
that text and trains. A run directory records how it was launched
(`config.json` -> "launch": task path, model path, overrides, engine) and the
exact generated source it trained with, so `--resume` and `eval` reuse them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Sequence

from ksimdsl.abi import TaskSpec
from ksimdsl.errors import KsimError
from ksimdsl.runtime.engine import backend_of, has_accelerator, resolve  # noqa: F401 (re-export)

#: physics settings the compiler folds into the kernels; overriding them recompiles the task
COMPILED_PHYSICS = ("dt", "ctrl_dt", "solver", "iterations", "ls_iterations")


@dataclass(frozen=True)
class LoadedTask:
    """A compiled task ready for the runtime."""

    spec: TaskSpec
    kernels: ModuleType  # the generated module for `engine`
    engine: str  # "mjx" | "mujoco"
    model_path: str
    task_path: str
    task_text: str | None
    source: str  # generated source of `kernels`
    overrides: tuple[str, ...]

    @property
    def generated_sources(self) -> dict[str, str]:
        return {f"kernels_{backend_of(self.engine)}.py": self.source}

    def launch_info(self) -> dict[str, Any]:
        return {
            "task_path": os.path.abspath(self.task_path),
            "model_path": os.path.abspath(self.model_path),
            "engine": self.engine,
            "overrides": list(self.overrides),
        }


def enable_compilation_cache() -> None:
    """Keep XLA's compiled training step on disk, so a second run of a task starts in seconds.

    The cache lives under $KSIMDSL_CACHE_DIR (default ~/.cache/ksimdsl)/jax;
    `KSIMDSL_JAX_CACHE=0` turns it off.
    """
    if os.environ.get("KSIMDSL_JAX_CACHE", "1") == "0":
        return
    import jax

    from ksimdsl.runtime.loader import cache_dir

    try:
        path = cache_dir().parent / "jax"
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # an unwritable cache only costs start-up time
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def resolve_engine(engine: str) -> str:
    """`auto` -> `mjx` on an accelerator, else the CPU MuJoCo engine (when this build has it)."""
    return resolve(engine)


def _split_engine_override(overrides: Sequence[str]) -> tuple[str | None, list[str]]:
    engine, rest = None, []
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and key.strip() == "engine":
            engine = value.strip()
        else:
            rest.append(item)
    return engine, rest


def load_task(task_path: str, *, overrides: Sequence[str] = (), engine: str | None = None) -> LoadedTask:
    """Compile `task_path`, apply `key=value` overrides and load the kernels for the chosen engine."""
    from ksimdsl.codegen import compile_checked
    from ksimdsl.frontend.check import check_source
    from ksimdsl.frontend.parse import read_source
    from ksimdsl.runtime.loader import load_module
    from ksimdsl.runtime.overrides import apply_overrides

    source = read_source(task_path)
    checked = check_source(source)
    engine_override, _ = _split_engine_override(overrides)
    chosen = resolve_engine(engine or engine_override or checked.engine)
    compiled = compile_checked(checked, backend=backend_of(chosen))
    spec = apply_overrides(TaskSpec.from_dict(compiled.spec), list(overrides))  # validates every key
    physics = {k: spec.physics[k] for k in COMPILED_PHYSICS}
    if physics != {k: getattr(checked.physics, k) for k in COMPILED_PHYSICS}:
        # dt/ctrl_dt are folded into the kernels (episode steps, timers, `ctrl_dt`): compile again with them
        checked = check_source(source, physics=physics)
        compiled = compile_checked(checked, backend=backend_of(chosen))
        spec = apply_overrides(TaskSpec.from_dict(compiled.spec), list(overrides))
    kernels = load_module(compiled.source, f"{checked.name}:{backend_of(chosen)}")
    return LoadedTask(
        spec=spec,
        kernels=kernels,
        engine=chosen,
        model_path=checked.model.resolved_path,
        task_path=task_path,
        task_text=source.text,
        source=compiled.source,
        overrides=tuple(overrides),
    )


def _read_launch(run_dir: str | Path) -> dict[str, Any]:
    from ksimdsl.runtime.runs import CONFIG_FILE

    path = Path(run_dir) / CONFIG_FILE
    if not Path(run_dir).is_dir():
        raise KsimError(f"run directory {run_dir} does not exist")
    try:
        config = json.loads(path.read_text())
        launch = config["launch"]
        if not isinstance(launch, dict):
            raise TypeError
        return launch
    except FileNotFoundError:
        raise KsimError(f"{run_dir} is not a ksimdsl run directory (no {CONFIG_FILE})") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise KsimError(f"{path} is not a valid ksimdsl run configuration") from None


def _load_run_task(run_dir: str | Path, *, overrides: Sequence[str], engine: str | None) -> LoadedTask:
    """The task of an existing run, from the generated source it was trained with."""
    from ksimdsl.runtime.loader import load_module
    from ksimdsl.runtime.overrides import apply_overrides
    from ksimdsl.runtime.runs import GENERATED_DIR, TASK_FILE

    launch = _read_launch(run_dir)
    chosen = engine or launch["engine"]
    gen = Path(run_dir) / GENERATED_DIR / f"kernels_{backend_of(chosen)}.py"
    if gen.is_file():
        source = gen.read_text()
        kernels = load_module(source, f"{Path(run_dir).name}:{backend_of(chosen)}")
        all_overrides = list(launch.get("overrides", [])) + list(overrides)
        spec = apply_overrides(TaskSpec.from_dict(kernels.SPEC), all_overrides)
        base = apply_overrides(TaskSpec.from_dict(kernels.SPEC), list(launch.get("overrides", [])))
        changed = [k for k in COMPILED_PHYSICS if spec.physics[k] != base.physics[k]]
        if changed:
            raise KsimError(
                f"cannot change {', '.join(changed)} when resuming: the run's kernels were compiled with "
                f"{', '.join(f'{k}={base.physics[k]}' for k in changed)}"
            )
        task_file = Path(run_dir) / TASK_FILE
        return LoadedTask(
            spec=spec,
            kernels=kernels,
            engine=chosen,
            model_path=launch["model_path"],
            task_path=launch["task_path"],
            task_text=task_file.read_text() if task_file.is_file() else None,
            source=source,
            overrides=tuple(all_overrides),
        )
    # The run was trained on another engine: recompile the original task for this one.
    all_overrides = list(launch.get("overrides", [])) + list(overrides)
    return load_task(launch["task_path"], overrides=all_overrides, engine=chosen)


def _media_hook(task: LoadedTask, run_dir: Path) -> Any:
    """Videos and plots written into the run directory while training (train keys media_every_s, video)."""
    from ksimdsl.runtime.render import MediaConfig, TrainingMedia

    config = MediaConfig(every_s=float(task.spec.train["media_every_s"]), video=bool(task.spec.train["video"]))
    media = TrainingMedia(task.spec, task.kernels, model_path=task.model_path, run_dir=run_dir, engine=task.engine, config=config)
    return media.maybe_write


def start_training(
    task_path: str, *, overrides: Sequence[str] = (), run_dir: str | None = None, progress: bool = True
) -> Any:
    """`ksimdsl train TASK.ksim key=value ...`"""
    from ksimdsl.runtime.train import train

    from ksimdsl.runtime.runs import create_run_dir

    from ksimdsl.runtime.sharding import is_main_process

    enable_compilation_cache()
    task = load_task(task_path, overrides=overrides)
    main = is_main_process()  # in a multi-process run only process 0 writes the run directory
    run_path = create_run_dir(task.spec.task, path=run_dir) if main else run_dir
    print(f"{task.spec.task}: engine {task.engine}, {task.spec.train['num_envs']} envs", flush=True)
    return train(
        task.spec,
        task.kernels,
        model_path=task.model_path,
        run_dir=run_path,
        task_text=task.task_text,
        generated_sources=task.generated_sources,
        engine=task.engine,
        progress=progress,
        extra={"launch": task.launch_info()},
        on_iteration=_media_hook(task, run_path) if main else None,
    )


def resume_training(run_dir: str, *, overrides: Sequence[str] = (), progress: bool = True) -> Any:
    """`ksimdsl train --resume RUN_DIR [key=value ...]`"""
    from ksimdsl.runtime.train import train

    from ksimdsl.runtime.sharding import is_main_process

    enable_compilation_cache()
    engine_override, rest = _split_engine_override(overrides)
    task = _load_run_task(run_dir, overrides=rest, engine=engine_override)
    return train(
        task.spec,
        task.kernels,
        model_path=task.model_path,
        run_dir=run_dir,
        task_text=task.task_text,
        generated_sources=task.generated_sources,
        engine=task.engine,
        resume=True,
        progress=progress,
        extra={"launch": task.launch_info()},
        on_iteration=_media_hook(task, Path(run_dir)) if is_main_process() else None,
    )


def evaluate_run(
    task_path: str | None, run_dir: str, *, episodes: int = 10, engine: str | None = None
) -> Mapping[str, Any]:
    """`ksimdsl eval TASK.ksim --run RUN_DIR`: the deterministic policy's returns."""
    from ksimdsl.runtime.evaluate import evaluate

    enable_compilation_cache()
    task = task_for_run(task_path, run_dir, engine=engine)
    return evaluate(
        task.spec, task.kernels, model_path=task.model_path, run_dir=run_dir, episodes=episodes, engine=task.engine
    )


def task_for_run(task_path: str | None, run_dir: str, *, engine: str | None = None) -> LoadedTask:
    """The task a command on an existing run (eval, render, export) works with.

    The run's own generated source when TASK is the file it was trained from
    (or omitted); otherwise TASK is compiled afresh, and the checkpoint's
    task check decides whether it fits the run.
    """
    launch = _read_launch(run_dir)
    chosen = engine and resolve_engine(engine)
    if task_path is not None and os.path.abspath(task_path) != launch["task_path"]:
        return load_task(task_path, overrides=launch.get("overrides", []), engine=chosen)
    return _load_run_task(run_dir, overrides=(), engine=chosen)
