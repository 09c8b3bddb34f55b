"""Names, sizes and defaults of an MJCF model, for the checker.

Loads the model with `mujoco.MjModel.from_xml_path` (never steps it) and
exposes what name resolution needs: the names of every joint, body, geom, site,
sensor and actuator, joint addresses, the root free joint and the default pose.
Loading is cached on (resolved path, modification time).

Model paths (`ksimdsl.model.sources`): relative to the task file's directory,
absolute, `pkg:PACKAGE/rel/path.xml` for a file shipped inside an installed
Python package (e.g. `pkg:mujoco/mjx/test_data/humanoid/humanoid.xml`), or
`menagerie:ROBOT/FILE.xml`. A task's model composition (`ksimdsl.model.compose`)
is applied before the names are read, so the checker sees the model that trains.
"""

from __future__ import annotations

import fnmatch
import functools
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ksimdsl.frontend.typed import FreeRoot
from ksimdsl.model.compose import ComposeError, Composition, compile_model, load_spec
from ksimdsl.model.sources import ModelLoadError, resolve_model_path

__all__ = [
    "ModelLoadError",
    "ModelInfo",
    "OBJECT_KINDS",
    "resolve_model_path",
    "load_model_info",
    "is_glob",
    "match_names",
]

# mjtJoint values
_FREE, _BALL, _SLIDE, _HINGE = 0, 1, 2, 3
# mjtTrn value for a joint transmission
_TRN_JOINT = 0

#: MjModel field-name prefix -> the kind of object its first axis counts.
OBJECT_KINDS: dict[str, str] = {
    "body_": "body",
    "jnt_": "joint",
    "dof_": "dof",
    "geom_": "geom",
    "site_": "site",
    "actuator_": "actuator",
    "sensor_": "sensor",
    "tendon_": "tendon",
}


def is_glob(pattern: str) -> bool:
    """True if `pattern` uses fnmatch wildcards."""
    return any(c in pattern for c in "*?[")


def match_names(pattern: str, names: tuple[str, ...]) -> tuple[int, ...]:
    """Indices of `names` matching `pattern` (exact name or fnmatch glob), in model order."""
    if not is_glob(pattern):
        return tuple(i for i, n in enumerate(names) if n == pattern)
    return tuple(i for i, n in enumerate(names) if n and fnmatch.fnmatchcase(n, pattern))


def _names(model: Any, kind: str, count: int) -> tuple[str, ...]:
    get = getattr(model, kind)
    return tuple(get(i).name for i in range(count))


@dataclass(frozen=True, eq=False)
class ModelInfo:
    """What the checker knows about a loaded model (read-only).

    `model` is the MjModel itself, used to validate `randomize` field names and
    shapes; nothing here steps physics.
    """

    path: str
    model: Any  # mujoco.MjModel
    joint_names: tuple[str, ...]
    body_names: tuple[str, ...]
    geom_names: tuple[str, ...]
    site_names: tuple[str, ...]
    sensor_names: tuple[str, ...]
    actuator_names: tuple[str, ...]
    tendon_names: tuple[str, ...]
    dof_names: tuple[str, ...]  # the joint name of each dof
    qpos_labels: tuple[str, ...]  # the joint name of each qpos element
    default_qpos: tuple[float, ...]  # keyframe 0 if any, else qpos0
    root: FreeRoot | None

    @property
    def nq(self) -> int:
        return int(self.model.nq)

    @property
    def nv(self) -> int:
        return int(self.model.nv)

    @property
    def nu(self) -> int:
        return int(self.model.nu)

    @property
    def nbody(self) -> int:
        return int(self.model.nbody)

    @functools.cached_property
    def hinge_slide_joints(self) -> tuple[int, ...]:
        """Ids of the 1-dof joints (hinge, slide): the elements of joint_pos / joint_vel."""
        jt = self.model.jnt_type
        return tuple(j for j in range(self.model.njnt) if int(jt[j]) in (_HINGE, _SLIDE))

    def jnt_qpos_adr(self, joint: int) -> int:
        return int(self.model.jnt_qposadr[joint])

    def jnt_dof_adr(self, joint: int) -> int:
        return int(self.model.jnt_dofadr[joint])

    def actuator_joint(self, actuator: int) -> int | None:
        """The joint an actuator drives, or None for other transmissions."""
        if int(self.model.actuator_trntype[actuator]) != _TRN_JOINT:
            return None
        return int(self.model.actuator_trnid[actuator][0])

    def body_geoms(self, body: int) -> tuple[int, ...]:
        return tuple(int(g) for g in np.flatnonzero(self.model.geom_bodyid == body))

    def names_of(self, kind: str) -> tuple[str, ...]:
        """Names of the objects of `kind` (a value of OBJECT_KINDS)."""
        return {
            "body": self.body_names,
            "joint": self.joint_names,
            "dof": self.dof_names,
            "geom": self.geom_names,
            "site": self.site_names,
            "actuator": self.actuator_names,
            "sensor": self.sensor_names,
            "tendon": self.tendon_names,
        }[kind]

    @functools.cached_property
    def array_fields(self) -> tuple[str, ...]:
        """Names of the MjModel attributes that are numpy arrays (randomizable fields)."""
        out = []
        for name in dir(self.model):
            if name.startswith("_"):
                continue
            try:
                value = getattr(self.model, name)
            except Exception:  # some properties raise on models without the feature
                continue
            if isinstance(value, np.ndarray):
                out.append(name)
        return tuple(out)


def _load(path: str, composition: Composition) -> ModelInfo:
    import mujoco  # local: only the checker needs it

    if composition.empty:
        try:
            model = mujoco.MjModel.from_xml_path(path)
        except Exception as e:  # mujoco raises ValueError with the XML error
            raise ModelLoadError(f"MuJoCo cannot load the model: {str(e).strip()}") from None
    else:
        try:
            model = compile_model(load_spec(path, composition))
        except ComposeError as e:
            raise ModelLoadError(str(e)) from None
    joint_names = _names(model, "joint", model.njnt)
    dof_names = tuple(joint_names[int(j)] for j in model.dof_jntid)
    qpos_labels = [""] * model.nq
    for j in range(model.njnt):
        adr = int(model.jnt_qposadr[j])
        width = {_FREE: 7, _BALL: 4}.get(int(model.jnt_type[j]), 1)
        for k in range(adr, adr + width):
            qpos_labels[k] = joint_names[j]
    default_qpos = model.key_qpos[0] if model.nkey > 0 else model.qpos0
    root = None
    for j in range(model.njnt):
        body = int(model.jnt_bodyid[j])
        if int(model.jnt_type[j]) == _FREE and int(model.body_parentid[body]) == 0:
            root = FreeRoot(
                joint_id=j,
                body_id=body,
                qpos_adr=int(model.jnt_qposadr[j]),
                dof_adr=int(model.jnt_dofadr[j]),
            )
            break
    return ModelInfo(
        path=path,
        model=model,
        joint_names=joint_names,
        body_names=_names(model, "body", model.nbody),
        geom_names=_names(model, "geom", model.ngeom),
        site_names=_names(model, "site", model.nsite),
        sensor_names=_names(model, "sensor", model.nsensor),
        actuator_names=_names(model, "actuator", model.nu),
        tendon_names=_names(model, "tendon", model.ntendon),
        dof_names=dof_names,
        qpos_labels=tuple(qpos_labels),
        default_qpos=tuple(float(x) for x in default_qpos),
        root=root,
    )


@functools.lru_cache(maxsize=16)
def _load_cached(path: str, mtime_ns: int, composition: Composition) -> ModelInfo:
    del mtime_ns  # part of the cache key only
    return _load(path, composition)


def load_model_info(resolved_path: str, composition: Composition | None = None) -> ModelInfo:
    """Load (or reuse) the model at an absolute path, composed; raises ModelLoadError."""
    try:
        mtime = os.stat(resolved_path).st_mtime_ns
    except OSError as e:
        raise ModelLoadError(f"cannot read model file {resolved_path}: {e.strerror}") from None
    return _load_cached(resolved_path, mtime, composition or Composition())
