"""Reference motion clips: the `.npz` format (docs/motions.md), reading, writing and mapping onto a model.

    clip = load_clip("clips/walk.npz")                  # ClipError (a user-facing message) for a bad file
    save_clip("clips/walk.npz", clip)                   # atomically
    mapped = map_clip(clip, model)                      # the clip in the order of an MjModel's qpos / qvel
    mapped.qpos_FQ, mapped.qvel_FV, mapped.body_pos_F3(body_id)

A clip is F frames at `fps` frames per second:

* `qpos` [F, nq] float64: each frame's generalized positions;
* `fps` scalar;
* `joint_names` [J] str: the joints whose positions `qpos` holds, in its column order (the model's qpos
  order when `ksimdsl record` wrote it), the free joint included; each joint takes as many columns as its
  type has positions on the model it is mapped onto (free 7, ball 4, hinge and slide 1);
* optional `qvel` [F, nv]: velocities, the same joints in the same order (free 6, ball 3, hinge and slide 1);
* optional `body_names` [B] str + `body_pos` [F, B, 3]: world positions of those bodies.

Files are read with `np.load(allow_pickle=False)`: a clip holds plain arrays only, never Python objects.

`map_clip` matches the clip's joints to the model's by name: every joint of the model must be in the
clip and every joint of the clip in the model (a `ClipError` names the ones that are not, with a
did-you-mean). Quaternions (free and ball joints) are normalized and their signs made consistent from
frame to frame (q and -q are one rotation; interpolating between neighbours must take the short way).
A clip without `qvel` gets velocities by finite differences of `qpos` (`mj_differentiatePos`, forward
differences, the last frame repeating the one before); a body the clip has no positions for gets them
by forward kinematics of `qpos` on the model (`mj_kinematics`).

Nothing here imports lark, sympy or jax (both the checker and the runtime use it).
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ksimdsl.errors import did_you_mean

__all__ = [
    "interpolate_frames",
    "ClipError",
    "Clip",
    "MappedClip",
    "CLIP_KEYS",
    "load_clip",
    "save_clip",
    "map_clip",
    "model_joint_names",
    "model_body_names",
    "joint_widths",
]

#: Every array a clip file may hold; the first three are required.
CLIP_KEYS = ("qpos", "fps", "joint_names", "qvel", "body_names", "body_pos")

# mjtJoint values
_FREE, _BALL = 0, 1
_QPOS_WIDTH = {_FREE: 7, _BALL: 4}  # hinge and slide: 1
_QVEL_WIDTH = {_FREE: 6, _BALL: 3}
_PICKLED = "clip {path} holds Python objects (pickled arrays); a clip holds plain arrays only"
#: At most this many names are listed in one message.
_LISTED = 8


class ClipError(Exception):
    """A clip file that cannot be read, or does not fit a model (the message is user-facing)."""


@dataclass(frozen=True, eq=False)
class Clip:
    """A reference motion: F frames at `fps` (see the module docstring for the meaning of each array)."""

    qpos: np.ndarray  # (F, Q) float64
    fps: float
    joint_names: tuple[str, ...]
    qvel: np.ndarray | None = None  # (F, V) float64
    body_names: tuple[str, ...] = ()
    body_pos: np.ndarray | None = None  # (F, B, 3) float64

    @property
    def frames(self) -> int:
        return int(self.qpos.shape[0])

    @property
    def duration(self) -> float:
        """Seconds from the first frame to the last."""
        return (self.frames - 1) / self.fps


# --------------------------------------------------------------------------- reading and writing


def _floats(name: str, value: np.ndarray, ndim: int, where: str) -> np.ndarray:
    if value.dtype.kind not in "fiu" or value.ndim != ndim:
        want = {1: "a vector", 2: "a 2-D array", 3: "a 3-D array"}[ndim]
        raise ClipError(f"{where}: '{name}' must be {want} of numbers, got {value.dtype} of shape {value.shape}")
    out = np.asarray(value, np.float64)
    if not np.all(np.isfinite(out)):
        bad = np.argwhere(~np.isfinite(out))[0]
        raise ClipError(f"{where}: '{name}' has a value that is not finite (at index {tuple(int(i) for i in bad)})")
    return out


def _names(name: str, value: np.ndarray, where: str) -> tuple[str, ...]:
    if value.dtype.kind != "U" or value.ndim != 1:
        raise ClipError(f"{where}: '{name}' must be a vector of strings, got {value.dtype} of shape {value.shape}")
    names = tuple(str(v) for v in value)
    if any(not n for n in names):
        raise ClipError(f"{where}: '{name}' has an empty name (at index {names.index('')})")
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ClipError(f"{where}: '{name}' names '{n}' twice")
        seen.add(n)
    return names


def _read_arrays(path: str) -> dict[str, np.ndarray]:
    if not os.path.isfile(path):
        raise ClipError(f"clip file '{path}' not found" if not os.path.isdir(path) else f"clip '{path}' is a directory")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise ClipError(f"cannot read clip {path}: {exc.strerror or exc}") from None
    if magic.startswith(b"\x93NUMPY"):
        raise ClipError(f"clip {path} is a single .npy array, not an .npz archive of named arrays")
    if not magic.startswith(b"PK"):
        raise ClipError(f"clip {path} is not an .npz file (a zip archive of arrays, as numpy.savez writes)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ClipError(_PICKLED.format(path=path)) from None
        raise ClipError(f"clip {path} is not a readable .npz file ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ClipError(f"clip {path} is not a readable .npz file ({exc})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ClipError(f"clip {path} is a single .npy array, not an .npz archive of named arrays")
    try:
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    except ValueError as exc:  # an object array inside the archive
        if "allow_pickle" in str(exc):
            raise ClipError(_PICKLED.format(path=path)) from None
        raise ClipError(f"clip {path} is not a readable .npz file ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ClipError(f"clip {path} is not a readable .npz file ({exc})") from None


def load_clip(path: str | os.PathLike[str]) -> Clip:
    """Read and validate a clip file (`np.load(allow_pickle=False)`); a ClipError says what is wrong."""
    where = os.fspath(path)
    arrays = _read_arrays(where)
    for key in arrays:
        if key not in CLIP_KEYS:
            raise ClipError(
                f"{where}: unknown array '{key}'{did_you_mean(key, CLIP_KEYS)}; a clip holds {', '.join(CLIP_KEYS)}"
            )
    for key in CLIP_KEYS[:3]:
        if key not in arrays:
            raise ClipError(f"{where}: missing array '{key}' (a clip needs qpos, fps and joint_names)")
    qpos = _floats("qpos", arrays["qpos"], 2, where)
    frames = qpos.shape[0]
    if frames < 2:
        raise ClipError(f"{where}: a clip needs at least 2 frames, got {frames}")
    fps_array = arrays["fps"]
    if fps_array.size != 1 or fps_array.dtype.kind not in "fiu":
        raise ClipError(f"{where}: 'fps' must be one number, got {fps_array.dtype} of shape {fps_array.shape}")
    fps = float(fps_array.reshape(()))
    if not (math.isfinite(fps) and fps > 0):
        raise ClipError(f"{where}: 'fps' must be a positive number, got {fps:g}")
    joint_names = _names("joint_names", arrays["joint_names"], where)
    qvel = None
    if "qvel" in arrays:
        qvel = _floats("qvel", arrays["qvel"], 2, where)
        if qvel.shape[0] != frames:
            raise ClipError(f"{where}: 'qvel' has {qvel.shape[0]} frames, 'qpos' {frames}")
    body_names: tuple[str, ...] = ()
    body_pos = None
    if ("body_names" in arrays) != ("body_pos" in arrays):
        raise ClipError(f"{where}: 'body_names' and 'body_pos' come together (one is missing)")
    if "body_pos" in arrays:
        body_names = _names("body_names", arrays["body_names"], where)
        body_pos = _floats("body_pos", arrays["body_pos"], 3, where)
        if body_pos.shape != (frames, len(body_names), 3):
            raise ClipError(
                f"{where}: 'body_pos' must have shape (frames, bodies, 3) = ({frames}, {len(body_names)}, 3), "
                f"got {body_pos.shape}"
            )
    return Clip(qpos, fps, joint_names, qvel, body_names, body_pos)


def save_clip(path: str | os.PathLike[str], clip: Clip) -> Path:
    """Write `clip` as an .npz file (atomically: a temporary file renamed into place); OSError on failure."""
    out = Path(path)
    arrays: dict[str, Any] = {
        "qpos": np.asarray(clip.qpos, np.float64),
        "fps": np.asarray(clip.fps, np.float64),
        "joint_names": np.asarray(clip.joint_names, dtype=np.str_),
    }
    if clip.qvel is not None:
        arrays["qvel"] = np.asarray(clip.qvel, np.float64)
    if clip.body_pos is not None:
        arrays["body_names"] = np.asarray(clip.body_names, dtype=np.str_)
        arrays["body_pos"] = np.asarray(clip.body_pos, np.float64)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


# --------------------------------------------------------------------------- mapping onto a model


def model_joint_names(model: Any) -> tuple[str, ...]:
    """The names of an MjModel's joints (a ClipError for an unnamed or repeated one: clips name joints)."""
    names = tuple(model.joint(j).name for j in range(model.njnt))
    for j, name in enumerate(names):
        if not name:
            raise ClipError(f"joint {j} of the model has no name; a clip maps joints by name")
    return names


def model_body_names(model: Any) -> tuple[str, ...]:
    """The names of an MjModel's bodies ("" for an unnamed one)."""
    return tuple(model.body(b).name for b in range(model.nbody))


def joint_widths(model: Any) -> tuple[tuple[int, int], ...]:
    """(qpos width, qvel width) of each joint of an MjModel, by its type."""
    types = [int(t) for t in model.jnt_type]
    return tuple((_QPOS_WIDTH.get(t, 1), _QVEL_WIDTH.get(t, 1)) for t in types)


@dataclass(frozen=True, eq=False)
class MappedClip:
    """A clip in a model's order: `qpos_FQ` [F, nq], `qvel_FV` [F, nv] (given, else finite differences).

    `quat_adr` are the qpos addresses of the model's quaternions (free and ball joints), normalized and
    sign-consistent from frame to frame; `qvel_given` whether the clip had velocities.
    """

    clip: Clip
    model: Any = field(repr=False)
    qpos_FQ: np.ndarray
    qvel_FV: np.ndarray
    quat_adr: tuple[int, ...]
    qvel_given: bool
    _fk: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def frames(self) -> int:
        return self.clip.frames

    @property
    def fps(self) -> float:
        return self.clip.fps

    def body_pos_F3(self, body: int) -> np.ndarray:
        """World positions [F, 3] of the model's body `body`: the clip's, else by forward kinematics."""
        name = self.model.body(body).name
        if name and name in self.clip.body_names and self.clip.body_pos is not None:
            return self.clip.body_pos[:, self.clip.body_names.index(name)]
        if "xpos" not in self._fk:
            self._fk["xpos"] = _forward_kinematics(self.model, self.qpos_FQ)
        return self._fk["xpos"][:, body]

    def body_from_clip(self, body: int) -> bool:
        """Whether `body_pos_F3(body)` comes from the clip's own body positions."""
        name = self.model.body(body).name
        return bool(name) and name in self.clip.body_names


def _mismatch(missing: Sequence[str], extra: Sequence[str]) -> str:
    """`the model's joint 'a' (did you mean 'b'?) is not in the clip; the clip's joints ... are not in the model`."""

    def part(names: Sequence[str], others: Sequence[str], whose: str, where: str) -> str:
        hints = [f"'{n}'{did_you_mean(n, others)}" for n in names[:_LISTED]]
        more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
        one = len(names) == 1
        return f"{whose} joint{'' if one else 's'} {', '.join(hints)}{more} {'is' if one else 'are'} not in the {where}"

    parts = []
    if missing:
        parts.append(part(missing, extra, "the model's", "clip"))
    if extra:
        parts.append(part(extra, missing, "the clip's", "model"))
    return "; ".join(parts)


def _columns(names: Sequence[str], width: dict[str, int], total: int, what: str) -> dict[str, int]:
    """The first column of each joint in a clip array whose joints are `names` in order."""
    need = sum(width[n] for n in names)
    if need != total:
        raise ClipError(
            f"the clip's '{what}' has {total} columns, but its joints take {need} on this model "
            f"({'free 7, ball 4' if what == 'qpos' else 'free 6, ball 3'}, hinge and slide 1)"
        )
    out, col = {}, 0
    for n in names:
        out[n] = col
        col += width[n]
    return out


def map_clip(clip: Clip, model: Any) -> MappedClip:
    """`clip` in `model`'s qpos / qvel order (module docstring); a ClipError when its joints do not fit."""
    import mujoco

    names = model_joint_names(model)
    clip_set, model_set = set(clip.joint_names), set(names)
    missing = [n for n in names if n not in clip_set]
    extra = [n for n in clip.joint_names if n not in model_set]
    if missing or extra:
        raise ClipError(_mismatch(missing, extra))
    widths = dict(zip(names, joint_widths(model)))
    qpos_cols = _columns(clip.joint_names, {n: w[0] for n, w in widths.items()}, clip.qpos.shape[1], "qpos")
    F = clip.frames
    qpos_FQ = np.zeros((F, model.nq))
    qvel_FV = np.zeros((F, model.nv))
    quat_adr: list[int] = []
    for j, name in enumerate(names):
        adr, (wq, _) = int(model.jnt_qposadr[j]), widths[name]
        qpos_FQ[:, adr : adr + wq] = clip.qpos[:, qpos_cols[name] : qpos_cols[name] + wq]
        if wq >= 4:
            quat_adr.append(adr + wq - 4)
    for adr in quat_adr:
        qpos_FQ[:, adr : adr + 4] = _aligned_quats(qpos_FQ[:, adr : adr + 4], adr)
    if clip.qvel is not None:
        qvel_cols = _columns(clip.joint_names, {n: w[1] for n, w in widths.items()}, clip.qvel.shape[1], "qvel")
        for j, name in enumerate(names):
            adr, (_, wv) = int(model.jnt_dofadr[j]), widths[name]
            qvel_FV[:, adr : adr + wv] = clip.qvel[:, qvel_cols[name] : qvel_cols[name] + wv]
    else:
        for k in range(F - 1):
            mujoco.mj_differentiatePos(model, qvel_FV[k], 1.0 / clip.fps, qpos_FQ[k], qpos_FQ[k + 1])
        qvel_FV[F - 1] = qvel_FV[F - 2]
    return MappedClip(clip, model, qpos_FQ, qvel_FV, tuple(quat_adr), clip.qvel is not None)


def _aligned_quats(q_F4: np.ndarray, adr: int) -> np.ndarray:
    """Unit quaternions, each flipped to the side of the one before it."""
    norm = np.linalg.norm(q_F4, axis=1, keepdims=True)
    if np.any(norm < 1e-9):
        frame = int(np.flatnonzero(norm[:, 0] < 1e-9)[0])
        raise ClipError(f"the clip's qpos[{adr}:{adr + 4}] (a quaternion) is zero at frame {frame}")
    q = q_F4 / norm
    for k in range(1, len(q)):
        if np.dot(q[k], q[k - 1]) < 0:
            q[k] = -q[k]
    return q


def _forward_kinematics(model: Any, qpos_FQ: np.ndarray) -> np.ndarray:
    """World positions [F, nbody, 3] of every body, frame by frame (`mj_kinematics`)."""
    import mujoco

    data = mujoco.MjData(model)
    out = np.zeros((len(qpos_FQ), model.nbody, 3))
    for k, q in enumerate(qpos_FQ):
        data.qpos[:] = q
        mujoco.mj_kinematics(model, data)
        out[k] = data.xpos
    return out


def interpolate_frames(x_FD: np.ndarray, p_T: np.ndarray, quat_adr: Sequence[int] = ()) -> np.ndarray:
    """Rows of x_FD at fractional frame positions p_T in [0, F - 1]: the linear interpolation between
    the two frames around each (as `ref.*` reads a clip), the 4 columns at each of `quat_adr` normalized."""
    p_T = np.asarray(p_T, np.float64)
    i_T = np.minimum(np.floor(p_T).astype(np.int64), x_FD.shape[0] - 2)
    w_T1 = (p_T - i_T)[:, None]
    x_TD = x_FD[i_T] + w_T1 * (x_FD[i_T + 1] - x_FD[i_T])
    for a in quat_adr:
        q_T4 = x_TD[:, a : a + 4]
        x_TD[:, a : a + 4] = q_T4 / np.maximum(np.linalg.norm(q_T4, axis=1, keepdims=True), 1e-12)
    return x_TD
