"""Kernel memory the runtime holds fixed: evaluation with a fixed command, without events.

The generated kernels keep every command and every event timer in the per-env
memory `mem` (`SPEC["commands"]` gives each command's offset, `SPEC["mem_layout"]`
names the slots `cmd.NAME` and `event.NAME.timer`). A `MemPins` overwrites
chosen slots with constants right after every `reset` kernel (before `observe`
computes the first observation) and after every `step` kernel, on both engines
(`MjxEnv` and `MujocoEnv` take it as `pins=`). The kernels themselves are
unchanged; what they read from `mem` is the pinned value:

* a command pinned to a value: the kernel still resamples it, but the result is
  overwritten before anything reads it, so `cmd.NAME` (observations, rewards,
  metrics) holds the value for the whole episode;
* an event switched off: its timer is pinned at `EVENT_OFF_TIMER`; the kernel
  applies an event's writes only when the timer it reads has reached 1, so the
  event never fires (its interval draws are still consumed, and nothing else
  changes).

Pins are per env (a table of E rows), so one batch can evaluate several commands
side by side (`ksimdsl eval --command ... --command ...`):

    pins = MemPins.build(spec, [{"vel": (0.5, 0, 0)}] * 8 + [{"vel": (0, 0, 0.5)}] * 8, events=False)
    mem_EM = pins.apply(mem_EM, xp)                 # every env; jax.numpy: a new array, numpy: in place
    mem_M = pins.apply(mem_M, jnp, envs=e)          # one env's memory (inside a vmap, e traced)
    mem_KM = pins.apply(mem_KM, np, envs=idx_K)     # the envs being reset
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Mapping, Sequence

import numpy as np

from ksimdsl.abi import TaskSpec
from ksimdsl.errors import KsimError, did_you_mean

__all__ = ["MemPins", "EVENT_OFF_TIMER", "event_names"]

#: The value an event timer is held at to switch the event off (any value above 1 would do).
EVENT_OFF_TIMER = 1.0e6

_EVENT_PREFIX, _EVENT_SUFFIX = "event.", ".timer"


def event_names(spec: TaskSpec) -> tuple[str, ...]:
    """The task's events, from its memory layout (`event.NAME.timer`)."""
    return tuple(
        str(slot["name"])[len(_EVENT_PREFIX) : -len(_EVENT_SUFFIX)]
        for slot in spec.mem_layout
        if str(slot["name"]).startswith(_EVENT_PREFIX) and str(slot["name"]).endswith(_EVENT_SUFFIX)
    )


@dataclass(frozen=True, eq=False)
class MemPins:
    """Where `mask_EP` holds, `mem[e, offsets[p]] = values_EP[e, p]` after every reset and step kernel.

    The empty `MemPins()` pins nothing (any number of envs).
    """

    offsets: tuple[int, ...] = ()
    values_EP: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    mask_EP: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))

    @staticmethod
    def build(spec: TaskSpec, commands_E: Sequence[Mapping[str, Sequence[float]]], events: bool = True) -> "MemPins":
        """Pins for len(commands_E) envs: env e holds each command of `commands_E[e]` at its value (the
        others are sampled as usual); every env has every event switched off unless `events`.

        A KsimError for a command the task does not have or a value of the wrong size.
        """
        by_name = {str(c["name"]): c for c in spec.commands}
        columns: dict[int, int] = {}  # mem offset -> column p
        pinned: list[dict[int, float]] = []
        for commands in commands_E:
            row: dict[int, float] = {}
            for name, value in commands.items():
                if name not in by_name:
                    known = ", ".join(by_name) or "none"
                    raise KsimError(f"unknown command '{name}'{did_you_mean(name, by_name)} (the task's commands: {known})")
                size, offset = int(by_name[name]["size"]), int(by_name[name]["offset"])
                if len(value) != size:
                    raise KsimError(f"command '{name}' has {size} fields, got {len(value)} values")
                row.update((offset + i, float(v)) for i, v in enumerate(value))
            if not events:
                row.update((offset, EVENT_OFF_TIMER) for offset in _event_timer_offsets(spec))
            for offset in row:
                columns.setdefault(offset, len(columns))
            pinned.append(row)
        E, P = len(pinned), len(columns)
        values_EP = np.zeros((E, P), np.float32)
        mask_EP = np.zeros((E, P), bool)
        for e, row in enumerate(pinned):
            for offset, value in row.items():
                values_EP[e, columns[offset]] = value
                mask_EP[e, columns[offset]] = True
        return MemPins(tuple(columns), values_EP, mask_EP)

    def __bool__(self) -> bool:
        return bool(self.offsets)

    def check_envs(self, num_envs: int) -> None:
        """A KsimError unless these pins fit a batch of `num_envs` envs."""
        if self and self.values_EP.shape[0] != num_envs:
            raise KsimError(f"memory pins for {self.values_EP.shape[0]} envs given to a batch of {num_envs}")

    def apply(self, mem: Any, xp: ModuleType, envs: Any = None) -> Any:
        """`mem` with the pinned slots set: (E, M) for every env, or the rows `envs` of the pin table
        (an index: mem (M,); index array: mem (K, M)). A new array under jax.numpy, `mem` itself
        (changed in place) under numpy."""
        if not self.offsets:
            return mem
        idx = np.asarray(self.offsets, np.int64)
        values, mask = xp.asarray(self.values_EP), xp.asarray(self.mask_EP)
        if envs is not None:
            values, mask = values[envs], mask[envs]
        new = xp.where(mask, values.astype(mem.dtype), mem[..., idx])
        if xp is np:
            mem[..., idx] = new
            return mem
        return mem.at[..., idx].set(new)


def _event_timer_offsets(spec: TaskSpec) -> list[int]:
    timers = {str(s["name"]): int(s["offset"]) for s in spec.mem_layout}
    return [timers[f"{_EVENT_PREFIX}{name}{_EVENT_SUFFIX}"] for name in event_names(spec)]
