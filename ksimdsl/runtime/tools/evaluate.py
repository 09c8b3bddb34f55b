"""`ksimdsl eval`: score the deterministic policy (the distribution's mode) of a run's latest checkpoint.

`evaluate` runs `episodes` environments side by side, each for exactly one
episode (it ends by a termination or the episode limit; the shared loop
`ksimdsl.runtime.engine.loop.run_episodes`, on the chosen engine), and reports
the returns and lengths of those episodes, the falls and the mean of every
`metric`.

`evaluate_commands` does the same with commands held fixed (`ksimdsl eval
--command vel=0.5,0,0 --command vel=0,0,0.5`): each command gets its own group
of `episodes` envs, all groups run in one batch, and each gets one report
{command, episodes, falls, mean_return, mean_length, metrics}. The command is
pinned in the kernels' memory for the whole episode (no resampling,
`ksimdsl.runtime.engine.pins`); `EvalOptions.events=False` switches every
`event` (pushes) off and `seconds` sets the episode limit.

The curriculum level: every eval env runs at one fixed level, `EvalOptions.level`
or, when that is None, the level the run had reached when its checkpoint was
written (the mean `level` logged for that iteration in metrics.jsonl; 0 for a
run that logged none). A task whose pushes grow with `level` is therefore
evaluated with the pushes it was trained to withstand; `--level 0` gives the
starting level. Every report says which level it ran at.

Definitions: a fall is an episode ended by a failure termination (or a NaN
reset) before the limit, never a truncation by time; a metric's value for one
episode is its sum over the episode's control steps divided by the episode's
length, and a report gives the mean of that over the episodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from ksimdsl.abi import TaskSpec
from ksimdsl.errors import Diagnostic, KsimError, Source, Span, did_you_mean
from ksimdsl.runtime import engine as engines
from ksimdsl.runtime.engine.base import EpisodeResults
from ksimdsl.runtime.engine.loop import run_episodes
from ksimdsl.runtime.engine.pins import MemPins
from ksimdsl.runtime.rl import ppo
from ksimdsl.runtime.training.checkpoint import load_checkpoint
from ksimdsl.runtime.training.runs import read_metrics
from ksimdsl.settings import CurriculumSettings

__all__ = [
    "evaluate",
    "evaluate_commands",
    "EvalOptions",
    "EvalCommand",
    "parse_commands",
    "run_episodes",
    "EpisodeResults",
]

_FLAG = "--command "


@dataclass(frozen=True)
class EvalCommand:
    """`--command NAME=v1,v2,...`: hold command NAME at these values for whole episodes."""

    name: str
    values: tuple[float, ...]

    def as_dict(self) -> dict[str, list[float]]:
        return {self.name: list(self.values)}


@dataclass(frozen=True)
class EvalOptions:
    """How `evaluate_commands` runs: envs per command, seed, episode limit in seconds (None: the task's),
    whether events (pushes) happen."""

    episodes: int = 10
    seed: int = 0
    seconds: float | None = None
    events: bool = True
    level: float | None = None  # None: the level the run reached (`trained_level`)


def trained_level(run_dir: str | Path, iteration: int) -> float:
    """The mean curriculum level the run logged for `iteration` (the newest record at or before it; 0 if none)."""
    level = 0.0
    for record in read_metrics(run_dir):
        if "level" in record and int(record.get("iteration", 0)) <= iteration:
            level = float(record["level"])
    return min(max(level, 0.0), 1.0)


def _level(options: EvalOptions, run_dir: str | Path, iteration: int) -> float:
    if options.level is None:
        return trained_level(run_dir, iteration)
    if not math.isfinite(options.level) or not 0.0 <= options.level <= 1.0:
        raise KsimError(f"--level must be a number in [0, 1] (or 'trained'), got {options.level:g}")
    return float(options.level)


def parse_commands(texts: Sequence[str], fields: Mapping[str, Sequence[str]]) -> tuple[EvalCommand, ...]:
    """The `--command` arguments; `fields` names each command's fields ({"vel": ("x", "y", "yaw")}).

    A KsimError with one positioned diagnostic per bad argument (the argument is quoted, a caret under
    the bad part: an unknown name with a did-you-mean, a value that is not a number, the wrong count).
    """
    out: list[EvalCommand] = []
    diagnostics: list[Diagnostic] = []
    for text in texts:
        parsed = _parse_command(text, fields)
        if isinstance(parsed, Diagnostic):
            diagnostics.append(parsed)
        else:
            out.append(parsed)
    if diagnostics:
        raise KsimError(diagnostics)
    return tuple(out)


def _parse_command(text: str, fields: Mapping[str, Sequence[str]]) -> EvalCommand | Diagnostic:
    source = Source("command line", _FLAG + text)
    col = len(_FLAG) + 1  # column of text[0]

    def error(start: int, width: int, message: str, *notes: str) -> Diagnostic:
        return Diagnostic(message, Span.point(1, col + start, max(1, width)), source, notes=notes)

    known = "; ".join(f"{n}={','.join(f)}" for n, f in fields.items()) or "none"
    name, sep, rest = text.partition("=")
    if not sep or not name.strip():
        return error(0, len(text), "expected --command NAME=v1,v2,... (for example vel=0.5,0,0)",
                     f"the task's commands: {known}")  # fmt: skip
    if name not in fields:
        return error(0, len(name), f"unknown command '{name}'{did_you_mean(name, fields)}",
                     f"the task's commands: {known}")  # fmt: skip
    names = tuple(fields[name])
    values: list[float] = []
    pos = len(name) + 1
    for part in rest.split(","):
        try:
            value = float(part)
        except ValueError:
            return error(pos, len(part), f"expected a number, got '{part}'" if part.strip() else "expected a number")
        if not math.isfinite(value):
            return error(pos, len(part), f"command values must be finite, got '{part}'")
        values.append(value)
        pos += len(part) + 1
    if len(values) != len(names):
        return error(len(name) + 1, len(rest), f"command '{name}' needs {len(names)} values ({', '.join(names)}), "
                     f"got {len(values)}")  # fmt: skip
    return EvalCommand(name, tuple(values))


def _episode_steps(spec: TaskSpec, seconds: float | None) -> int:
    if seconds is None:
        return spec.episode_steps
    if not math.isfinite(seconds) or seconds <= 0:
        raise KsimError(f"--seconds must be a positive number of seconds, got {seconds:g}")
    return max(1, round(seconds / spec.physics.ctrl_dt))


def _summary(spec: TaskSpec, results: EpisodeResults, envs: slice) -> dict[str, Any]:
    """{episodes, falls, mean_return, mean_length, metrics} of the episodes of `envs`."""
    returns = results.return_E[envs].astype(float)
    lengths = results.length_E[envs].astype(int)
    per_episode_JE = results.metric_sum_EJ[envs].astype(float).T / np.maximum(lengths, 1)
    return {
        "episodes": int(len(returns)),
        "falls": int(results.failure_E[envs].sum()),
        "mean_return": float(returns.mean()),
        "mean_length": float(lengths.mean()),
        "metrics": {name: float(per_episode_JE[j].mean()) for j, name in enumerate(spec.metrics)},
    }


def _run(
    spec: TaskSpec,
    kernels: ModuleType,
    *,
    model_path: str | Path,
    run_dir: str | Path,
    engine: str,
    options: EvalOptions,
    groups: Sequence[Mapping[str, Sequence[float]]],
) -> tuple[EpisodeResults, Any]:
    """One batch of `options.episodes` envs per group (each group's commands pinned): (results, meta)."""
    if options.episodes < 1:
        raise KsimError(f"--episodes must be at least 1, got {options.episodes}")
    steps = _episode_steps(spec, options.seconds)
    template = ppo.init_ppo_from_spec(spec, key=jax.random.PRNGKey(0))
    ckpt = load_checkpoint(run_dir, {"ppo": template}, spec=spec)  # the spec the run was trained with
    policy = ppo.make_policy(ckpt.trees["ppo"])
    commands_E = [g for g in groups for _ in range(options.episodes)]
    pins = MemPins.build(spec, commands_E, events=options.events)
    level = _level(options, run_dir, ckpt.meta.iteration)
    results = run_episodes(
        engines.get(engine),
        spec.with_overrides(episode_steps=steps, curriculum=CurriculumSettings(kind="constant", value=level)),
        kernels,
        model_path,
        policy,
        episodes=len(commands_E),
        seed=options.seed,
        pins=pins,
    )
    return results, EvalRun(ckpt.meta.iteration, ckpt.meta.env_steps, level)


@dataclass(frozen=True)
class EvalRun:
    """What an evaluation ran: the checkpoint's iteration and env steps, the curriculum level."""

    iteration: int
    env_steps: int
    level: float


def evaluate(
    spec: TaskSpec,
    kernels: ModuleType,
    *,
    model_path: str | Path,
    run_dir: str | Path,
    episodes: int = 10,
    engine: str = "mjx",
    seed: int = 0,
    seconds: float | None = None,
    events: bool = True,
    level: float | None = None,
) -> dict[str, Any]:
    """Load the newest checkpoint of `run_dir` and score its deterministic policy (commands sampled as in
    training).

    Returns {episodes, mean_return, std_return, min_return, max_return, mean_length,
    returns, lengths, terminations {name: count}, truncations, falls, metrics {name: mean},
    iteration, env_steps, engine, level}.
    """
    options = EvalOptions(episodes=episodes, seed=seed, seconds=seconds, events=events, level=level)
    results, meta = _run(
        spec, kernels, model_path=model_path, run_dir=run_dir, engine=engine, options=options, groups=[{}]
    )
    returns = results.return_E.astype(float)
    lengths = results.length_E.astype(int)
    summary = _summary(spec, results, slice(None))
    return {
        "episodes": int(episodes),
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "min_return": float(returns.min()),
        "max_return": float(returns.max()),
        "mean_length": float(lengths.mean()),
        "returns": [float(r) for r in returns],
        "lengths": [int(n) for n in lengths],
        "terminations": {name: int(results.termination_EK[:, k].sum()) for k, name in enumerate(spec.terminations)},
        "truncations": int(results.truncated_E.sum()),
        "falls": summary["falls"],
        "metrics": summary["metrics"],
        "iteration": meta.iteration,
        "env_steps": meta.env_steps,
        "engine": engine,
        "level": meta.level,
    }


def evaluate_commands(
    spec: TaskSpec,
    kernels: ModuleType,
    commands: Sequence[EvalCommand],
    *,
    model_path: str | Path,
    run_dir: str | Path,
    engine: str = "mjx",
    options: EvalOptions = EvalOptions(),
) -> list[dict[str, Any]]:
    """Score the run's deterministic policy with each command held fixed: one report per command,
    {command {name: values}, episodes, falls, mean_return, mean_length, metrics {name: mean}, level}."""
    if not commands:
        raise KsimError("evaluate_commands needs at least one command")
    results, run = _run(
        spec,
        kernels,
        model_path=model_path,
        run_dir=run_dir,
        engine=engine,
        options=options,
        groups=[{c.name: c.values} for c in commands],
    )
    n = options.episodes
    return [
        {"command": c.as_dict(), **_summary(spec, results, slice(i * n, (i + 1) * n)), "level": run.level}
        for i, c in enumerate(commands)
    ]
