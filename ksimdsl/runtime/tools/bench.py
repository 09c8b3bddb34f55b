"""`ksimdsl bench`: how fast a task's generated kernels and environments run, measured in one process.

    report = bench_task(spec, model_path=..., variants=[KernelVariant("jax/cse", "jax", True, src), ...])
    print(format_report(report))

The compiler is not imported here (the runtime never imports sympy): the caller
compiles the task into the `KernelVariant`s to compare (JAX and numba, with and
without CSE). Measured on the same batch of E realistic states (E environments
of the C-MuJoCo engine after a few steps of random actions):

* kernel time per batch of every variant's `step`: JAX per call of `vmap(step)`
  inside a jitted loop that chains the calls as a rollout does (the time of
  one `jit(vmap(step))` call from Python, dispatch included, is reported
  too), numba as the batched kernel; the median of `repeats` after warm-up;
* the data-movement floor: a JAX `step` with the same inputs and outputs that
  only copies (`copy_floor`), timed like the kernels;
* JAX trace + XLA compile time of each JAX variant; numba compile time of
  each numba variant (a copy of the module with numba's on-disk cache off);
* any `baselines` (JAX functions with the kernel's `step` signature, e.g. the
  hand-written modular walk in benchmarks/) timed exactly like the JAX variants;
* one physics step of the batch (each engine's `physics_benchmark`):
  `jit(vmap(mjx.step))` on MJX, and E sequential `mj_step` calls on C MuJoCo;
* env-steps/s of each engine's whole control step (physics substeps, kernels,
  resets), and the seconds of its first call (on MJX: tracing and XLA
  compilation of the jitted step): the shared `ksimdsl.runtime.engine.loop.env_steps_per_s`.

Ratios between these numbers come from the same run on the same machine.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ksimdsl.abi import TaskSpec
from ksimdsl.errors import KsimError
from ksimdsl.runtime import engine as engines
from ksimdsl.runtime.engine.loop import env_steps_per_s
from ksimdsl.runtime.engine.mujoco.kernel_args import KernelArgs
from ksimdsl.runtime.loader import load_module

__all__ = [
    "KernelVariant",
    "BenchConfig",
    "StepInputs",
    "make_inputs",
    "numba_step_args",
    "bench_task",
    "format_report",
    "time_call",
    "copy_floor",
    "in_rollout",
]

FLOOR = "copy floor"


@dataclass(frozen=True)
class KernelVariant:
    """One generated module to measure: `name` as reported (e.g. "jax/cse"), its backend, CSE flag and source."""

    name: str
    backend: str  # "jax" | "numba"
    cse: bool
    source: str


@dataclass(frozen=True)
class BenchConfig:
    """envs: batch size E; repeats / warmup: timed and untimed calls per measurement;
    loop_calls: JAX kernel calls per timed jitted loop; env_steps: control steps per env-steps/s
    measurement; engines: which engines' env-steps/s to measure."""

    envs: int = 1024
    repeats: int = 20
    warmup: int = 3
    loop_calls: int = 20
    env_steps: int = 10
    engines: tuple[str, ...] = ("mjx", "mujoco")
    seed: int = 0

    def __post_init__(self) -> None:
        if self.envs < 1 or self.repeats < 1 or self.warmup < 0 or self.env_steps < 1 or self.loop_calls < 1:
            raise KsimError(f"bench: need envs, repeats, loop_calls, env_steps >= 1 and warmup >= 0 (got {self})")
        for name in self.engines:
            engines.backend_of(name)  # KsimError for an unknown engine


def time_call(fn: Callable[[], Any], *, repeats: int, warmup: int) -> float:
    """Median wall time (s) of `fn()` (which must block until its work is done) over `repeats` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@dataclass(frozen=True)
class StepInputs:
    """The `step` kernel's inputs for a batch of E envs, as float64 numpy arrays (numba's dtypes).

    phys: {name: (E, ...)} for every key of SPEC["phys_inputs"]; action_EA,
    level_E, mem_EM; rand_n_EN (normal) / rand_u_ED (uniform) drawn for the step phase.
    """

    phys: Mapping[str, np.ndarray]
    action_EA: np.ndarray
    level_E: np.ndarray
    mem_EM: np.ndarray
    rand_n_EN: np.ndarray
    rand_u_ED: np.ndarray

    def jax_args(self) -> tuple:
        """(phys, action, level, mem, rand_n, rand_u) as float32 device arrays, leading env axis."""
        f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
        phys = {k: f32(v) for k, v in self.phys.items()}
        return phys, f32(self.action_EA), f32(self.level_E), f32(self.mem_EM), f32(self.rand_n_EN), f32(self.rand_u_ED)


def make_inputs(
    spec: TaskSpec, numba_kernels: ModuleType, model_path: str | Path, *, envs: int, seed: int = 0
) -> StepInputs:
    """Realistic kernel inputs: E C-MuJoCo envs reset and stepped 5 times with uniform random actions."""
    from ksimdsl.runtime.engine.mujoco.env import MujocoEnv

    rng = np.random.default_rng(seed)
    env = MujocoEnv(spec, numba_kernels, model_path, num_envs=envs, seed=seed)
    try:
        env.reset_all()
        for _ in range(5):
            env.step(rng.uniform(-1.0, 1.0, (envs, spec.action_size)))
        action_EA = rng.uniform(-1.0, 1.0, (envs, spec.action_size))
        n, u = spec.rand["step"]
        return StepInputs(
            phys={k: np.array(env.phys[k]) for k in spec.phys_inputs},
            action_EA=action_EA,
            level_E=np.array(env.level_E),
            mem_EM=np.array(env.mem_EM),
            rand_n_EN=rng.standard_normal((envs, n)),
            rand_u_ED=rng.random((envs, u)),
        )
    finally:
        env.close()


# --------------------------------------------------------------------------- kernels


def in_rollout(step: Callable, calls: int) -> Callable:
    """jit of `calls` chained `vmap(step)` calls, as the kernel runs inside a rollout's `lax.scan`.

    Each call's qpos, qvel and memory outputs feed the next call, the other
    inputs are rolled along the env axis, and every output is carried out of
    the loop: nothing is loop-invariant or dead, and each call reads and writes
    what it would in a rollout. Dispatch overhead is paid once per `calls`.
    """
    vstep = jax.vmap(step)
    roll = lambda tree: jax.tree.map(lambda a: jnp.roll(a, 1, axis=0), tree)  # noqa: E731

    def run(phys, action, level, mem, rand_n, rand_u):
        shapes = jax.eval_shape(vstep, phys, action, level, mem, rand_n, rand_u)
        out0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        def body(_, carry):
            phys, action, level, mem, rand_n, rand_u, _ = carry
            out = vstep(phys, action, level, mem, rand_n, rand_u)
            phys = roll(phys) | {k: out[k] for k in ("qpos", "qvel") if k in out and k in phys}
            return (phys, roll(action), roll(level), out["mem"], roll(rand_n), roll(rand_u), out)

        return jax.lax.fori_loop(0, calls, body, (phys, action, level, mem, rand_n, rand_u, out0))[-1]

    return jax.jit(run)


def copy_floor(step: Callable, inputs: StepInputs) -> Callable:
    """A `step` with the same inputs and outputs that only moves data: every output is the
    concatenation of all inputs, tiled to its size (no arithmetic). Its time is the floor that
    any implementation of the kernel pays for reading and writing its arrays."""
    args1 = jax.tree.map(lambda a: a[0], inputs.jax_args())
    shapes = jax.eval_shape(step, *args1)

    def floor(phys, action, level, mem, rand_n, rand_u):
        leaves = jax.tree.leaves((phys, action, level, mem, rand_n, rand_u))
        flat = jnp.concatenate([jnp.ravel(x).astype(jnp.float32) for x in leaves])
        out = {}
        for key, s in shapes.items():
            tiled = jnp.resize(flat, s.shape)
            out[key] = tiled > 0 if s.dtype == jnp.bool_ else tiled.astype(s.dtype)
        return out

    return floor


def _bench_jax_step(step: Callable, inputs: StepInputs, config: BenchConfig) -> dict[str, float]:
    """{trace_s, compile_s (trace + XLA compile) of jit(vmap(step)), time_s (per call inside a jitted
    loop of `config.loop_calls` calls, see `in_rollout`), call_s (one jit(vmap(step)) call from Python,
    dispatch included)} on the batch.

    Compiled once: a second compile of the same program would hit JAX's in-memory cache.
    """
    args = inputs.jax_args()
    t0 = time.perf_counter()
    lowered = jax.jit(jax.vmap(step)).lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    call_s = time_call(lambda: jax.block_until_ready(compiled(*args)), repeats=config.repeats, warmup=config.warmup)
    looped = in_rollout(step, config.loop_calls).lower(*args).compile()
    loop_s = time_call(lambda: jax.block_until_ready(looped(*args)), repeats=config.repeats, warmup=config.warmup)
    return {"trace_s": t1 - t0, "compile_s": t2 - t0, "time_s": loop_s / config.loop_calls, "call_s": call_s}


def _uncached_numba_module(source: str, name: str) -> ModuleType:
    """The generated numba module with numba's on-disk cache off, so its first call really compiles.

    The generated source marks every kernel `@njit(cache=True...)` (see codegen);
    only the benchmark's compile-time measurement turns that off.
    """
    return load_module(source.replace("@njit(cache=True", "@njit(cache=False"), name)


def _numba_compile_s(kernels: ModuleType, spec: TaskSpec, inputs: StepInputs) -> float:
    """Seconds of the first call of `step` of an uncached module (numba compiles it there)."""
    args = numba_step_args(spec, inputs)
    t0 = time.perf_counter()
    kernels.step(*args)
    return time.perf_counter() - t0


def numba_step_args(spec: TaskSpec, inputs: StepInputs) -> list[np.ndarray]:
    """The numba `step` kernel's positional arguments for `inputs`, with fresh output arrays."""
    E = len(inputs.mem_EM)
    qpos, qvel = inputs.phys["qpos"], inputs.phys["qvel"]
    arrays = dict(inputs.phys) | {
        "action": inputs.action_EA,
        "level": inputs.level_E,
        "mem": inputs.mem_EM,
        "rand_n": inputs.rand_n_EN,
        "rand_u": inputs.rand_u_ED,
        "actor": np.zeros((E, spec.obs_actor_size), np.float32),
        "critic": np.zeros((E, spec.obs_critic_size), np.float32),
        "reward_terms": np.zeros((E, len(spec.rewards))),
        "reward_weights": np.zeros((E, len(spec.rewards))),
        "terminations": np.zeros((E, len(spec.terminations)), np.bool_),
        "metrics": np.zeros((E, len(spec.metrics))),
        "mem_out": np.zeros_like(inputs.mem_EM),
        "qpos_out": np.zeros_like(qpos),
        "qvel_out": np.zeros_like(qvel),
    }
    return KernelArgs(spec, "step").build(arrays)


def _bench_numba_step(
    kernels: ModuleType, uncached: ModuleType, spec: TaskSpec, inputs: StepInputs, config: BenchConfig
) -> dict[str, float]:
    """{compile_s (numba compile of `step`, no cache), time_s} of the batched numba step kernel."""
    compile_s = _numba_compile_s(uncached, spec, inputs)
    args = numba_step_args(spec, inputs)
    time_s = time_call(lambda: kernels.step(*args), repeats=config.repeats, warmup=max(1, config.warmup))
    return {"compile_s": compile_s, "time_s": time_s}


# --------------------------------------------------------------------------- the report


def _machine() -> dict[str, Any]:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    devices = jax.devices()
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": cores,
        "jax_device": f"{devices[0].platform}:{devices[0].device_kind}",
        "jax": jax.__version__,
    }


def bench_task(
    spec: TaskSpec,
    *,
    model_path: str | Path,
    variants: Sequence[KernelVariant],
    config: BenchConfig = BenchConfig(),
    baselines: Mapping[str, Callable] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure kernels, physics and envs (see the module docstring); returns a JSON-compatible report.

    `spec` is the task's spec (any variant's); every variant must be of the
    same task. At least one numba variant is needed (it provides the inputs and
    the C-MuJoCo engine); a JAX variant, for the MJX numbers.
    """
    say = progress or (lambda msg: None)
    modules = {v.name: load_module(v.source, f"bench_{spec.task}_{v.name}") for v in variants}
    specs = {v.name: TaskSpec.from_dict(modules[v.name].SPEC) for v in variants}
    for v in variants:
        if specs[v.name].task != spec.task:
            raise KsimError(f"bench: variant '{v.name}' is task '{specs[v.name].task}', not '{spec.task}'")
    numba_names = [v.name for v in variants if v.backend == "numba"]
    jax_names = [v.name for v in variants if v.backend == "jax"]
    if not numba_names:
        raise KsimError("bench needs a numba variant of the task (it drives the C-MuJoCo engine)")
    ref_numba = next((v.name for v in variants if v.backend == "numba" and v.cse), numba_names[0])
    ref_jax = next((v.name for v in variants if v.backend == "jax" and v.cse), jax_names[0] if jax_names else None)

    say(f"preparing {config.envs} states")
    inputs = make_inputs(specs[ref_numba], modules[ref_numba], model_path, envs=config.envs, seed=config.seed)

    kernels: dict[str, dict[str, Any]] = {}
    for v in variants:
        say(f"kernel {v.name}")
        vspec = specs[v.name]
        if v.backend == "jax":
            result = _bench_jax_step(modules[v.name].step, inputs, config)
        elif v.backend == "numba":
            uncached = _uncached_numba_module(v.source, f"bench_{spec.task}_{v.name}_uncached")
            result = _bench_numba_step(modules[v.name], uncached, vspec, inputs, config)
        else:
            raise KsimError(f"bench: unknown backend '{v.backend}' of variant '{v.name}'")
        ops = vspec.ops.get("step")
        kernels[v.name] = {"backend": v.backend, "cse": v.cse, "step_ops": list(ops) if ops else None, **result}
    for name, step in (baselines or {}).items():
        say(f"baseline {name}")
        kernels[name] = {"backend": "jax", "cse": None, "step_ops": None, "baseline": True}
        kernels[name].update(_bench_jax_step(step, inputs, config))
    if ref_jax is not None:
        say("data-movement floor")
        kernels[FLOOR] = {"backend": "jax", "cse": None, "step_ops": None, "baseline": True}
        kernels[FLOOR].update(_bench_jax_step(copy_floor(modules[ref_jax].step, inputs), inputs, config))

    physics: dict[str, float] = {}
    env_sps: dict[str, float] = {}
    first_step: dict[str, float] = {}
    refs = {"jax": ref_jax, "numba": ref_numba}
    for name in config.engines:
        eng = engines.get(name)
        ref = refs.get(eng.backend)
        if ref is None:
            continue
        say(f"{name} physics step")
        step = eng.physics_benchmark(specs[ref], modules[ref], model_path, envs=config.envs, seed=config.seed)
        physics[name] = time_call(step, repeats=max(3, config.repeats // 4), warmup=1)  # slow on a CPU
        say(f"{name} env steps")
        timing = env_steps_per_s(
            eng, specs[ref], modules[ref], model_path, envs=config.envs, steps=config.env_steps, seed=config.seed
        )
        env_sps[name], first_step[name] = timing.steps_per_s, timing.first_step_s

    return {
        "task": spec.task,
        "envs": config.envs,
        "substeps": spec.substeps,
        "machine": _machine(),
        "kernels": kernels,
        "physics_step_s": physics,
        "env_steps_per_s": env_sps,
        "env_first_step_s": first_step,
        "ratios": _ratios(kernels, physics, ref_jax, ref_numba, list(baselines or ())),
    }


def _ratios(
    kernels: Mapping[str, Mapping[str, Any]],
    physics: Mapping[str, float],
    ref_jax: str | None,
    ref_numba: str,
    baselines: Sequence[str],
) -> dict[str, float]:
    """Named ratios between the numbers of one report (< 1: the first is faster / smaller)."""
    out: dict[str, float] = {}
    for name, k in kernels.items():
        if k.get("baseline"):
            continue
        for engine in physics:
            if engines.backend_of(engine) == k["backend"]:
                out[f"{name} kernel / {engine} physics step"] = k["time_s"] / physics[engine]
        for base in baselines:
            out[f"{name} kernel / {base} kernel"] = k["time_s"] / kernels[base]["time_s"]
    for name, k in kernels.items():
        if FLOOR in kernels and k["backend"] == "jax" and name != FLOOR:
            out[f"{name} kernel / {FLOOR}"] = k["time_s"] / kernels[FLOOR]["time_s"]
    for backend in ("jax", "numba"):
        cse = next((n for n, k in kernels.items() if k["backend"] == backend and k["cse"] is True), None)
        plain = next((n for n, k in kernels.items() if k["backend"] == backend and k["cse"] is False), None)
        if cse and plain:
            out[f"{cse} / {plain} kernel time"] = kernels[cse]["time_s"] / kernels[plain]["time_s"]
            out[f"{cse} / {plain} compile time"] = kernels[cse]["compile_s"] / kernels[plain]["compile_s"]
    for base in baselines:
        if ref_jax is not None:
            out[f"{ref_jax} / {base} compile time"] = kernels[ref_jax]["compile_s"] / kernels[base]["compile_s"]
    return out


def _fmt_s(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def format_report(report: Mapping[str, Any]) -> str:
    """The report as Markdown tables (what README's figures are pasted from)."""
    m = report["machine"]
    lines = [
        f"### `{report['task']}`: {report['envs']} envs, {report['substeps']} physics substeps per control step",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, JAX {m['jax']} on {m['jax_device']}.",
        "",
        "| kernel | step ops (before -> after CSE) | time per batch | per env | one call from Python "
        "| trace + compile |",
        "|---|---|---|---|---|---|",
    ]
    for name, k in report["kernels"].items():
        ops = " -> ".join(str(o) for o in k["step_ops"]) if k.get("step_ops") else "-"
        compile_label = f"trace {_fmt_s(k['trace_s'])} + XLA" if "trace_s" in k else "numba, no cache"
        call = _fmt_s(k["call_s"]) if "call_s" in k else "-"
        lines.append(
            f"| {name} | {ops} | {_fmt_s(k['time_s'])} | {_fmt_s(k['time_s'] / report['envs'])} | {call} "
            f"| {_fmt_s(k['compile_s'])} ({compile_label}) |"
        )
    lines += [
        "",
        "| engine | one physics step of the batch | env-steps/s (whole control step) | first control step (compile) |",
        "|---|---|---|---|",
    ]
    for engine in dict.fromkeys([*report["physics_step_s"], *report["env_steps_per_s"]]):
        phys = report["physics_step_s"].get(engine)
        sps = report["env_steps_per_s"].get(engine)
        first = report.get("env_first_step_s", {}).get(engine)
        lines.append(
            f"| {engine} | {_fmt_s(phys) if phys else '-'} | {f'{sps:,.0f}' if sps else '-'} "
            f"| {_fmt_s(first) if first else '-'} |"
        )
    lines += ["", "| ratio (same run) | value |", "|---|---|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in report["ratios"].items()]
    return "\n".join(lines) + "\n"
