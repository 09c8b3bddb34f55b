"""Training curves as PNG files, from the `metrics.jsonl` of one or more run directories.

    plot_run(run_dir)                        -> [RUN_DIR/plots/returns.png, ...]
    plot_runs([run_a, run_b], out_dir)       -> the same figures with one line per run

Figures (x axis: env steps), each written only when a run logged its metrics:

    returns.png        episode return, episode length, step reward, curriculum level
    rewards.png        one panel per reward term (weighted; raw value dashed on a second axis)
    terminations.png   one panel per termination rate, plus failure / success / truncation rates
    losses.png         PPO losses and diagnostics (ppo.METRICS)
    speed.png          env-steps/s and wall time

Plain matplotlib `Figure` objects with the Agg canvas: no pyplot global state,
no display needed, safe to call from a training loop.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ksimdsl.abi import PPO_METRICS
from ksimdsl.errors import KsimError
from ksimdsl.runtime.training.runs import METRICS_FILE, read_metrics

__all__ = ["plot_run", "plot_runs", "load_run_metrics", "PLOTS_DIR", "FIGURES"]

PLOTS_DIR = "plots"

#: PPO diagnostics shown in losses.png.
LOSS_KEYS = PPO_METRICS
RETURN_KEYS = ("episode_return", "episode_length", "reward", "level")
RATE_KEYS = ("failure_rate", "success_rate", "truncation_rate")
SPEED_KEYS = ("sps", "wall_s")
FIGURES = ("returns", "rewards", "terminations", "losses", "speed")
# x axis name -> (metrics key, label, scale)
X_AXES = {"steps": ("env_steps", "env steps", 1.0), "minutes": ("wall_s", "wall-clock minutes", 1.0 / 60.0)}


class _Run:
    """The records of one run, as columns: `series(key)` -> (env_steps, values) without missing points."""

    def __init__(self, label: str, records: list[dict[str, Any]]):
        self.label = label
        self.records = records

    def keys(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.records:
            seen.update(dict.fromkeys(r))
        return list(seen)

    def series(self, key: str, x: str = "steps") -> tuple[list[float], list[float]]:
        x_key, _, scale = X_AXES[x]
        xs, ys = [], []
        for r in self.records:
            value = r.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            xs.append(scale * float(r.get(x_key, r.get("iteration", len(xs)))))
            ys.append(float(value))
        return xs, ys


def load_run_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The metrics records of `run_dir`; a one-line KsimError when it is not a run or has none yet."""
    path = Path(run_dir)
    if not path.is_dir():
        raise KsimError(f"run directory {path} does not exist")
    if not (path / METRICS_FILE).is_file():
        raise KsimError(f"{path} is not a ksimdsl run directory (no {METRICS_FILE})")
    records = read_metrics(path)
    if not records:
        raise KsimError(f"run {path} has no metrics yet ({METRICS_FILE} is empty)")
    return records


def _labels(run_dirs: Sequence[Path]) -> list[str]:
    """Short, distinct labels: the last path component, or the last two (task/timestamp) when needed."""
    for depth in (1, 2, 3):
        labels = ["/".join(p.resolve().parts[-depth:]) for p in run_dirs]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in run_dirs]


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 3)
    return math.ceil(n / cols), cols


def smoothing_window(n: int) -> int:
    """Iterations averaged by the bold line of a panel: about 2% of the run, 1 for short runs."""
    return max(1, n // 50) if n >= 100 else 1


def running_mean(ys: Sequence[float], window: int) -> list[float]:
    """Trailing mean of the last `window` values (fewer at the start); NaNs are skipped."""
    out, acc, count, queue = [], 0.0, 0, []
    for y in ys:
        finite = y == y
        queue.append(y if finite else None)
        if finite:
            acc, count = acc + y, count + 1
        if len(queue) > window:
            old = queue.pop(0)
            if old is not None:
                acc, count = acc - old, count - 1
        out.append(acc / count if count else float("nan"))
    return out


def _panels(
    runs: Sequence[_Run], keys: Sequence[str], title: str, *, x: str = "steps", secondary: dict[str, str] | None = None
) -> Figure | None:
    """One panel per key that some run logged; one line per run, against `x` (a key of X_AXES).

    `secondary`: key -> key drawn dashed on a twin axis.
    """
    keys = [k for k in keys if any(run.series(k)[0] for run in runs)]
    if not keys:
        return None
    rows, cols = _grid(len(keys))
    fig = Figure(figsize=(4.2 * cols, 2.8 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(title)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for i, key in enumerate(keys):
        ax = fig.add_subplot(rows, cols, i + 1)
        twin = None
        for run, color in zip(runs, colors):
            xs, ys = run.series(key, x)
            if xs:
                window = smoothing_window(len(ys))
                if window > 1:  # the raw per-iteration values faint, their running mean on top
                    ax.plot(xs, ys, color=color, linewidth=0.6, alpha=0.25)
                    ax.plot(xs, running_mean(ys, window), color=color, label=run.label, linewidth=1.4)
                else:
                    ax.plot(xs, ys, color=color, label=run.label, linewidth=1.2)
            other = (secondary or {}).get(key)
            if other:
                xs2, ys2 = run.series(other, x)
                if xs2:
                    twin = twin or ax.twinx()
                    twin.plot(xs2, ys2, color=color, linestyle="--", linewidth=0.9, alpha=0.7)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel(X_AXES[x][1], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        if twin is not None:
            twin.set_ylabel("raw (dashed)", fontsize=7)
            twin.tick_params(labelsize=7)
    if len(runs) > 1:
        handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(runs), 4), fontsize=8)
    return fig


def _prefixed(runs: Iterable[_Run], prefix: str) -> list[str]:
    seen: dict[str, None] = {}
    for run in runs:
        seen.update(dict.fromkeys(k for k in run.keys() if k.startswith(prefix)))
    return list(seen)


def _figures(runs: Sequence[_Run], x: str) -> dict[str, Figure | None]:
    rewards = _prefixed(runs, "reward/")
    terminations = _prefixed(runs, "termination/")
    raw = {k: "reward_raw/" + k.split("/", 1)[1] for k in rewards}
    return {
        "returns": _panels(runs, RETURN_KEYS, "Episodes", x=x),
        "rewards": _panels(runs, rewards, "Reward terms per step (weighted; raw dashed)", x=x, secondary=raw),
        "terminations": _panels(runs, terminations + list(RATE_KEYS), "Terminations per episode", x=x),
        "losses": _panels(runs, LOSS_KEYS, "PPO", x=x),
        "speed": _panels(runs, SPEED_KEYS, "Speed", x=x),
    }


def plot_runs(run_dirs: Sequence[str | Path], out_dir: str | Path, *, x: str = "steps") -> list[Path]:
    """Overlay the metrics of `run_dirs` (one line each) against `x` ("steps": env steps, "minutes":
    wall-clock minutes) and write the PNGs into `out_dir`; returns their paths."""
    if not run_dirs:
        raise KsimError("plot needs at least one run directory")
    if x not in X_AXES:
        raise KsimError(f"plot: unknown x axis '{x}' (expected one of {', '.join(X_AXES)})")
    paths = [Path(p) for p in run_dirs]
    runs = [_Run(label, load_run_metrics(p)) for label, p in zip(_labels(paths), paths)]
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KsimError(f"cannot write plots to {out}: {exc.strerror or exc}") from None
    written = []
    for name, fig in _figures(runs, x).items():
        if fig is None:
            continue
        target = out / f"{name}.png"
        tmp = out / f".{name}.png.tmp"
        try:
            fig.savefig(tmp, dpi=100, format="png")
            tmp.replace(target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise KsimError(f"cannot write {target}: {exc.strerror or exc}") from None
        written.append(target)
    return written


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None, *, x: str = "steps") -> list[Path]:
    """The figures of one run, written to `out_dir` (default RUN_DIR/plots)."""
    return plot_runs([run_dir], Path(run_dir) / PLOTS_DIR if out_dir is None else out_dir, x=x)
