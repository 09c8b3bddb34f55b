"""Model composition: what a task adds to a bare MJCF model, applied with `mujoco.MjSpec`.

Robot descriptions usually come bare: no floor, no actuators, no keyframe. A
task's `model` block and `actuators ... joints=` describe what to add; the
checker resolves every glob against the model (errors at FILE:LINE:COL) and
produces a `Composition` of explicit names and numbers. That description is
stored in the generated module's SPEC as plain literals (`Composition.to_dict`),
and the runtime rebuilds the same model from it (`load_spec`), so the checker's
names and the trained model agree by construction.

The edits, in this order:

* `Floor`: a ground plane in the world body (with a checker material for videos);
* `Terrain` (ksimdsl.model.terrain): instead of a floor, a height field of tiles
  in the world body, the geom and its hfield both named `terrain`;
* `Motor`: a joint motor (gear 1, gain 1) per named joint, its force and ctrl limited
  to +-effort, and the joint's armature; `actuators position` then turns them into
  PD actuators like any MJCF motor (runtime/engine/model.py);
* `Imu`: gyro, accelerometer and orientation sensors `NAME_gyro`, `NAME_acc`,
  `NAME_quat` at a site (or at a site `NAME` added at a body's origin);
* `Collide`: only the named geoms collide, and only with the world (contype 0,
  conaffinity 1: no self collisions); every other geom of a moving body collides
  with nothing. Optional condim, friction, priority and contact softness (timeconst, dampratio,
  dmin, dmax) for the kept geoms;
* `Pose`: keyframe 0 (`ksim_pose`): qpos0 with the root's height and joint values set.

Asset directories are made absolute, so the composed model's XML (`to_xml`)
loads from anywhere (a run directory's model.xml) with the robot's own meshes.

This module imports mujoco only inside the functions that edit a spec, and
nothing from the rest of ksimdsl but `ksimdsl.model.terrain`: the checker and
the runtime both use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from ksimdsl.model.terrain import TERRAIN_NAME, Terrain, TerrainError, add_terrain

__all__ = [
    "ComposeError",
    "Floor",
    "Terrain",
    "Motor",
    "Imu",
    "Pose",
    "Collide",
    "Composition",
    "IMU_SENSORS",
    "POSE_KEY",
    "FLOOR_MATERIAL",
    "load_spec",
    "apply",
    "compile_model",
]

#: Sensor name suffix -> MuJoCo sensor type name (mjtSensor without the prefix), per IMU.
IMU_SENSORS: Mapping[str, str] = {"gyro": "GYRO", "acc": "ACCELEROMETER", "quat": "FRAMEQUAT"}
#: The name of the keyframe a `pose` defines (keyframe 0 of the composed model).
POSE_KEY = "ksim_pose"
#: The floor's material and texture.
FLOOR_MATERIAL = "ksim_floor"


class ComposeError(Exception):
    """The composition does not fit the model (message is user-facing, one line)."""


@dataclass(frozen=True)
class Floor:
    name: str = "floor"
    friction: float | None = None  # sliding friction (MuJoCo's default 1 when None)


@dataclass(frozen=True)
class Motor:
    joint: str
    effort: float | None = None  # |force| and |ctrl| limit (N m or N); None: unlimited
    armature: float | None = None  # the joint's armature (kg m^2); None: the model's


@dataclass(frozen=True)
class Imu:
    name: str
    site: str = ""  # an existing site ...
    body: str = ""  # ... or a body, at whose origin a site `name` is added


@dataclass(frozen=True)
class Pose:
    base_height: float | None = None  # z of the root free joint
    joints: tuple[tuple[str, float], ...] = ()  # (joint name, position), applied in order


@dataclass(frozen=True)
class Collide:
    geoms: tuple[str, ...]  # the geoms that keep colliding (with the world only)
    condim: int | None = None
    friction: float | None = None
    priority: int | None = None
    # Contact softness of the kept geoms (MuJoCo's solref = (timeconst, dampratio) and solimp[:2] =
    # (dmin, dmax)); with a higher priority than the ground, theirs are the contact's.
    timeconst: float | None = None
    dampratio: float | None = None
    dmin: float | None = None
    dmax: float | None = None

    #: The softness fields: in the SPEC only where set, so older tasks keep their hash.
    SOFTNESS = ("timeconst", "dampratio", "dmin", "dmax")


@dataclass(frozen=True)
class Composition:
    """Everything a task adds to its model, with explicit names (no globs)."""

    floor: Floor | None = None
    motors: tuple[Motor, ...] = ()
    imus: tuple[Imu, ...] = ()
    collide: Collide | None = None
    pose: Pose | None = None
    terrain: Terrain | None = None

    @property
    def empty(self) -> bool:
        return self == Composition()

    def sensor_names(self) -> tuple[str, ...]:
        return tuple(f"{imu.name}_{suffix}" for imu in self.imus for suffix in IMU_SENSORS)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-style literals (the generated SPEC's "compose" entry)."""
        d: dict[str, Any] = {}
        if self.floor is not None:
            d["floor"] = {"name": self.floor.name, "friction": self.floor.friction}
        if self.motors:
            d["motors"] = [{"joint": m.joint, "effort": m.effort, "armature": m.armature} for m in self.motors]
        if self.imus:
            d["imus"] = [{"name": i.name, "site": i.site, "body": i.body} for i in self.imus]
        if self.collide is not None:
            c = self.collide
            d["collide"] = {"geoms": list(c.geoms), "condim": c.condim, "friction": c.friction, "priority": c.priority}
            d["collide"].update({k: getattr(c, k) for k in Collide.SOFTNESS if getattr(c, k) is not None})
        if self.pose is not None:
            d["pose"] = {"base_height": self.pose.base_height, "joints": [[n, v] for n, v in self.pose.joints]}
        if self.terrain is not None:
            d["terrain"] = self.terrain.to_dict()
        return d

    @staticmethod
    def from_dict(d: Mapping[str, Any] | None) -> "Composition":
        """The reader of `to_dict`'s output; raises ComposeError for malformed data."""
        if not d:
            return Composition()
        try:
            floor = Floor(**d["floor"]) if d.get("floor") is not None else None
            motors = tuple(Motor(**m) for m in d.get("motors", ()))
            imus = tuple(Imu(**i) for i in d.get("imus", ()))
            collide = None
            if d.get("collide") is not None:
                c = dict(d["collide"])
                collide = Collide(**{**c, "geoms": tuple(c["geoms"])})
            pose = None
            if d.get("pose") is not None:
                p = d["pose"]
                pose = Pose(p.get("base_height"), tuple((str(n), float(v)) for n, v in p.get("joints", ())))
            terrain = Terrain.from_dict(d["terrain"]) if d.get("terrain") is not None else None
        except (KeyError, TypeError, ValueError) as exc:
            raise ComposeError(f"malformed model composition in the task spec: {exc}") from None
        return Composition(floor=floor, motors=motors, imus=imus, collide=collide, pose=pose, terrain=terrain)


def load_spec(path: str | os.PathLike[str], composition: Composition | None = None) -> Any:
    """`mujoco.MjSpec` of the MJCF at `path`, asset paths made absolute, `composition` applied.

    Raises ComposeError when MuJoCo cannot read the file or the composition does not fit it.
    """
    import mujoco

    path = os.path.abspath(os.fspath(path))
    try:
        spec = mujoco.MjSpec.from_file(path)
    except Exception as exc:  # mujoco raises ValueError with the parser's message
        raise ComposeError(f"cannot load model {path}: {_one_line(exc)}") from None
    _absolute_assets(spec, os.path.dirname(path))
    if composition is not None and not composition.empty:
        try:
            apply(spec, composition)
        except ComposeError as exc:
            raise ComposeError(f"cannot compose model {path}: {exc}") from None
    return spec


def compile_model(spec: Any) -> Any:
    """`spec.compile()`, a MuJoCo error as ComposeError."""
    try:
        return spec.compile()
    except Exception as exc:
        raise ComposeError(f"MuJoCo cannot compile the composed model: {_one_line(exc)}") from None


def apply(spec: Any, composition: Composition) -> None:
    """Edit `spec` in place: floor or terrain, motors, IMUs, collision filtering, then the pose keyframe."""
    if composition.floor is not None:
        _add_floor(spec, composition.floor)
    if composition.terrain is not None:
        _add_terrain(spec, composition.terrain)
    for motor in composition.motors:
        _add_motor(spec, motor)
    for imu in composition.imus:
        _add_imu(spec, imu)
    if composition.collide is not None:
        _filter_collisions(spec, composition.collide)
    if composition.pose is not None:
        _add_pose(spec, composition.pose)


# --------------------------------------------------------------------------- the edits


def _absolute_assets(spec: Any, model_dir: str) -> None:
    """meshdir / texturedir (and hfield / skin files) relative to the robot's own file, made absolute."""
    spec.meshdir = os.path.normpath(os.path.join(model_dir, spec.meshdir or ""))
    spec.texturedir = os.path.normpath(os.path.join(model_dir, spec.texturedir or ""))
    for item in (*spec.hfields, *spec.skins):
        if item.file and not os.path.isabs(item.file):
            item.file = os.path.normpath(os.path.join(model_dir, item.file))


def _find(items: Any, name: str) -> Any | None:
    return next((x for x in items if x.name == name), None)


def _need(items: Any, name: str, kind: str) -> Any:
    found = _find(items, name)
    if found is None:
        raise ComposeError(f"the model has no {kind} named '{name}' (was the MJCF changed since the task was checked?)")
    return found


def _add_floor(spec: Any, floor: Floor) -> None:
    import mujoco

    if _find(spec.geoms, floor.name) is not None:
        raise ComposeError(f"the model already has a geom named '{floor.name}'")
    geom = spec.worldbody.add_geom(name=floor.name, type=mujoco.mjtGeom.mjGEOM_PLANE, size=[0.0, 0.0, 0.05])
    if floor.friction is not None:
        geom.friction = [float(floor.friction), 0.005, 0.0001]
    if _add_ground_material(spec):
        geom.material = FLOOR_MATERIAL


def _add_terrain(spec: Any, terrain: Terrain) -> None:
    if _find(spec.geoms, TERRAIN_NAME) is not None or _find(spec.hfields, TERRAIN_NAME) is not None:
        raise ComposeError(f"the model already has a geom or height field named '{TERRAIN_NAME}'")
    try:
        add_terrain(spec, terrain, FLOOR_MATERIAL if _add_ground_material(spec) else None)
    except TerrainError as exc:
        raise ComposeError(f"bad terrain: {exc}") from None


def _add_ground_material(spec: Any) -> bool:
    """Add the checker material of the ground (for videos); False when the model has one of that name."""
    import mujoco

    if _find(spec.materials, FLOOR_MATERIAL) is not None or _find(spec.textures, FLOOR_MATERIAL) is not None:
        return False
    spec.add_texture(
        name=FLOOR_MATERIAL,
        type=mujoco.mjtTexture.mjTEXTURE_2D,
        builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
        rgb1=[0.25, 0.3, 0.35],
        rgb2=[0.15, 0.2, 0.25],
        width=256,
        height=256,
    )
    material = spec.add_material(name=FLOOR_MATERIAL, texrepeat=[2.0, 2.0], texuniform=True, reflectance=0.1)
    material.textures[int(mujoco.mjtTextureRole.mjTEXROLE_RGB)] = FLOOR_MATERIAL
    return True


def _add_motor(spec: Any, motor: Motor) -> None:
    import mujoco

    joint = _need(spec.joints, motor.joint, "joint")
    if motor.armature is not None:
        joint.armature = float(motor.armature)
    actuator = spec.add_actuator(name=motor.joint, target=motor.joint, trntype=mujoco.mjtTrn.mjTRN_JOINT)
    actuator.gear = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    if motor.effort is not None:
        e = float(motor.effort)
        actuator.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
        actuator.ctrlrange = [-e, e]
        actuator.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        actuator.forcerange = [-e, e]
    else:
        actuator.ctrllimited = mujoco.mjtLimited.mjLIMITED_FALSE


def _add_imu(spec: Any, imu: Imu) -> None:
    import mujoco

    site = imu.site
    if not site:
        body = _need(spec.bodies, imu.body, "body")
        if _find(spec.sites, imu.name) is not None:
            raise ComposeError(f"the model already has a site named '{imu.name}'")
        body.add_site(name=imu.name)
        site = imu.name
    else:
        _need(spec.sites, site, "site")
    for suffix, kind in IMU_SENSORS.items():
        name = f"{imu.name}_{suffix}"
        if _find(spec.sensors, name) is not None:
            raise ComposeError(f"the model already has a sensor named '{name}'")
        spec.add_sensor(
            name=name,
            type=getattr(mujoco.mjtSensor, f"mjSENS_{kind}"),
            objtype=mujoco.mjtObj.mjOBJ_SITE,
            objname=site,
        )


def _filter_collisions(spec: Any, collide: Collide) -> None:
    keep = set(collide.geoms)
    for name in collide.geoms:
        _need(spec.geoms, name, "geom")
    for geom in spec.geoms:
        if geom.name and geom.name in keep:
            geom.contype, geom.conaffinity = 0, 1
            if collide.condim is not None:
                geom.condim = int(collide.condim)
            if collide.priority is not None:
                geom.priority = int(collide.priority)
            if collide.friction is not None:
                friction = list(geom.friction)
                geom.friction = [float(collide.friction), *friction[1:]]
            solref, solimp = list(geom.solref), list(geom.solimp)
            for i, value in ((0, collide.timeconst), (1, collide.dampratio)):
                if value is not None:
                    solref[i] = float(value)
            for i, value in ((0, collide.dmin), (1, collide.dmax)):
                if value is not None:
                    solimp[i] = float(value)
            geom.solref, geom.solimp = solref, solimp
        elif geom.parent.name != "world":
            geom.contype, geom.conaffinity = 0, 0


def _add_pose(spec: Any, pose: Pose) -> None:
    """Keyframe 0: qpos0 of the model so far, the root's height and the named joints set."""
    import mujoco

    model = compile_model(spec)
    qpos = model.qpos0.copy()
    if pose.base_height is not None:
        root = _root_free_joint(model)
        if root is None:
            raise ComposeError("the model has no free root joint, so a pose cannot set base_height")
        qpos[int(model.jnt_qposadr[root]) + 2] = float(pose.base_height)
    for name, value in pose.joints:
        j = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
        if j < 0:
            raise ComposeError(f"the model has no joint named '{name}'")
        qpos[int(model.jnt_qposadr[j])] = float(value)
    if _find(spec.keys, POSE_KEY) is not None:
        raise ComposeError(f"the model already has a keyframe named '{POSE_KEY}'")
    # The pose is keyframe 0 (the default pose): the model's own keyframes move after it.
    kept = [_key_fields(k) for k in spec.keys]
    for key in list(spec.keys):
        spec.delete(key)
    spec.add_key(name=POSE_KEY, qpos=[float(x) for x in qpos])
    for fields in kept:
        spec.add_key(**fields)


_KEY_FIELDS = ("name", "time", "qpos", "qvel", "act", "mpos", "mquat", "ctrl")


def _key_fields(key: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _KEY_FIELDS:
        value = getattr(key, name)
        out[name] = value if isinstance(value, (str, float, int)) else [float(x) for x in value]
    return out


def _root_free_joint(model: Any) -> int | None:
    for j in range(model.njnt):
        body = int(model.jnt_bodyid[j])
        if int(model.jnt_type[j]) == 0 and int(model.body_parentid[body]) == 0:  # mjJNT_FREE
            return j
    return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())

