"""Curriculum levels: one level in [0, 1] per environment.

Shared by the MJX and the C-MuJoCo engine: every function takes the array
module as `xp` (`jax.numpy` inside jit, `numpy` on the host) and is otherwise
pure.

* `episode_length levels=L up=u down=d min_steps=m`: when an episode ends, an
  env that has spent at least m control steps at its current level moves one
  level (1/L) up if the episode lasted at least u * episode_steps, down if it
  lasted less than d * episode_steps.
* `distance levels=L up=u down=d min_steps=m`: when an episode ends, an env that
  has spent at least m control steps at its level moves one level up if its
  base travelled at least u (m, in the xy plane) from its spawn point, else
  down if the episode ended by a failure or it travelled less than d. The
  distance is the kernels' mem slot `curriculum.travelled` (ksimdsl.ir.spawn).
* `linear step=s every=n`: every env's level is s * floor(iteration / n),
  clipped to [0, 1] (iteration = training iterations so far).
* `constant value=v`: always v.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from types import ModuleType
from typing import Any, Mapping

import jax.numpy as jnp

from ksimdsl.settings import CURRICULUM_KINDS, CurriculumSettings

__all__ = ["Curriculum", "KINDS"]

KINDS = CURRICULUM_KINDS


@dataclass(frozen=True)
class Curriculum(CurriculumSettings):
    """The task's curriculum settings (`ksimdsl.settings.CurriculumSettings`) with the level updates."""

    @staticmethod
    def from_spec(curriculum: CurriculumSettings | Mapping[str, Any]) -> "Curriculum":
        if not isinstance(curriculum, CurriculumSettings):
            curriculum = CurriculumSettings.from_dict(curriculum)
        return Curriculum(**{f.name: getattr(curriculum, f.name) for f in fields(CurriculumSettings)})

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
        failure_E: Any = None,
        travelled_E: Any = None,
        xp: ModuleType = jnp,
    ) -> tuple[Any, Any]:
        """Update after one control step: (level_E, steps_at_level_E).

        `episode_length_E` is the length of the episode that just ended where `done_E`,
        `failure_E` whether it ended by a failure and `travelled_E` how far its base
        travelled from its spawn point (both read by `distance` only).
        """
        steps_at_level_E = steps_at_level_E + 1
        if self.kind not in ("episode_length", "distance"):
            return level_E, steps_at_level_E
        ready_E = done_E & (steps_at_level_E >= self.min_steps)
        if self.kind == "distance":
            up_E = travelled_E >= self.up_distance
            down_E = ~up_E & (failure_E | (travelled_E < self.down_distance))
        else:
            frac_E = episode_length_E / float(episode_steps)
            up_E, down_E = frac_E >= self.up, frac_E < self.down
        delta_E = xp.where(ready_E & up_E, 1, 0) - xp.where(ready_E & down_E, 1, 0)
        index_E = xp.round(level_E * self.levels)
        new_level_E = (xp.clip(index_E + delta_E, 0, self.levels) / self.levels).astype(level_E.dtype)
        changed_E = new_level_E != level_E
        return new_level_E, xp.where(changed_E, 0, steps_at_level_E).astype(steps_at_level_E.dtype)
