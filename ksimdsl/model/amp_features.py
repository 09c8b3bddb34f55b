"""AMP transition features phi(s) from qpos/qvel alone (the `amp` block, docs/motions.md "AMP").

A feature vector is a list of pieces, each plain data (it travels in SPEC["amp"]["features"]):

    {"kind": "qpos", "cols": [...]}                 qpos[cols]
    {"kind": "qvel", "cols": [...]}                 qvel[cols]
    {"kind": "rotate_inv", "quat": [a, a+1, a+2, a+3], "cols": [d, d+1, d+2]}
                                                    R(qpos[quat])^T qvel[cols]   (local_lin_vel)
    {"kind": "rotate", "quat": [...], "cols": [...]} R(qpos[quat]) qvel[cols]    (base_ang_vel)
    {"kind": "gravity", "quat": [...]}              R(qpos[quat])^T (0, 0, -1)   (projected_gravity)

each with an optional "select": indices into the piece's values (`base_pos.z`, `joint_pos["*knee*"]`).
`features(pieces, qpos_NQ, qvel_NV, xp)` evaluates them with numpy or jax.numpy (any leading axes), so
the compiler (the reference clip's frames) and the runtime (the simulated state) share one definition.
`resample_clip` puts a clip on the control period: transitions of the reference are then as far apart
in time as the policy's. This module imports neither the compiler nor JAX.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ksimdsl.model.motion import interpolate_frames

__all__ = ["features", "feature_size", "resample_clip"]


def _rotate(xp: Any, quat: Any, v: Any, inverse: bool) -> Any:
    """Rotate v (..., 3) by the unit quaternion quat (..., 4) (wxyz), or by its inverse."""
    w, u = quat[..., :1], quat[..., 1:]
    if inverse:
        u = -u
    t = 2.0 * xp.cross(u, v)
    return v + w * t + xp.cross(u, t)


def _piece(p: Mapping[str, Any], qpos: Any, qvel: Any, xp: Any) -> Any:
    kind = p["kind"]
    if kind == "qpos":
        out = qpos[..., list(p["cols"])]
    elif kind == "qvel":
        out = qvel[..., list(p["cols"])]
    else:
        quat = qpos[..., list(p["quat"])]
        quat = quat / xp.maximum(xp.linalg.norm(quat, axis=-1, keepdims=True), 1e-12)
        if kind == "gravity":
            v = xp.zeros(quat.shape[:-1] + (3,), quat.dtype) + xp.asarray([0.0, 0.0, -1.0], quat.dtype)
            out = _rotate(xp, quat, v, inverse=True)
        elif kind in ("rotate", "rotate_inv"):
            out = _rotate(xp, quat, qvel[..., list(p["cols"])].astype(quat.dtype), inverse=kind == "rotate_inv")
        else:
            raise ValueError(f"unknown AMP feature piece {kind!r}")
    select = p.get("select")
    return out if select is None else out[..., list(select)]


def piece_size(p: Mapping[str, Any]) -> int:
    if p.get("select") is not None:
        return len(p["select"])
    return 3 if p["kind"] in ("gravity", "rotate", "rotate_inv") else len(p["cols"])


def feature_size(pieces: Sequence[Mapping[str, Any]]) -> int:
    return sum(piece_size(p) for p in pieces)


def features(pieces: Sequence[Mapping[str, Any]], qpos_NQ: Any, qvel_NV: Any, xp: Any = np) -> Any:
    """phi (..., F) of states given by qpos (..., nq) and qvel (..., nv)."""
    if not pieces:
        return xp.zeros(qpos_NQ.shape[:-1] + (0,), qpos_NQ.dtype)
    return xp.concatenate([_piece(p, qpos_NQ, qvel_NV, xp) for p in pieces], axis=-1)


def resample_clip(
    qpos_FQ: np.ndarray, qvel_FV: np.ndarray, fps: float, dt: float, quat_adr: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """The clip at times 0, dt, 2 dt, ... up to its last frame: (qpos_KQ, qvel_KV), K >= 2.

    Linear interpolation between frames (as `ref.*` reads them); quaternions are normalized after it.
    """
    last = qpos_FQ.shape[0] - 1
    positions = np.arange(0.0, last + 1e-9, dt * fps)
    if positions.size < 2:
        positions = np.array([0.0, float(last)])
    qpos = interpolate_frames(qpos_FQ, positions, quat_adr)
    qvel = interpolate_frames(qvel_FV, positions)
    return qpos, qvel
