"""The training loop behind `ksimdsl train`.

    result = train(spec, kernels, model_path=..., engine="mjx", plan=RunPlan(run_dir=None, task_text=...))

One iteration = one rollout of `rollout` control steps in `num_envs` envs
(`Collector.collect`) + one `ppo.update`. With the MJX engine both run in ONE
jitted call (compiled once, ahead of the loop, with the state buffers donated);
with a host engine the rollout runs in Python/numba and only the update is jitted.
The host sees each iteration's results once (a single device-to-host transfer of
scalars) to log them.

The loop stops after `train.steps` iterations (counting iterations of earlier
sessions of the same run), after `train.max_seconds` of wall time, or on Ctrl-C
(the iteration in flight finishes first; a second Ctrl-C aborts at once). Every
stop writes a final checkpoint. A watchdog reports an iteration that stalls
longer than `train.watchdog_s` (see `ksimdsl.runtime.training.watchdog`).

Devices: with the MJX engine the environments are split over the local JAX
devices (`train devices=N`, default all) and, in a multi-process run, over the
devices of every process; the PPO state is replicated and XLA combines the
statistics and gradients across devices (see `ksimdsl.runtime.training.sharding`). Only
the main process writes the run directory. The results match a single-device
run with the same seed and `num_envs` up to the order of floating-point sums.

Randomness: the key of iteration i is `fold_in(PRNGKey(seed), i)` and the
collector state (env physics, episode counters, actor carry) is part of every
checkpoint, so the same seed gives the same metrics, and a resumed run continues
exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from ksimdsl.abi import TaskSpec
from ksimdsl.errors import KsimError
from ksimdsl.settings import TrainSettings, memory_problem
from ksimdsl.runtime import engine as engines
from ksimdsl.runtime.rl import ppo
from ksimdsl.runtime.training.checkpoint import (
    CheckpointMeta,
    latest_checkpoint,
    load_checkpoint,
    remove_temporary_files,
    save_checkpoint,
    spec_hash,
)
from ksimdsl.runtime.engine.base import Collector, RolloutStats
from ksimdsl.runtime.engine.model import model_xml
from ksimdsl.runtime.training.runlock import run_lock
from ksimdsl.runtime.training.runs import TENSORBOARD_DIR, MetricsLog, create_run_dir, reusable, write_run_files
from ksimdsl.runtime.training.stopflag import StopFlag
from ksimdsl.runtime.training.sharding import EnvMesh, is_main_process
from ksimdsl.runtime.training.watchdog import Watchdog

__all__ = ["RunPlan", "RunContext", "check_resources", "TrainResult", "train", "make_collector", "iteration_metrics", "TIMING_KEYS"]

class IterationHook(Protocol):
    """Called between iterations (`final=True` once after the last checkpoint).

    It runs synchronously: `ppo_state`'s buffers are donated to the next step.
    """

    def __call__(self, ppo_state: ppo.PPOState, *, iteration: int, final: bool) -> Any: ...


#: Metrics that depend on the machine's speed, not on the seed.
TIMING_KEYS = ("wall_s", "sps", "iteration_s")


@dataclass(frozen=True)
class RunPlan:
    """Where a run writes, what it records about itself, and how it reports.

    `run_dir` None: a new `runs_root/<task>/<timestamp>`; with `resume` it names
    the run to continue. `task_text`, `generated_sources` and `extra` (more
    config.json keys, e.g. "launch") are recorded in the run directory.
    `make_hook` is called with the run directory once it exists (main process
    only) and returns the hook run between iterations (e.g. periodic videos,
    render.TrainingMedia), or None.
    """

    run_dir: str | Path | None = None
    runs_root: str | Path = "runs"
    resume: bool = False
    progress: bool = True
    task_text: str | None = None
    generated_sources: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    make_hook: "Callable[[Path], IterationHook | None] | None" = None


@dataclass(frozen=True)
class RunContext:
    """A plan made concrete: the run directory exists (on the main process) and the hook is made."""

    run_dir: Path
    engine: str
    plan: RunPlan
    on_iteration: "IterationHook | None" = None
    model_xml: str | None = None  # the composed model as trained (the run's model.xml)


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    iterations: int  # total, including earlier sessions of a resumed run
    env_steps: int
    wall_s: float  # total training wall time, including earlier sessions
    stop_reason: str  # "steps" | "max_seconds" | "interrupted"
    checkpoint: Path | None
    last_metrics: Mapping[str, Any] | None


def make_collector(
    spec: TaskSpec, kernels: ModuleType, model_path: str | Path, *, engine: str, num_envs: int | None = None
) -> Collector:
    """The Collector of `engine` (a name in the engine registry, e.g. "mjx" | "mujoco") for this task."""
    return engines.get(engine).make_collector(spec, kernels, model_path, num_envs=num_envs)


def iteration_metrics(spec: TaskSpec, stats: RolloutStats, update_metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Host-side metrics of one iteration from the rollout sums and the PPO update scalars."""
    s = jax.tree.map(np.asarray, stats)
    steps = float(s.env_steps)
    episodes = float(s.episodes)
    per_episode = (lambda x: float(x) / episodes) if episodes > 0 else (lambda x: None)
    out: dict[str, Any] = {
        "episodes": int(episodes),
        "episode_return": per_episode(s.episode_return_sum),
        "episode_length": per_episode(s.episode_length_sum),
        "reward": float(s.reward_sum) / steps,
    }
    for i, name in enumerate(spec.rewards):
        out[f"reward/{name}"] = float(s.reward_weighted_sum_R[i]) / steps
        out[f"reward_raw/{name}"] = float(s.reward_term_sum_R[i]) / steps
    for k, name in enumerate(spec.terminations):
        out[f"termination/{name}"] = per_episode(s.termination_count_K[k])
    # `metric` values: the mean per control step over the rollout, like reward/NAME
    for j, name in enumerate(spec.metrics):
        out[f"metric/{name}"] = float(s.metric_sum_J[j]) / steps
    out["truncation_rate"] = per_episode(s.truncations)
    out["failure_rate"] = per_episode(s.failures)
    out["success_rate"] = per_episode(s.successes)
    out["nan_resets"] = int(s.nan_resets)
    # env steps whose reward term (or weight) / observation was NaN or inf: those envs were reset
    for i, name in enumerate(spec.rewards):
        out[f"nonfinite/{name}"] = int(s.nonfinite_term_count_R[i])
    out["nonfinite/observations"] = int(s.nonfinite_obs_count)
    out["level"] = float(s.level_sum) / steps
    for name, value in update_metrics.items():
        out[name] = float(np.asarray(value))
    return out


#: Stop requests the main process broadcasts to the others each iteration (by index).
_STOP_REQUESTS = (None, "interrupted", "max_seconds")


#: Consecutive iterations whose every optimizer step was skipped (non-finite loss or gradient)
#: after which training stops with an error instead of spinning without learning.
MAX_SKIPPED_ITERATIONS = 5


class _SkippedUpdates:
    """Counts iterations in which `ppo.update` skipped every optimizer step, and stops training
    with an error that names the reward terms that were not finite after MAX_SKIPPED_ITERATIONS."""

    def __init__(self, spec: TaskSpec):
        self.spec = spec
        self.steps_per_update = spec.train.epochs * spec.train.minibatches
        self.in_a_row = 0

    def record(self, update_metrics: Mapping[str, Any], record: Mapping[str, Any]) -> None:
        skipped = float(update_metrics.get("skipped_steps", 0.0))
        self.in_a_row = self.in_a_row + 1 if skipped >= self.steps_per_update else 0
        if self.in_a_row < MAX_SKIPPED_ITERATIONS:
            return
        terms = [
            name
            for name in self.spec.rewards
            if not math.isfinite(float(record.get(f"reward_raw/{name}", 0.0) or 0.0))
            or float(record.get(f"nonfinite/{name}", 0.0) or 0.0) > 0
        ]
        where = (
            f"non-finite values came from reward term(s) {', '.join(repr(t) for t in terms)}"
            if terms
            else "the rewards were finite: look at the observations and the reward weights' sizes"
        )
        raise KsimError(
            f"training stopped: the PPO loss or gradient was not finite in every update of the last "
            f"{self.in_a_row} iterations, so the policy could not learn ({where}); "
            "the last checkpoint holds the last finite parameters"
        )


def _local(mesh: EnvMesh | None, ppo_state: ppo.PPOState) -> ppo.PPOState:
    """The PPO state as arrays on one local device, for host-side hooks (videos) of one process."""
    return ppo_state if mesh is None else mesh.local(ppo_state)


def _make_train_step(
    collector: Collector, mesh: EnvMesh | None = None, shardings: tuple[Any, Any] | None = None
):
    """(ppo_state, collector_state, key) -> (ppo_state, collector_state, stats, update_metrics).

    `shardings` (in_shardings, out_shardings) from `EnvMesh.step_shardings` lay a
    jittable step out on the environments' device mesh; XLA then inserts the
    cross-device reductions (statistics, normalizers, gradients) itself.
    """

    def collect_and_update(ppo_state, collector_state, key):
        k_collect, k_update = jax.random.split(key)
        collector_state, traj, stats = collector.collect(ppo_state, collector_state, key=k_collect)
        shard_minibatch = None if mesh is None or mesh.num_devices == 1 else mesh.constrain_minibatch
        ppo_state, metrics = ppo.update(ppo_state, traj, key=k_update, shard_minibatch=shard_minibatch)
        return ppo_state, collector_state, stats, metrics

    if collector.jittable:
        if shardings is None:
            return jax.jit(collect_and_update, donate_argnums=(0, 1))
        in_shardings, out_shardings = shardings
        return jax.jit(
            collect_and_update, in_shardings=in_shardings, out_shardings=out_shardings, donate_argnums=(0, 1)
        )

    update = jax.jit(lambda s, traj, key: ppo.update(s, traj, key=key), donate_argnums=(0,))

    def host_step(ppo_state, collector_state, key):
        k_collect, k_update = jax.random.split(key)
        collector_state, traj, stats = collector.collect(ppo_state, collector_state, key=k_collect)
        ppo_state, metrics = update(ppo_state, traj, k_update)
        return ppo_state, collector_state, stats, metrics

    return host_step


class _Progress:
    """rich progress bar (or nothing) showing iteration, env-steps, return and steps/s."""

    def __init__(self, enabled: bool, total: int | None, done: int, task: str):
        self._bar = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("env-steps {task.fields[env_steps]}"),
            TextColumn("return {task.fields[ret]}"),
            TextColumn("{task.fields[sps]} steps/s"),
            TimeElapsedColumn(),
            transient=False,
        )
        self._task = self._bar.add_task(task, total=total, completed=done, env_steps="0", ret="-", sps="-")
        self._bar.start()

    def update(self, iteration: int, metrics: Mapping[str, Any], last_return: float | None) -> None:
        if self._bar is None:
            return
        ret = "-" if last_return is None else f"{last_return:.2f}"
        self._bar.update(
            self._task,
            completed=iteration,
            env_steps=f"{metrics['env_steps']:,}",
            ret=ret,
            sps=f"{metrics['sps']:,.0f}",
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def check_resources(spec: TaskSpec) -> None:
    """A KsimError when the task's rollout cannot fit in this machine's memory (before anything is written)."""
    problem = memory_problem(
        spec.train,
        obs_actor_size=spec.obs_actor_size,
        obs_critic_size=spec.obs_critic_size,
        action_size=spec.action_size,
    )
    if problem is not None:
        raise KsimError(f"train: {problem.text}")


def _open_run_dir(spec: TaskSpec, plan: RunPlan) -> Path:
    """The run directory of `plan`: the existing one to resume, or a new one (created here, and only here)."""
    if plan.resume:
        if plan.run_dir is None:
            raise KsimError("resume needs the run directory to continue")
        run_path = Path(plan.run_dir)
        if not run_path.is_dir():
            raise KsimError(f"run directory {run_path} does not exist")
        return run_path
    if is_main_process():
        return create_run_dir(spec.task, root=plan.runs_root, path=plan.run_dir)
    # written by process 0 only
    return Path(plan.run_dir) if plan.run_dir is not None else Path(plan.runs_root) / spec.task


def train(
    spec: TaskSpec,
    kernels: ModuleType,
    *,
    model_path: str | Path,
    engine: str = "mjx",
    plan: RunPlan = RunPlan(),
    collector: Collector | None = None,
) -> TrainResult:
    """Train the task's policy with PPO, writing a run directory; see the module docstring.

    `plan.resume` continues the run in `plan.run_dir` from its newest checkpoint
    (the same task; `train` settings such as `steps` may differ). `collector`
    replaces the engine's default collector (tests, custom engines). The task's
    settings are valid by construction (ksimdsl.settings); what depends on the
    machine (memory) is checked before the run directory is created.

    In a multi-process run (`ksimdsl.runtime.training.sharding.init_distributed`) every
    process calls `train` alike; only the main process creates and writes the
    run directory (pass the same `run_dir` to all of them: a resume reads it
    everywhere, so it must lie on a shared file system).
    """
    check_resources(spec)
    main = is_main_process()
    model_text = model_xml(spec, model_path) if main else None  # before the run directory: a bad model leaves none
    run_path = _open_run_dir(spec, plan)
    # one writer per run directory, for the whole run (a second `train` gets the holder's PID)
    with run_lock(run_path) if main else nullcontext():
        if main:
            _claim_run_dir(run_path, plan)
        hook = plan.make_hook(run_path) if plan.make_hook is not None and main else None
        ctx = RunContext(run_dir=run_path, engine=engine, plan=plan, on_iteration=hook, model_xml=model_text)
        if main:
            print(f"run directory: {ctx.run_dir}", flush=True)
        if collector is None:
            collector = make_collector(spec, kernels, model_path, engine=engine, num_envs=spec.train.num_envs)
        return _run(spec, ctx, collector)


def _claim_run_dir(run_path: Path, plan: RunPlan) -> None:
    """Under the lock: refuse a directory that holds another run; tidy what a killed run left.

    A new run may use an empty directory or one whose run stopped before its first checkpoint
    (it starts over there); temporary files of a checkpoint write that was killed are removed.
    """
    if not plan.resume and plan.run_dir is not None and not reusable(run_path):
        raise KsimError(
            f"run directory {run_path} already exists and is not empty (use --resume to continue it)"
        )
    remove_temporary_files(run_path)
    if latest_checkpoint(run_path) is None:
        # nothing to continue from: the TensorBoard events of a run that died early would only mislead
        shutil.rmtree(run_path / TENSORBOARD_DIR, ignore_errors=True)


def _run(spec: TaskSpec, ctx: RunContext, collector: Collector) -> TrainResult:
    config: TrainSettings = spec.train
    plan = ctx.plan
    session_start = time.monotonic()
    main = is_main_process()  # the one process (of a multi-process run) that writes anything
    mesh = EnvMesh.for_collector(collector, devices=config.devices, num_envs=config.num_envs)
    k_ppo, k_env, base_key = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    ppo_state = ppo.init_ppo_from_spec(spec, key=k_ppo)
    if mesh is None:
        collector_state = collector.init_for(ppo_state, key=k_env)
    else:
        collector_state = mesh.init_collector(collector, ppo_state, key=k_env)
    iteration, env_steps, wall_offset = 0, 0, 0.0
    if plan.resume and latest_checkpoint(ctx.run_dir) is None:
        if main:
            print(f"no checkpoint in {ctx.run_dir} yet (its run stopped before the first): starting at iteration 0", flush=True)
    elif plan.resume:
        ckpt = load_checkpoint(
            ctx.run_dir, {"ppo": ppo_state, "collector": collector.to_checkpoint(collector_state)}, spec=spec
        )
        ppo_state = ckpt.trees["ppo"]
        collector_state = collector.from_checkpoint(collector_state, ckpt.trees["collector"])
        iteration, env_steps, wall_offset = ckpt.meta.iteration, ckpt.meta.env_steps, ckpt.meta.wall_s
        if main:
            print(f"resuming from {ckpt.path.name} (iteration {iteration}, {env_steps:,} env steps)", flush=True)
    if main:
        write_run_files(
            ctx.run_dir,
            spec,
            engine=ctx.engine,
            task_text=plan.task_text,
            generated_sources=plan.generated_sources,
            model_xml=ctx.model_xml,
            extra={**plan.extra, **({"resumed_from_iteration": iteration} if plan.resume else {})},
        )

    def checkpoint(wall_s: float) -> Path | None:
        """Every process calls this (gathering the shards is collective); the main process writes."""
        meta = CheckpointMeta(
            iteration=iteration,
            env_steps=env_steps,
            wall_s=wall_s,
            task=spec.task,
            spec_hash=spec_hash(spec),
            engine=ctx.engine,
        )
        trees = {"ppo": ppo_state, "collector": collector.to_checkpoint(collector_state)}
        if mesh is not None:
            trees = mesh.to_host(trees)
        return save_checkpoint(ctx.run_dir, trees, meta) if main else None

    def iteration_key(i: int) -> jax.Array:
        key = jax.random.fold_in(base_key, i)
        return key if mesh is None else mesh.replicate(key)

    if mesh is None:
        # donated buffers must be distinct: eager initialization may share one buffer between leaves
        ppo_state = jax.tree.map(lambda x: jnp.array(x, copy=True), ppo_state)
        train_step = _make_train_step(collector)
    else:
        # on the mesh, in fresh buffers: PPO state replicated, environments split over the devices
        ppo_state = mesh.replicate(ppo_state)
        collector_state = mesh.place(collector_state, mesh.collector_shardings(collector_state))
        train_step = _make_train_step(collector, mesh, mesh.step_shardings(ppo_state, collector_state))
    watchdog = Watchdog(config.watchdog_s)
    metrics_log = MetricsLog(ctx.run_dir, start_after=iteration if plan.resume else 0) if main else None
    on_iteration = ctx.on_iteration if main else None
    limit = config.iteration_limit  # None: until max_seconds
    bar = _Progress(plan.progress and main, limit, iteration, f"train {spec.task}")
    stop_reason = "steps"
    skipped = _SkippedUpdates(spec)
    last_metrics: dict[str, Any] | None = None
    last_return: float | None = None
    ckpt_path: Path | None = None
    stop_signal: str | None = None
    steps_per_iteration = config.num_envs * config.rollout
    try:
        with StopFlag().installed() as stop:
            if collector.jittable and (limit is None or iteration < limit):
                with watchdog.watch("compiling the training step"):
                    train_step = train_step.lower(ppo_state, collector_state, iteration_key(iteration)).compile()
            while limit is None or iteration < limit:
                request = None
                if stop.requested:
                    request = "interrupted"
                    stop_signal = stop.signal_name
                elif config.max_seconds > 0 and time.monotonic() - session_start >= config.max_seconds:
                    request = "max_seconds"
                if mesh is not None:  # processes see different clocks and signals: the main process decides
                    request = _STOP_REQUESTS[mesh.decide(_STOP_REQUESTS.index(request))]
                if request is not None:
                    stop_reason = request
                    break
                t0 = time.monotonic()
                key = iteration_key(iteration)
                with watchdog.watch(f"training iteration {iteration + 1} (jax/MJX step)"):
                    ppo_state, collector_state, stats, update_metrics = train_step(ppo_state, collector_state, key)
                    stats, update_metrics = jax.device_get((stats, update_metrics))
                iteration += 1
                env_steps += steps_per_iteration
                dt = time.monotonic() - t0
                wall_s = wall_offset + time.monotonic() - session_start
                record = {"iteration": iteration, "env_steps": env_steps, "wall_s": wall_s, "iteration_s": dt}
                record["sps"] = steps_per_iteration / dt if dt > 0 else math.inf
                record.update(iteration_metrics(spec, stats, update_metrics))
                if metrics_log is not None:
                    metrics_log.write(record)
                last_metrics = record
                if record["episode_return"] is not None:
                    last_return = record["episode_return"]
                bar.update(iteration, record, last_return)
                if on_iteration is not None:
                    on_iteration(_local(mesh, ppo_state), iteration=iteration, final=False)
                skipped.record(update_metrics, record)
                if config.checkpoint_every > 0 and iteration % config.checkpoint_every == 0 and iteration != limit:
                    ckpt_path = checkpoint(wall_s)
            ckpt_path = checkpoint(wall_offset + time.monotonic() - session_start)
            if on_iteration is not None:
                on_iteration(_local(mesh, ppo_state), iteration=iteration, final=True)
    finally:
        bar.close()
        if metrics_log is not None:
            metrics_log.close()
        watchdog.close()
    if stop_reason == "interrupted" and main:
        print(f"interrupted ({stop_signal or 'SIGINT'}); checkpoint written to {ckpt_path}", flush=True)
    elif stop_reason == "max_seconds" and main:
        print(f"stopped after max_seconds={config.max_seconds:g}; checkpoint written to {ckpt_path}", flush=True)
    return TrainResult(
        run_dir=ctx.run_dir,
        iterations=iteration,
        env_steps=env_steps,
        wall_s=wall_offset + time.monotonic() - session_start,
        stop_reason=stop_reason,
        checkpoint=ckpt_path,
        last_metrics=last_metrics,
    )
