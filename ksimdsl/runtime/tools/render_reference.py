"""`ksimdsl render --reference`: the policy's rollout and the reference clip side by side.

    frames = side_by_side(spec, model_path, rollout, motion, config)   # (F, H, 2 W, 3)

Each frame is two renders of the task's model, hstacked: left, the recorded
state of the policy's rollout (`render.render_frames`, with its usual overlay
under a "policy" line); right, the reference clip's pose at the same reference
phase. The phase is the one the kernels read `ref.*` at (docs/motions.md
"ref.*"): the episode's start position `ref.start` (kernel memory, recorded
with every state) plus the episode time times the clip's fps, wrapped (`loop`)
or held at the last frame (`clamp`); the pose is the linear interpolation
between the two frames around it, quaternions normalized, written into qpos
and `mj_forward`ed. Both halves use the same camera settings (tracking the
root body, or `--camera`), so the clip's root moves on the right as the
policy's does on the left.

`ReferenceMotion` is the plain data the runtime needs of the task's
`reference` statement (the clip in the model's qpos order); `ksimdsl.session`
builds it from the checked task, so the runtime never sees the compiler.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ksimdsl.abi import TaskSpec
from ksimdsl.errors import KsimError
from ksimdsl.model.motion import interpolate_frames
from ksimdsl.runtime.tools.render import RenderConfig, Rollout, render_frames

__all__ = ["ReferenceMotion", "REF_START_SLOT", "reference_motion", "reference_rollout", "side_by_side", "no_reference"]

#: The kernel memory slot holding an episode's start position in the clip (frames).
REF_START_SLOT = "ref.start"


@dataclass(frozen=True, eq=False)
class ReferenceMotion:
    """A task's reference clip: qpos_FQ in the model's order, `fps`, `loop` (else clamp at the last
    frame), and the qpos addresses of its quaternions (normalized after interpolation)."""

    qpos_FQ: np.ndarray
    fps: float
    loop: bool
    quat_adr: tuple[int, ...] = ()

    @property
    def last(self) -> int:
        """The last frame's index, F - 1: positions run over [0, last]."""
        return int(self.qpos_FQ.shape[0]) - 1

    def position(self, start_T: np.ndarray, time_T: np.ndarray) -> np.ndarray:
        """start + time * fps, wrapped into [0, last) (loop) or held at last (clamp); not finite: 0."""
        L = self.last
        p_T = np.asarray(start_T, np.float64) + np.asarray(time_T, np.float64) * self.fps
        if self.loop:
            p_T = p_T - L * np.floor(p_T / L)
        p_T = np.where(p_T > L, float(L), p_T)
        return np.where(np.isfinite(p_T) & (p_T >= 0), p_T, 0.0)

    def qpos_at(self, p_T: np.ndarray) -> np.ndarray:
        """The interpolated poses (T, nq) at positions p_T (in range, see `position`)."""
        return interpolate_frames(self.qpos_FQ, p_T, self.quat_adr)


def reference_motion(reference: Any) -> ReferenceMotion | None:
    """The `ReferenceMotion` of a checked task's `reference` (a `frontend.typed.ReferenceDef`; None: none)."""
    if reference is None:
        return None
    return ReferenceMotion(
        qpos_FQ=np.asarray(reference.qpos, np.float64),
        fps=float(reference.fps),
        loop=bool(reference.loop),
        quat_adr=tuple(int(a) for a in reference.quat_adr),
    )


def no_reference(spec: TaskSpec) -> KsimError:
    return KsimError(
        f"task '{spec.task}' has no `reference` statement: --reference renders the policy next to the "
        'reference clip it follows (add e.g. `reference "clips/walk.npz"`, docs/motions.md)'
    )


def _start_offset(spec: TaskSpec) -> int:
    for slot in spec.mem_layout:
        if slot["name"] == REF_START_SLOT:
            return int(slot["offset"])
    raise no_reference(spec)


def reference_rollout(spec: TaskSpec, rollout: Rollout, motion: ReferenceMotion) -> tuple[Rollout, np.ndarray]:
    """(the rollout with the reference's poses in place of the policy's, the phase_T in [0, 1])."""
    if rollout.mem_TM is None:
        raise KsimError("this rollout was recorded without the kernel memory: it has no reference phase")
    start_T = np.asarray(rollout.mem_TM, np.float64)[:, _start_offset(spec)]
    p_T = motion.position(start_T, rollout.time_T)
    return rollout._replace(qpos_TQ=motion.qpos_at(p_T)), p_T / motion.last


def side_by_side(
    spec: TaskSpec, model_path: str | Path, rollout: Rollout, motion: ReferenceMotion, config: RenderConfig
) -> np.ndarray:
    """Frames (F, H, 2 W, 3) uint8: the policy's states left, the reference at the same phase right."""
    _start_offset(spec)  # a task without a reference fails before anything renders
    ref, phase_T = reference_rollout(spec, rollout, motion)
    left = render_frames(
        spec, model_path, rollout, config, overlay=lambda t, text: ("policy\n" + text[0], "\n" + text[1])
    )
    right = render_frames(
        spec, model_path, ref, config, overlay=lambda t, text: ("reference\nphase", f"\n{phase_T[t]:.2f}")
    )
    return np.concatenate([left, right], axis=2)
