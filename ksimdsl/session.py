"""What the CLI runs: compile a task, load its kernels, and hand them to the runtime.

This is the one place (besides the CLI) that sees both halves of ksimdsl: the
compiler turns the `.ksim` file into kernel source text, and the runtime loads
that text and trains. A run directory records how it was launched
(`config.json` -> "launch": task path, model path, overrides, engine) and the
exact generated source it trained with, so `--resume` and `eval` reuse them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Sequence

from ksimdsl.abi import TaskSpec
from ksimdsl.errors import KsimError
from ksimdsl.runtime.engine import backend_of, has_accelerator, resolve, resolve_impl  # noqa: F401 (has_accelerator: re-exported)
from ksimdsl.runtime.tools.view_state import CommandControl, CommandField, TaskControls

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
    controls: TaskControls = TaskControls()  # what `ksimdsl view` can steer (commands, the push event)
    command_fields: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # {command: its field names}
    reference: Any = None  # the checked `reference` statement (frontend.typed.ReferenceDef), None without one

    @property
    def generated_sources(self) -> dict[str, str]:
        return {f"kernels_{backend_of(self.engine)}.py": self.source}

    def describe_engine(self) -> str:
        """`mjx (impl warp)` / `mujoco`: the engine and, on MJX, its implementation."""
        return f"{self.engine} (impl {self.spec.physics.impl})" if self.engine == "mjx" else self.engine

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


def resolve_engine(engine: str, *, impl: str = "auto") -> str:
    """`auto` -> `mjx` on an accelerator (or for `physics impl=warp`), else the CPU MuJoCo engine."""
    return resolve(engine, impl=impl)


def _last_value(overrides: Sequence[str], key: str) -> str | None:
    """The value of the last `key=value` item of `overrides`, if any."""
    found = None
    for item in overrides:
        k, sep, value = item.partition("=")
        if sep and k.strip() == key:
            found = value.strip()
    return found


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
    from ksimdsl.frontend.parse import read_source

    return _compile_source(read_source(task_path), overrides=overrides, engine=engine)


def _compile_source(
    source: Any, *, overrides: Sequence[str], engine: str | None, source_file: str | None = None
) -> LoadedTask:
    """Compile a task's text (`errors.Source`), apply the overrides and load the kernels."""
    from ksimdsl.codegen import compile_checked
    from ksimdsl.frontend.check import check_source
    from ksimdsl.runtime.loader import load_module
    from ksimdsl.runtime.training.overrides import apply_overrides, check_items

    check_items(list(overrides))  # a bad key or value points at its item before anything is compiled
    checked = check_source(source)
    engine_override, _ = _split_engine_override(overrides)
    impl = _last_value(overrides, "impl") or checked.physics.impl
    chosen = resolve_engine(engine or engine_override or checked.engine, impl=impl)
    backend = backend_of(chosen)
    compiled = compile_checked(checked, backend=backend, source_file=source_file)
    spec = apply_overrides(TaskSpec.from_dict(compiled.spec), list(overrides))  # validates every key
    physics = {k: getattr(spec.physics, k) for k in COMPILED_PHYSICS}
    if physics != {k: getattr(checked.physics, k) for k in COMPILED_PHYSICS}:
        # dt/ctrl_dt are folded into the kernels (episode steps, timers, `ctrl_dt`): compile again with them
        checked = check_source(source, physics=physics)
        compiled = compile_checked(checked, backend=backend, source_file=source_file)
        spec = apply_overrides(TaskSpec.from_dict(compiled.spec), list(overrides))
    if chosen == "mjx":  # the MJX implementation this machine runs (`physics impl=auto` resolved)
        resolved = resolve_impl(spec.physics.impl, devices=spec.train.devices)
        spec = spec.with_overrides(physics=dataclasses.replace(spec.physics, impl=resolved))
    kernels = load_module(compiled.source, f"{checked.name}:{backend}")
    return LoadedTask(
        spec=spec,
        kernels=kernels,
        engine=chosen,
        model_path=checked.model.resolved_path,
        task_path=source.path,
        task_text=source.text,
        source=compiled.source,
        overrides=tuple(overrides),
        controls=_task_controls(checked),
        command_fields={c.name: tuple(f.name for f in c.fields) for c in checked.commands},
        reference=checked.reference,
    )


def _task_controls(checked: Any) -> TaskControls:
    """The commands of a checked task, with the ranges their fields are sampled from, and its push
    event: the event called `push`, else the first that writes a velocity."""
    from ksimdsl.frontend import typed as T

    def sampled_range(value: Any) -> tuple[float, float]:
        if isinstance(value, T.Const):
            return value.values[0], value.values[0]
        if isinstance(value, T.Dist) and all(isinstance(p, T.Const) for p in value.params):
            a, b = (p.values[0] for p in value.params)
            return (a, b) if value.kind == "uniform" else (a - 2.0 * b, a + 2.0 * b)
        return 0.0, 0.0  # depends on `level`: no range

    commands = tuple(
        CommandControl(c.name, tuple(CommandField(f.name, *sampled_range(f.value)) for f in c.fields))
        for c in checked.commands
    )
    pushes = [e for e in checked.events if e.name == "push"]
    pushes += [e for e in checked.events if any(w.target in ("qvel", "base_ang_vel") for w in e.writes)]
    return TaskControls(commands, pushes[0].name if pushes else None)


def _stored_spec(path: Path, text: str) -> dict[str, Any]:
    """The SPEC dict of a generated module stored in a run directory, read without running the module."""
    import ast

    try:
        for node in ast.parse(text, filename=str(path)).body:
            if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["SPEC"]:
                spec = ast.literal_eval(node.value)
                if isinstance(spec, dict):
                    return spec
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        pass
    raise KsimError(f"{path} is not a module generated by ksimdsl (no SPEC literal)")


def _first_difference(a: str, b: str) -> int:
    lines_a, lines_b = a.splitlines(), b.splitlines()
    for i, (x, y) in enumerate(zip(lines_a, lines_b)):
        if x != y:
            return i + 1
    return min(len(lines_a), len(lines_b)) + 1


def _read_launch(run_dir: str | Path) -> dict[str, Any]:
    from ksimdsl.runtime.training.runs import CONFIG_FILE

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
    """The task of an existing run, compiled afresh from the run's copy of the task file.

    A run directory is data, never code: its generated kernels (`generated/*.py`) are not executed.
    They are compared with what the task compiles to now, and a mismatch (an edited file, or a run
    written by another ksimdsl) is refused, so a resumed or evaluated run uses exactly the kernels
    it was trained with.
    """
    from ksimdsl.errors import Source
    from ksimdsl.frontend.parse import read_source
    from ksimdsl.runtime.training.overrides import apply_overrides
    from ksimdsl.runtime.training.runs import GENERATED_DIR, TASK_FILE

    launch = _read_launch(run_dir)
    chosen = engine or launch["engine"]
    backend = backend_of(chosen)  # KsimError for an unknown engine
    launch_overrides = [str(o) for o in launch.get("overrides", [])]
    all_overrides = launch_overrides + list(overrides)
    task_file = Path(run_dir) / TASK_FILE
    # Relative model paths in the copy resolve from the original task's directory, as in training.
    source = (
        Source(str(launch["task_path"]), task_file.read_text(encoding="utf-8"))
        if task_file.is_file()
        else read_source(launch["task_path"])
    )
    gen = Path(run_dir) / GENERATED_DIR / f"kernels_{backend}.py"
    if not gen.is_file():
        # The run was trained on another engine: compile its task for this one.
        return _compile_source(source, overrides=all_overrides, engine=chosen)
    stored = gen.read_text(encoding="utf-8", errors="replace")
    stored_spec = _stored_spec(gen, stored)
    spec = apply_overrides(TaskSpec.from_dict(stored_spec), all_overrides)
    base = apply_overrides(TaskSpec.from_dict(stored_spec), launch_overrides)
    changed = [k for k in COMPILED_PHYSICS if getattr(spec.physics, k) != getattr(base.physics, k)]
    if changed:
        raise KsimError(
            f"cannot change {', '.join(changed)} when resuming: the run's kernels were compiled with "
            f"{', '.join(f'{k}={getattr(base.physics, k)}' for k in changed)}"
        )
    source_file = stored_spec.get("source_file")
    task = _compile_source(
        source, overrides=all_overrides, engine=chosen, source_file=source_file if isinstance(source_file, str) else None
    )
    if task.source != stored:
        raise KsimError(
            f"{gen} differs from what the run's task compiles to with this ksimdsl "
            f"(first at line {_first_difference(stored, task.source)}): the file was edited, or the run was "
            "written by another ksimdsl version. A run directory's code is never executed; "
            "to use this run's checkpoints with a task compiled now, name a copy of the task file "
            "explicitly (ksimdsl eval COPY.ksim --run RUN_DIR)"
        )
    return task


def _media_hook(task: LoadedTask, run_dir: Path) -> Any:
    """Videos and plots written into the run directory while training (train keys media_every_s, video)."""
    from ksimdsl.runtime.tools.render import MediaConfig, TrainingMedia

    config = MediaConfig(every_s=task.spec.train.media_every_s, video=task.spec.train.video)
    media = TrainingMedia(task.spec, task.kernels, model_path=task.model_path, run_dir=run_dir, engine=task.engine, config=config)
    return media.maybe_write


def _train(task: LoadedTask, *, run_dir: str | Path | None, resume: bool, progress: bool) -> Any:
    """Train `task`; the runtime validates what depends on the machine, then creates or reopens the run directory."""
    from ksimdsl.runtime.training.train import RunPlan, train

    plan = RunPlan(
        run_dir=run_dir,
        resume=resume,
        progress=progress,
        task_text=task.task_text,
        generated_sources=task.generated_sources,
        extra={"launch": task.launch_info()},
        make_hook=lambda path: _media_hook(task, path),
    )
    return train(task.spec, task.kernels, model_path=task.model_path, engine=task.engine, plan=plan)


def start_training(
    task_path: str, *, overrides: Sequence[str] = (), run_dir: str | None = None, progress: bool = True
) -> Any:
    """`ksimdsl train TASK.ksim key=value ...`"""
    enable_compilation_cache()
    task = load_task(task_path, overrides=overrides)  # every setting is validated here
    print(f"{task.spec.task}: engine {task.describe_engine()}, {task.spec.train.num_envs} envs", flush=True)
    return _train(task, run_dir=run_dir, resume=False, progress=progress)


def resume_training(run_dir: str, *, overrides: Sequence[str] = (), progress: bool = True) -> Any:
    """`ksimdsl train --resume RUN_DIR [key=value ...]`"""
    enable_compilation_cache()
    engine_override, rest = _split_engine_override(overrides)
    task = _load_run_task(run_dir, overrides=rest, engine=engine_override)
    return _train(task, run_dir=run_dir, resume=True, progress=progress)


@dataclass(frozen=True)
class EvalRequest:
    """What `ksimdsl eval` asks for: envs per batch, seed, the engine (None: the run's), the episode
    limit in seconds (None: the task's), whether events happen, and `--command NAME=v1,...` texts."""

    episodes: int = 10
    seed: int = 0
    engine: str | None = None
    seconds: float | None = None
    events: bool = True
    commands: tuple[str, ...] = ()
    level: float | None = None  # the curriculum level; None: the level the run reached


def evaluate_run(
    task_path: str | None, run_dir: str, request: EvalRequest = EvalRequest()
) -> Mapping[str, Any] | list[Mapping[str, Any]]:
    """`ksimdsl eval TASK.ksim --run RUN_DIR`: the deterministic policy's returns, falls and metrics.

    Without commands in `request`: one report (commands sampled as in training). With commands: one
    report per command, each held fixed for whole episodes (positioned errors for bad ones).
    """
    from ksimdsl.runtime.tools.evaluate import EvalOptions, evaluate, evaluate_commands, parse_commands

    enable_compilation_cache()
    task = task_for_run(task_path, run_dir, engine=request.engine)
    commands = parse_commands(request.commands, task.command_fields)
    where = {"model_path": task.model_path, "run_dir": run_dir, "engine": task.engine}
    if not commands:
        return evaluate(
            task.spec, task.kernels, episodes=request.episodes, seed=request.seed, seconds=request.seconds,
            events=request.events, level=request.level, **where,
        )  # fmt: skip
    options = EvalOptions(
        episodes=request.episodes, seed=request.seed, seconds=request.seconds, events=request.events,
        level=request.level,
    )  # fmt: skip
    return evaluate_commands(task.spec, task.kernels, commands, options=options, **where)


@dataclass(frozen=True)
class RecordRequest:
    """What `ksimdsl record` asks for: the clip's length in seconds (None: one episode, at most 10 s), the
    engine (None: the run's), whether events happen, `--command NAME=v1,...` texts (all held at once)."""

    seconds: float | None = None
    engine: str | None = None
    events: bool = True
    commands: tuple[str, ...] = ()
    seed: int = 0


def held_commands(task: LoadedTask, texts: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """`--command NAME=v1,...` texts of `record` and `render`: every command held at one value for the whole
    rollout (positioned errors for bad ones; one command given twice is an error)."""
    from ksimdsl.runtime.tools.evaluate import parse_commands

    commands: dict[str, tuple[float, ...]] = {}
    for command in parse_commands(texts, task.command_fields):
        if command.name in commands:
            raise KsimError(f"command '{command.name}' given twice; a recording holds each command at one value")
        commands[command.name] = command.values
    return commands


def record_run(task_path: str | None, run_dir: str, out_path: str, request: RecordRequest = RecordRequest()) -> Any:
    """`ksimdsl record TASK.ksim --run RUN_DIR -o CLIP.npz`: a clip of the run's deterministic policy.

    Returns (path, `tools.record.RecordInfo`).
    """
    from ksimdsl.runtime.tools.evaluate import parse_commands
    from ksimdsl.runtime.tools.record import CLIP_SUFFIXES, RecordOptions
    from ksimdsl.runtime.tools.record import record_run as record
    from ksimdsl.runtime.tools.export import check_output_path

    check_output_path(out_path, CLIP_SUFFIXES)  # a typo fails before anything compiles
    enable_compilation_cache()
    task = task_for_run(task_path, run_dir, engine=request.engine)
    commands = held_commands(task, request.commands)
    options = RecordOptions(seconds=request.seconds, commands=commands, events=request.events, seed=request.seed)
    return record(
        task.spec, task.kernels, model_path=task.model_path, run_dir=run_dir, out_path=out_path, engine=task.engine,
        options=options,
    )  # fmt: skip


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


# --------------------------------------------------------------------------- ksimdsl view

#: The engine `ksimdsl view` steps (one env on the CPU, in real time).
VIEW_ENGINE = "mujoco"


def load_view(task_path: str, run_dir: str | None, *, iteration: int | None = None) -> tuple[LoadedTask, Any, str]:
    """`ksimdsl view TASK.ksim [--run RUN_DIR [--checkpoint N]]`: the task compiled for the C MuJoCo
    engine, the run's policy (None: the zero action) and a label for it."""
    enable_compilation_cache()
    if run_dir is None:
        return load_task(task_path, engine=VIEW_ENGINE), None, "zero action (no --run)"
    from ksimdsl.runtime.tools.export import load_run_policy

    task = task_for_run(task_path, run_dir, engine=VIEW_ENGINE)
    policy, meta = load_run_policy(task.spec, run_dir, iteration=iteration)
    return task, policy, f"{Path(run_dir).name} iteration {meta.iteration}"


def view_task(task: LoadedTask) -> Any:
    """The viewer's `ViewTask` of a loaded task."""
    from ksimdsl.runtime.tools.view_session import ViewTask

    return ViewTask(task.spec, task.kernels, task.model_path, task.controls, label=os.path.basename(task.task_path))


class TaskFileWatcher:
    """`ksimdsl view --watch`: `watcher()` recompiles the task file when it changed on disk since the
    last call (a `ViewTask`), else returns None; a task that does not compile raises KsimError."""

    def __init__(self, task_path: str, *, overrides: Sequence[str] = ()):
        self.path, self.overrides = task_path, tuple(overrides)
        self._stamp = self._read_stamp()

    def _read_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def __call__(self) -> Any:
        stamp = self._read_stamp()
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        return view_task(load_task(self.path, overrides=self.overrides, engine=VIEW_ENGINE))
