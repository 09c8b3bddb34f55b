"""MJX's two implementations on one GPU: `physics impl=jax` vs `impl=warp`, end to end.

For each task and env count, in one run on one machine:

* env-steps/s of the whole training loop (rollout + PPO update; the median of
  the iterations after the first), for impl=jax and impl=warp;
* time to first iteration: from starting a fresh process (imports, compiling
  the task, building the envs, XLA and Warp compilation) to the end of the first
  training iteration; the JAX compilation cache is off, Warp's kernel cache is
  whatever the machine has (the first warp row of a fresh machine pays for the
  CUDA kernels; the table says which row that was);
* raw physics steps/s of `jit(vmap(mjx.step))` on the same batch (the engine's
  `physics_benchmark`: physics only, no kernels, no policy).

Every row (task, envs, impl) runs in a child process of its own (so each first
iteration is a cold start and GPU memory is returned between rows): it trains,
then times the physics alone. The table is printed row by row as results come
in, and again complete at the end. `--deadline-s` bounds the whole run: rows
that would start after it are listed as skipped, and a running row is stopped
`--grace-s` after it.

    python benchmarks/gpu_warp.py                          # walk.ksim (and a G1 task if there is one), 4096 and 8192 envs
    python benchmarks/gpu_warp.py --out results.md         # also write the table
    python benchmarks/gpu_warp.py --smoke                  # CPU smoke: cartpole, 4 envs, 2 iterations

On a fresh GPU machine: `pip install -c constraints.txt -e '.[warp]' 'jax[cuda12]==0.10.2'`
(the jax version of constraints.txt), then the first command; about 8 minutes on an H200.

Goal (README.md, "MJX implementations"): at least 1M env-steps/s end to end
for walk.ksim on one H100/H200-class GPU, first iteration under 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ROW_MARK = "GPU_WARP_ROW "


# --------------------------------------------------------------------------- one measurement (child process)


def _train_row(task_path: str, envs: int, impl: str, iterations: int, t0: float, row: dict[str, Any]) -> Any:
    """Train `iterations` iterations of `task_path` with `envs` envs on `impl` into `row`; `t0`: when the
    process was started. Returns the loaded task."""
    from ksimdsl.runtime.training.runs import read_metrics
    from ksimdsl.runtime.training.train import RunPlan, train
    from ksimdsl.session import load_task

    overrides = [
        f"num_envs={envs}",
        f"impl={impl}",
        "engine=mjx",
        f"steps={iterations}",
        "checkpoint_every=0",
        "devices=1",
        "video=false",
        "watchdog_s=0",
    ]
    task = load_task(task_path, overrides=overrides)
    done_at: dict[int, float] = {}

    def hook(_ppo_state: Any, *, iteration: int, final: bool) -> None:
        if not final:
            done_at[iteration] = time.time()

    with tempfile.TemporaryDirectory(prefix="gpu_warp_") as root:
        plan = RunPlan(runs_root=root, progress=False, make_hook=lambda _path: hook)
        result = train(task.spec, task.kernels, model_path=task.model_path, engine=task.engine, plan=plan)
        records = read_metrics(result.run_dir)
    sps = [float(r["sps"]) for r in records[1:]] or [float(records[0]["sps"])]
    row.update(
        impl=task.spec.physics.impl,
        first_iteration_s=done_at[1] - t0,
        env_steps_per_s=statistics.median(sps),
        steps_per_iteration=envs * task.spec.train.rollout,
        iterations=len(records),
    )
    return task


def _physics_row(task: Any, envs: int, repeats: int) -> dict[str, Any]:
    """Physics steps/s of `jit(vmap(mjx.step))` on `envs` reset states of `task` (a session.LoadedTask)."""
    from ksimdsl.runtime import engine as engines

    step = engines.get("mjx").physics_benchmark(task.spec, task.kernels, task.model_path, envs=envs, seed=0)
    step()  # compile
    step()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    return {"physics_steps_per_s": envs * repeats / (time.perf_counter() - t0)}


def _child(args: argparse.Namespace) -> int:
    row: dict[str, Any] = {"task": args.task, "envs": args.envs, "impl": args.impl}
    try:
        task = _train_row(args.task, args.envs, args.impl, args.iterations, args.t0, row)
        print(ROW_MARK + json.dumps(row), flush=True)  # the training numbers, should the physics row fail
        if not args.no_physics:
            row |= _physics_row(task, args.envs, args.repeats)
    except Exception as exc:  # reported in the table, the other rows go on
        row["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    print(ROW_MARK + json.dumps(row), flush=True)
    return 0


# --------------------------------------------------------------------------- the driver


def _device_name() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "no NVIDIA GPU (nvidia-smi not found)"


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for name in ("jax", "jaxlib", "mujoco-mjx", "warp-lang"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} -")
    return ", ".join(parts)


def _run_child(task: str, envs: int, impl: str, opts: argparse.Namespace, timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "--task", task, "--envs", str(envs), "--impl", impl,
           "--iterations", str(opts.iterations), "--repeats", str(opts.repeats), "--t0", repr(time.time())]
    cmd += ["--no-physics"] if opts.no_physics else []
    env = dict(os.environ, KSIMDSL_JAX_CACHE="0", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    row: dict[str, Any] = {"task": task, "envs": envs, "impl": impl}
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, timeout_s), env=env, cwd=REPO)
        stdout, problem = out.stdout, f"exit {out.returncode}: " + " ".join((out.stderr or out.stdout).split())[-300:]
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        problem = f"timed out after {timeout_s:.0f} s"
    rows = [json.loads(line[len(ROW_MARK):]) for line in stdout.splitlines() if line.startswith(ROW_MARK)]
    if rows and ("physics_steps_per_s" in rows[-1] or "error" in rows[-1] or opts.no_physics):
        return rows[-1]
    return (rows[-1] if rows else row) | {"error": problem}


def _fmt(x: Any, unit: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if unit == "M" and x >= 1e5:
            return f"{x / 1e6:.2f}M"
        return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"
    return str(x)


HEADER = (
    "| task | envs | impl | env-steps/s (train loop) | first iteration (s) | physics steps/s | note |\n"
    "|---|---|---|---|---|---|---|"
)


def _table_line(task: str, envs: int, impl: str, row: dict[str, Any]) -> str:
    notes = [n for n in (row.get("error"), row.get("note")) if n]
    return (
        f"| {Path(task).name} | {envs} | {row.get('impl', impl)} | {_fmt(row.get('env_steps_per_s'), 'M')} | "
        f"{_fmt(row.get('first_iteration_s'))} | {_fmt(row.get('physics_steps_per_s'), 'M')} | {'; '.join(notes)} |"
    )


def _default_tasks() -> list[str]:
    tasks = [str(REPO / "tasks" / "walk.ksim")]
    tasks += sorted(str(p) for p in (REPO / "tasks").glob("*g1*.ksim"))  # the G1 task, once it has landed
    return tasks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="*", default=None, help="task files (default: walk.ksim and any tasks/*g1*.ksim)")
    p.add_argument("--envs", nargs="*", type=int, default=[4096, 8192])
    p.add_argument("--impls", nargs="*", default=["jax", "warp"])
    p.add_argument("--iterations", type=int, default=4, help="training iterations per row (the first one compiles)")
    p.add_argument("--repeats", type=int, default=20, help="timed physics steps per physics row")
    p.add_argument("--deadline-s", type=float, default=400.0, help="start no row after this many seconds")
    p.add_argument("--no-physics", action="store_true", help="skip the raw physics rows")
    p.add_argument("--out", help="also write the final table (markdown) here")
    p.add_argument("--smoke", action="store_true", help="CPU smoke: tasks/cartpole.ksim, 4 envs, 2 iterations")
    p.add_argument("--grace-s", type=float, default=90.0, help="a row started before the deadline may run this much past it")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--task", help=argparse.SUPPRESS)
    p.add_argument("--impl", help=argparse.SUPPRESS)
    p.add_argument("--t0", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.envs = args.envs[0] if isinstance(args.envs, list) else args.envs
        return _child(args)
    if args.smoke:
        args.tasks, args.envs, args.iterations, args.repeats = [str(REPO / "tasks" / "cartpole.ksim")], [4], 2, 3
    tasks = args.tasks or _default_tasks()
    start = time.monotonic()
    title = f"GPU: {_device_name()}; {_versions()}; {args.iterations} iterations per row"
    print(title, flush=True)
    print(HEADER, flush=True)
    lines, first_warp = [], True
    for task in tasks:
        for envs in args.envs:
            for impl in args.impls:
                left = args.deadline_s - (time.monotonic() - start)
                if left <= 0:
                    row: dict[str, Any] = {"error": "skipped: past --deadline-s"}
                else:
                    row = _run_child(task, envs, impl, args, left + args.grace_s)
                    if impl == "warp" and first_warp and "env_steps_per_s" in row:
                        row["note"] = "first warp row: includes compiling Warp's kernels unless cached"
                        first_warp = False
                line = _table_line(task, envs, impl, row)
                lines.append(line)
                print(line, flush=True)
    table = "\n".join([title, "", HEADER, *lines])
    print(f"\ntotal {time.monotonic() - start:.0f} s\n\n{table}", flush=True)
    if args.out:
        Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
