"""The walking protocol: train a task for N minutes, evaluate it at fixed commands, print the table.

The measurement of the README's walking tables and of the walking goals
(issue "A humanoid that walks"), end to end through the CLI a user runs:

1. `ksimdsl train TASK max_seconds=60*M --run-dir RUN` (skipped with `--run RUN`,
   which evaluates an existing run directory instead);
2. `ksimdsl eval TASK --run RUN --episodes N --seconds S --no-events --json
   --command ...` at each command (default: 0.5 and 1.0 m/s forward, standing
   still, turning in place at 0.5 rad/s), the deterministic policy;
3. the same eval with events (pushes) on, at the trained curriculum level, at
   0.5 m/s forward;
4. a markdown table: falls, the task's forward_speed / lateral_speed /
   yaw_rate metrics, and whether each row meets its goal.

The goals (each row's last column): no falls without pushes, at most 2 of 16
with them; forward_speed within 20% of a forward command; |lateral_speed|
under 0.15 m/s; yaw_rate within 30% of a turning command; |forward_speed|
under 0.1 m/s when told to stand. A task without those metrics gets "-" in
their columns and only the falls goal.

    python benchmarks/walk_protocol.py tasks/walk.ksim --minutes 30
    python benchmarks/walk_protocol.py tasks/g1_walk.ksim --run runs/g1_walk/2026-12-03_07-00-00
    python benchmarks/walk_protocol.py tasks/go1_walk.ksim --run RUN --command vel=0.5,0,0 --command vel=0,0,0

Nothing here is timed against a threshold: the table is the result. Training
uses both cores; run it with nothing else running for figures comparable to
the README's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

DEFAULT_COMMANDS = ("vel=0.5,0,0", "vel=1.0,0,0", "vel=0,0,0", "vel=0,0,0.5")
PUSHED_COMMAND = "vel=0.5,0,0"
SPEED_TOLERANCE = 0.2  # forward_speed within 20% of the command
YAW_TOLERANCE = 0.3  # yaw_rate within 30% of the command
LATERAL_LIMIT = 0.15  # m/s
STAND_LIMIT = 0.1  # m/s
PUSHED_FALLS = 2  # of 16


@dataclass(frozen=True)
class Row:
    """One evaluated command: the eval report (`ksimdsl eval --json`, one line) and whether events were on."""

    report: dict[str, Any]
    events: bool


def goal_failures(row: Row) -> list[str]:
    """The goals this row misses (empty: it meets every goal that applies to its command)."""
    report, metrics = row.report, row.report.get("metrics", {})
    vx, vy, wz = (list(row.report["command"].values())[0] + [0.0, 0.0, 0.0])[:3]
    missed = []
    allowed_falls = round(PUSHED_FALLS * report["episodes"] / 16) if row.events else 0
    if report["falls"] > allowed_falls:
        missed.append(f"falls {report['falls']} > {allowed_falls}")
    forward, lateral, yaw = (metrics.get(k) for k in ("forward_speed", "lateral_speed", "yaw_rate"))
    if forward is not None and vx != 0 and abs(forward - vx) > SPEED_TOLERANCE * abs(vx):
        missed.append(f"forward {forward:.2f} not within {SPEED_TOLERANCE:.0%} of {vx:g}")
    if forward is not None and vx == vy == wz == 0 and abs(forward) >= STAND_LIMIT:
        missed.append(f"|forward| {abs(forward):.2f} >= {STAND_LIMIT}")
    if lateral is not None and vy == 0 and abs(lateral) >= LATERAL_LIMIT:
        missed.append(f"|lateral| {abs(lateral):.2f} >= {LATERAL_LIMIT}")
    if yaw is not None and wz != 0 and abs(yaw - wz) > YAW_TOLERANCE * abs(wz):
        missed.append(f"yaw {yaw:.2f} not within {YAW_TOLERANCE:.0%} of {wz:g}")
    return missed


def markdown_table(rows: Sequence[Row]) -> str:
    """The protocol's table, one line per row."""

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = [
        "| command | events (level) | falls | forward_speed | lateral_speed | yaw_rate | goal |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        report, metrics = row.report, row.report.get("metrics", {})
        command = ", ".join(f"{name}={','.join(f'{v:g}' for v in value)}" for name, value in report["command"].items())
        events = f"on ({report.get('level', 0.0):.2f})" if row.events else "off"
        missed = goal_failures(row)
        cells = [
            command,
            events,
            f"{report['falls']}/{report['episodes']}",
            num(metrics.get("forward_speed")),
            num(metrics.get("lateral_speed")),
            num(metrics.get("yaw_rate")),
            "met" if not missed else "missed: " + "; ".join(missed),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ksimdsl(*args: str, capture: bool = True) -> subprocess.CompletedProcess:
    """Run the ksimdsl CLI of this Python; `capture=False` lets it write to the terminal (training's progress)."""
    exe = Path(sys.executable).with_name("ksimdsl")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "ksimdsl"]
    return subprocess.run(argv + list(args), capture_output=capture, text=True)


def evaluate(task: str, run: Path, commands: Sequence[str], *, events: bool, opts: argparse.Namespace) -> list[Row]:
    args = ["eval", task, "--run", str(run), "--episodes", str(opts.episodes), "--seconds", str(opts.seconds), "--json"]
    args += [] if events else ["--no-events"]
    for command in commands:
        args += ["--command", command]
    proc = _ksimdsl(*args)
    if proc.returncode != 0:
        raise SystemExit(f"ksimdsl {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return [Row(report, events) for report in reports]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task", help="the task file (it must have a `command` the --command values name)")
    p.add_argument("--minutes", type=float, default=None, help="train this long first (default: the task's max_seconds)")
    p.add_argument("--run", type=Path, default=None, help="evaluate this run directory instead of training")
    p.add_argument("--run-dir", type=Path, default=None, help="where the training run goes (default: ksimdsl's)")
    p.add_argument("--command", dest="commands", action="append", default=[], metavar="NAME=v1,v2,...")
    p.add_argument("--pushed", default=PUSHED_COMMAND, help=f"command of the events-on row ('' for none; {PUSHED_COMMAND})")
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--out", type=Path, default=None, help="also write the table here")
    opts = p.parse_args(argv)

    run = opts.run
    if run is None:
        run = opts.run_dir or Path("runs") / Path(opts.task).stem / time.strftime("protocol_%Y-%m-%d_%H-%M-%S")
        train = ["train", opts.task, "--run-dir", str(run), "--no-progress"]
        if opts.minutes is not None:
            train.append(f"max_seconds={opts.minutes * 60:g}")
        print("$ ksimdsl " + " ".join(train), flush=True)
        started = time.monotonic()
        proc = _ksimdsl(*train, capture=False)  # its progress and errors go straight to the terminal
        if proc.returncode != 0:
            raise SystemExit(f"training failed (exit {proc.returncode})")
        print(f"trained in {(time.monotonic() - started) / 60:.1f} min: {run}", flush=True)

    rows = evaluate(opts.task, run, opts.commands or DEFAULT_COMMANDS, events=False, opts=opts)
    if opts.pushed:
        rows += evaluate(opts.task, run, [opts.pushed], events=True, opts=opts)
    table = markdown_table(rows)
    print(f"\n{opts.task}, run {run}, {opts.episodes} episodes of {opts.seconds:g} s per command:\n")
    print(table)
    if opts.out is not None:
        opts.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
