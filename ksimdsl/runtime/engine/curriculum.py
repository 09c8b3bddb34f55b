"""Curriculum levels: one level in [0, 1] per environment.

Shared by the MJX and the C-MuJoCo engine: every function takes the array
module as `xp` (`jax.numpy` inside jit, `numpy` on the host) and is otherwise
pure.

* `episode_length levels=L up=u down=d min_steps=m`: when an episode ends, an
  env that has spent at least m control steps at its current level moves one
  level (1/L) up if the episode lasted at least u * episode_steps, down if it
  lasted less than d * episode_steps.
* `linear step=s every=n`: every env's level is s * floor(iteration / n),
  clipped to [0, 1] (iteration = training iterations so far).
* `constant value=v`: always v.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Mapping

import jax.numpy as jnp

from ksimdsl.errors import KsimError

__all__ = ["Curriculum", "KINDS"]

KINDS = ("episode_length", "linear", "constant")


@dataclass(frozen=True)
class Curriculum:
    kind: str
    levels: int = 10
    up: float = 0.8
    down: float = 0.3
    min_steps: int = 0
    step: float = 0.0
    every: int = 1
    value: float = 1.0

    @staticmethod
    def from_spec(curriculum: Mapping[str, Any]) -> "Curriculum":
        kind = str(curriculum.get("kind", "constant"))
        if kind not in KINDS:
            raise KsimError(f"unknown curriculum '{kind}' (expected one of {', '.join(KINDS)})")
        if kind == "episode_length":
            return Curriculum(
                kind,
                levels=max(1, int(curriculum.get("levels", 10))),
                up=float(curriculum.get("up", 0.8)),
                down=float(curriculum.get("down", 0.3)),
                min_steps=int(curriculum.get("min_steps", 0)),
            )
        if kind == "linear":
            return Curriculum(kind, step=float(curriculum.get("step", 0.01)), every=max(1, int(curriculum.get("every", 1))))
        return Curriculum(kind, value=float(curriculum.get("value", 1.0)))

    @property
    def initial_level(self) -> float:
        return self.value if self.kind == "constant" else 0.0

    def at_iteration(self, level_E: Any, iteration: Any, *, xp: ModuleType = jnp) -> Any:
        """Levels at the start of training iteration `iteration` (only `linear` depends on it)."""
        if self.kind != "linear":
            return level_E
        level = xp.clip(self.step * (iteration // self.every), 0.0, 1.0)
        return xp.full_like(level_E, level)

    def on_step(
        self,
        level_E: Any,
        steps_at_level_E: Any,
        done_E: Any,
        episode_length_E: Any,
        episode_steps: int,
        *,
        xp: ModuleType = jnp,
    ) -> tuple[Any, Any]:
        """Update after one control step: (level_E, steps_at_level_E).

        `episode_length_E` is the length of the episode that just ended where `done_E`.
        """
        steps_at_level_E = steps_at_level_E + 1
        if self.kind != "episode_length":
            return level_E, steps_at_level_E
        frac_E = episode_length_E / float(episode_steps)
        ready_E = done_E & (steps_at_level_E >= self.min_steps)
        delta_E = xp.where(ready_E & (frac_E >= self.up), 1, 0) - xp.where(ready_E & (frac_E < self.down), 1, 0)
        index_E = xp.round(level_E * self.levels)
        new_level_E = (xp.clip(index_E + delta_E, 0, self.levels) / self.levels).astype(level_E.dtype)
        changed_E = new_level_E != level_E
        return new_level_E, xp.where(changed_E, 0, steps_at_level_E).astype(steps_at_level_E.dtype)
