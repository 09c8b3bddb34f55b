"""What `ksimdsl view` does with a key, and what its overlay says, without a window.

`view.py` opens MuJoCo's viewer and forwards every key its callback receives to
`ViewerControls.on_key`; everything a key changes lives here, as plain data the
display loop reads (`take_requests`, `held`, `paused`, `speed`). The keys are
GLFW key codes, what `mujoco.viewer.launch_passive(key_callback=...)` passes:

    Space           pause / resume               N          one control step (pauses)
    R, Backspace    reset the episode            P          push the robot
    Up / Down       command x + / -              Left/Right command y + / -
    Q / E           command yaw + / -            +/-        faster / slower (x2, 1/16..16)
    Home / End      select a command field       PgUp/PgDn  selected field + / -
    Delete          release every command (the task samples them again)

Arrows and Q/E steer the task's velocity-style command: the first `command`
with an `x`, `y` or `yaw` field. Every field of every command is in the
on-screen list that Home/End select from. A command a key touched is *held*:
the viewer writes its values into the env before every step, so the task's own
resampling no longer changes it. Steps are a tenth of the field's sampled range
(`uniform(lo, hi)`; mean +- 2 std for `gaussian`), 0.1 when it has none.

`StepClock` turns wall-clock time into control steps (real time times the
speed); `EpisodeTracker` keeps the per-episode sums the overlay shows;
`overlay_texts` lays the overlay out in MuJoCo's four corners.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Sequence

import numpy as np

__all__ = [
    "KEY",
    "CommandField",
    "CommandControl",
    "TaskControls",
    "Requests",
    "ViewerControls",
    "StepClock",
    "EpisodeTracker",
    "Readout",
    "overlay_texts",
    "SPEEDS",
]

#: GLFW key codes of the keys the viewer uses.
KEY = {
    "space": 32,
    "minus": 45,
    "equal": 61,  # the "+" key (shift is not needed)
    "e": 69,
    "n": 78,
    "p": 80,
    "q": 81,
    "r": 82,
    "backspace": 259,
    "delete": 261,
    "right": 262,
    "left": 263,
    "down": 264,
    "up": 265,
    "page_up": 266,
    "page_down": 267,
    "home": 268,
    "end": 269,
    "kp_subtract": 333,
    "kp_add": 334,
}

#: Speeds the +/- keys step through (simulated seconds per wall-clock second).
SPEEDS = tuple(2.0**k for k in range(-4, 5))

#: Keys that steer the velocity-style command: key -> (field, direction).
_VELOCITY_KEYS = {
    KEY["up"]: ("x", 1.0),
    KEY["down"]: ("x", -1.0),
    KEY["left"]: ("y", 1.0),
    KEY["right"]: ("y", -1.0),
    KEY["q"]: ("yaw", 1.0),
    KEY["e"]: ("yaw", -1.0),
}
VELOCITY_FIELDS = ("x", "y", "yaw")


@dataclass(frozen=True)
class CommandField:
    """One field of a command and the range the task samples it from."""

    name: str
    low: float = 0.0
    high: float = 0.0

    @property
    def step(self) -> float:
        """How much one key press changes it: a tenth of its range, 0.1 without one."""
        span = self.high - self.low
        return span / 10.0 if span > 0 and math.isfinite(span) else 0.1


@dataclass(frozen=True)
class CommandControl:
    """A `command` of the task: its name (`cmd.NAME`) and fields, in the kernels' memory order."""

    name: str
    fields: tuple[CommandField, ...]

    def index(self, name: str) -> int | None:
        for i, f in enumerate(self.fields):
            if f.name == name:
                return i
        return None


@dataclass(frozen=True)
class TaskControls:
    """What of a task the viewer can steer: its commands and the event P fires (None: a fixed shove)."""

    commands: tuple[CommandControl, ...] = ()
    push_event: str | None = None

    @property
    def velocity(self) -> CommandControl | None:
        """The velocity-style command: the first with an x, y or yaw field."""
        for c in self.commands:
            if any(c.index(f) is not None for f in VELOCITY_FIELDS):
                return c
        return None

    @property
    def entries(self) -> tuple[tuple[CommandControl, int], ...]:
        """The on-screen list: every (command, field index)."""
        return tuple((c, i) for c in self.commands for i in range(len(c.fields)))


class Requests(NamedTuple):
    """What the keys asked for since the last `take_requests`: resets, pushes, single steps."""

    reset: bool
    push: int
    steps: int


@dataclass
class ViewerControls:
    """The viewer's interactive state; `on_key` applies one key (see the module docstring).

    `held` maps a command's name to the values the viewer holds it at; commands not in
    it follow the task's own sampling. `note` says what the last key did.
    """

    controls: TaskControls = field(default_factory=TaskControls)
    paused: bool = False
    speed: float = 1.0
    selected: int = 0
    held: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""
    _reset: bool = False
    _push: int = 0
    _steps: int = 0

    def on_key(self, key: int, current: Mapping[str, Sequence[float]] | None = None) -> bool:
        """Apply GLFW key `key`; `current` holds each command's present values (where a hold starts).

        Returns whether the key is one of the viewer's.
        """
        current = current or {}
        if key == KEY["space"]:
            self.paused = not self.paused
            self.note = "paused" if self.paused else "running"
        elif key == KEY["n"]:
            self.paused = True
            self._steps += 1
            self.note = "one step"
        elif key in (KEY["r"], KEY["backspace"]):
            self._reset = True
            self.note = "reset"
        elif key == KEY["p"]:
            self._push += 1
            self.note = "push"
        elif key in (KEY["equal"], KEY["kp_add"]):
            self._change_speed(+1)
        elif key in (KEY["minus"], KEY["kp_subtract"]):
            self._change_speed(-1)
        elif key in _VELOCITY_KEYS:
            name, direction = _VELOCITY_KEYS[key]
            command = self.controls.velocity
            index = command.index(name) if command is not None else None
            if command is None or index is None:
                self.note = f"the task has no command with a '{name}' field"
                return True
            self._nudge(command, index, direction, current)
        elif key in (KEY["home"], KEY["end"]):
            entries = self.controls.entries
            if entries:
                self.selected = (self.selected + (1 if key == KEY["end"] else -1)) % len(entries)
                command, index = entries[self.selected]
                self.note = f"selected cmd.{command.name}.{command.fields[index].name}"
        elif key in (KEY["page_up"], KEY["page_down"]):
            entries = self.controls.entries
            if not entries:
                self.note = "the task has no command"
                return True
            command, index = entries[self.selected % len(entries)]
            self._nudge(command, index, 1.0 if key == KEY["page_up"] else -1.0, current)
        elif key == KEY["delete"]:
            self.held.clear()
            self.note = "commands released: the task samples them"
        else:
            return False
        return True

    def take_requests(self) -> Requests:
        """The resets, pushes and single steps asked for since the last call (then cleared)."""
        requests = Requests(self._reset, self._push, self._steps)
        self._reset, self._push, self._steps = False, 0, 0
        return requests

    def _change_speed(self, direction: int) -> None:
        i = min(range(len(SPEEDS)), key=lambda k: abs(math.log2(SPEEDS[k]) - math.log2(self.speed)))
        self.speed = SPEEDS[max(0, min(len(SPEEDS) - 1, i + direction))]
        self.note = f"speed {format_speed(self.speed)}"

    def _nudge(
        self, command: CommandControl, index: int, direction: float, current: Mapping[str, Sequence[float]]
    ) -> None:
        values = self.held.get(command.name)
        if values is None:
            start = current.get(command.name)
            values = [float(v) for v in start] if start is not None else [0.0] * len(command.fields)
            self.held[command.name] = values
        f = command.fields[index]
        values[index] = round(values[index] + direction * f.step, 6)
        self.note = f"cmd.{command.name}.{f.name} = {values[index]:.3g}"
        entries = self.controls.entries
        for k, (c, i) in enumerate(entries):
            if c.name == command.name and i == index:
                self.selected = k


def format_speed(speed: float) -> str:
    return f"{speed:g}x" if speed >= 1 else f"1/{1 / speed:g}x"


class StepClock:
    """Control steps due as wall-clock time passes: simulated time = wall time x speed.

    When stepping cannot keep up, at most `max_steps` are due per call and the
    rest is dropped (the view runs slower than real time instead of falling behind).
    """

    def __init__(self, ctrl_dt: float, *, max_steps: int):
        self.ctrl_dt, self.max_steps = float(ctrl_dt), int(max_steps)
        self._owed = 0.0

    def due(self, wall_dt: float, speed: float) -> int:
        self._owed += max(0.0, wall_dt) * speed
        n = int(self._owed / self.ctrl_dt + 1e-9)
        self._owed -= n * self.ctrl_dt
        if n > self.max_steps:
            n, self._owed = self.max_steps, 0.0
        return n

    def hold(self) -> None:
        """Forget the time owed (while paused, or after a pause)."""
        self._owed = 0.0


class Readout(NamedTuple):
    """What the overlay shows about the episode (one env)."""

    task: str
    policy: str
    time_s: float
    episode: int  # 1-based
    episode_return: float
    last_return: float | None  # of the previous episode
    last_end: str  # why it ended ("" before the first)
    rewards: tuple[str, ...]
    reward_R: np.ndarray  # this step's weighted terms (weight * term)
    episode_reward_R: np.ndarray  # their sums over this episode
    terminations: tuple[str, ...]
    terminations_K: np.ndarray  # bool, this step's flags
    commands: Mapping[str, tuple[float, ...]]
    level: float
    push: str  # what P does


class EpisodeTracker:
    """Per-episode sums of the weighted reward terms, the episode count and how the last one ended."""

    def __init__(self, rewards: Sequence[str], terminations: Sequence[str]):
        self.rewards, self.terminations = tuple(rewards), tuple(terminations)
        self.episode = 1
        self.reward_R = np.zeros(len(self.rewards))
        self.sum_R = np.zeros(len(self.rewards))
        self.flags_K = np.zeros(len(self.terminations), bool)
        self.last_return: float | None = None
        self.last_end = ""

    def update(
        self, weighted_R: np.ndarray, flags_K: np.ndarray, *, done: bool, truncated: bool, episode_return: float
    ) -> None:
        """After one control step; `episode_return` is the episode's return (valid where done)."""
        self.reward_R = np.asarray(weighted_R, float)
        self.flags_K = np.asarray(flags_K, bool)
        self.sum_R = self.sum_R + self.reward_R
        if done:
            fired = [n for n, f in zip(self.terminations, self.flags_K) if f]
            self.last_end = ", ".join(fired) if fired else ("time limit" if truncated else "diverged")
            self.new_episode(float(episode_return))

    def new_episode(self, last_return: float | None = None) -> None:
        if last_return is not None:
            self.last_return = last_return
        self.episode += 1
        self.sum_R = np.zeros(len(self.rewards))

    def restart(self) -> None:
        """A reset by hand: a new episode, the last one's return unknown."""
        self.last_end = "reset"
        self.new_episode()


#: Where each block of the overlay goes (names of mujoco.mjtGridPos without the prefix).
TOP_LEFT, TOP_RIGHT, BOTTOM_LEFT, BOTTOM_RIGHT = "TOPLEFT", "TOPRIGHT", "BOTTOMLEFT", "BOTTOMRIGHT"

_HELP = (
    ("Space  N", "pause  one step"),
    ("R  P", "reset  push"),
    ("arrows  Q E", "command x y, yaw"),
    ("Home End  PgUp PgDn", "select, change a command"),
    ("Del  + -", "release commands, speed"),
)


def overlay_texts(readout: Readout, controls: ViewerControls, *, error: str = "") -> list[tuple[str, str, str]]:
    """The overlay: [(corner, left column, right column)], corners TOPLEFT, TOPRIGHT, BOTTOMLEFT, BOTTOMRIGHT."""
    r = readout
    status = "PAUSED" if controls.paused else "running"
    left = ["task", "policy", "time", "episode", "return", "speed"]
    right = [
        r.task,
        r.policy,
        f"{r.time_s:.2f} s",
        str(r.episode),
        f"{r.episode_return:.2f}",
        f"{format_speed(controls.speed)}  {status}",
    ]
    if r.last_return is not None or r.last_end:
        left.append("last episode")
        last = f"{r.last_return:.2f}" if r.last_return is not None else "-"
        right.append(f"{last} ({r.last_end})" if r.last_end else last)
    left += ["level", "P"]
    right += [f"{r.level:.2f}", r.push]
    if controls.note:
        left.append("key")
        right.append(controls.note)
    if error:
        left.append("error")
        right.append(_clip(error))
    texts = [(TOP_LEFT, "\n".join(left), "\n".join(right))]

    reward_left = ["reward (weighted)"] + list(r.rewards)
    reward_right = ["now    episode"] + [f"{v:+.4f}  {s:+.2f}" for v, s in zip(r.reward_R, r.episode_reward_R)]
    texts.append((TOP_RIGHT, "\n".join(reward_left), "\n".join(reward_right)))

    bottom_left, bottom_right = [], []
    for name, flag in zip(r.terminations, r.terminations_K):
        bottom_left.append(f"terminate {name}")
        bottom_right.append("FIRED" if flag else "-")
    entries = controls.controls.entries
    for k, (command, i) in enumerate(entries):
        value = r.commands.get(command.name, ())
        marker = "> " if k == controls.selected % len(entries) else "  "
        bottom_left.append(f"{marker}cmd.{command.name}.{command.fields[i].name}")
        held = " held" if command.name in controls.held else ""
        bottom_right.append((f"{value[i]:+.3f}" if i < len(value) else "?") + held)
    texts.append((BOTTOM_LEFT, "\n".join(bottom_left), "\n".join(bottom_right)))
    texts.append((BOTTOM_RIGHT, "\n".join(k for k, _ in _HELP), "\n".join(v for _, v in _HELP)))
    return texts


def _clip(text: str, width: int = 90) -> str:
    """The first line of `text`, at most `width` characters."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 3] + "..."
