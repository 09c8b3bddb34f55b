"""Model composition: the `model` block and `actuators ... joints=`, checked against the bare model.

Every glob is resolved here, against the model as its MJCF describes it, with
errors at FILE:LINE:COL and did-you-mean suggestions; the result is a
`ksimdsl.model.compose.Composition` of explicit names and numbers, which the
driver applies (the same code the runtime runs) before the rest of the task is
checked against the composed model.
"""

from __future__ import annotations

from typing import Any

from ksimdsl.errors import did_you_mean
from ksimdsl.frontend import ast
from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend.check.context import Part, Reported, fmt_num
from ksimdsl.frontend.check.names import no_match_message
from ksimdsl.frontend.check.terrain import TerrainChecker
from ksimdsl.frontend.model_info import match_names
from ksimdsl.model.compose import IMU_SENSORS, Collide, Composition, Floor, Imu, Motor, Pose

__all__ = ["ComposeChecker", "ACTUATOR_COMPOSE_KEYS"]

#: `actuators` settings and per-joint lines that create motors (the rest are the actuator's gains).
ACTUATOR_COMPOSE_KEYS = ("joints", "effort", "armature")

_FLOOR_SETTINGS = {"friction": bi.Setting("float", minimum=0.0)}
_POSE_SETTINGS = {"base_height": bi.Setting("float")}
_COLLIDE_SETTINGS = {
    "condim": bi.Setting("int", minimum=1, le=6),
    "friction": bi.Setting("float", minimum=0.0),
    "priority": bi.Setting("int", minimum=0, le=1000),
    "timeconst": bi.Setting("time", gt=0.0),
    "dampratio": bi.Setting("float", gt=0.0),
    "dmin": bi.Setting("float", gt=0.0, lt=1.0),
    "dmax": bi.Setting("float", gt=0.0, lt=1.0),
}
_MOTOR_SETTINGS = {"effort": bi.Setting("float", gt=0.0), "armature": bi.Setting("float", minimum=0.0)}
_CONDIMS = (1, 3, 4, 6)
_PLANE, _HFIELD = 0, 1  # mjtGeom


class ComposeChecker(Part):
    """What the task adds to its model; `self.m` is the bare model here."""

    def composition(self, model: ast.ModelStmt | None, act: ast.ActuatorsStmt | None) -> Composition:
        parts = model.parts if model is not None else ()
        found: dict[type, Any] = {}
        imus: list[Imu] = []
        for part in parts:
            if isinstance(part, ast.ModelImu):
                imu = self.attempt(self.imu, part, imus)
                if imu is not None:
                    imus.append(imu)
                continue
            if type(part) in found:
                self.cx.sink.error(part.span, f"duplicate `{_keyword(part)}` in the model block")
                continue
            found[type(part)] = self.attempt(self._checker(part), part)
        ground = [p for p in parts if isinstance(p, (ast.ModelFloor, ast.ModelTerrain))]
        if len({type(p) for p in ground}) > 1:
            self.cx.sink.error(
                ground[-1].span,
                "a model block has either `floor` or `terrain`, not both",
                f"the `{_keyword(ground[0])}` is at line {ground[0].span.line}; the terrain is the ground",
            )
        motors = self.attempt(self.motors, act) if act is not None else ()
        return Composition(
            floor=found.get(ast.ModelFloor),
            motors=motors or (),
            imus=tuple(imus),
            collide=found.get(ast.ModelCollide),
            pose=found.get(ast.ModelPose),
            terrain=found.get(ast.ModelTerrain),
        )

    def _checker(self, part: ast.ModelPart) -> Any:
        checkers = {ast.ModelFloor: self.floor, ast.ModelPose: self.pose, ast.ModelCollide: self.collide}
        if isinstance(part, ast.ModelTerrain):
            return TerrainChecker(self.cx).terrain
        return checkers[type(part)]

    # ----------------------------------------------------------------- the model block

    def floor(self, part: ast.ModelFloor) -> Floor:
        m = self.m
        vals = self.values(part.settings, _FLOOR_SETTINGS, "floor")
        for g in range(m.model.ngeom):
            if int(m.model.geom_bodyid[g]) == 0 and int(m.model.geom_type[g]) in (_PLANE, _HFIELD):
                name = m.geom_names[g] or f"#{g}"
                self.fail(part.span, f"the model already has a floor (geom '{name}'); remove `floor`")
        if "floor" in m.geom_names:
            self.fail(part.span, "the model already has a geom named 'floor'; remove `floor`")
        friction = vals.get("friction")
        return Floor(friction=None if friction is None else float(friction))

    def imu(self, part: ast.ModelImu, earlier: list[Imu]) -> Imu:
        m = self.m
        if any(i.name == part.name for i in earlier):
            self.fail(part.name_span, f"duplicate imu '{part.name}' in the model block")
        for suffix in IMU_SENSORS:
            sensor = f"{part.name}_{suffix}"
            if sensor in m.sensor_names:
                self.fail(
                    part.name_span,
                    f"the model already has a sensor named '{sensor}'; give the imu another name",
                    f"an imu NAME adds the sensors {', '.join(part.name + '_' + s for s in IMU_SENSORS)}",
                )
        if part.target in m.site_names:
            return Imu(part.name, site=part.target)
        if part.target in m.body_names and part.target != "world":
            if part.name in m.site_names:
                self.fail(part.name_span, f"the model already has a site named '{part.name}' (an imu at a body adds one)")
            return Imu(part.name, body=part.target)
        candidates = [n for n in (*m.site_names, *m.body_names) if n and n != "world"]
        self.fail(part.target_span, f"no site or body named '{part.target}'" + did_you_mean(part.target, candidates))

    def pose(self, part: ast.ModelPose) -> Pose:
        m = self.m
        vals = self.values(part.settings, _POSE_SETTINGS, "pose")
        if "base_height" in vals and m.root is None:
            at = next(s for s in part.settings if s.key == "base_height")
            self.fail(at.span, "base_height needs a model whose root body has a free joint")
        names = self.joint1_names()
        values: dict[str, float] = {}
        for line in part.joints:
            rows = self.select(line.joint, line.joint_span, names, "hinge or slide joint")
            value = self.cx.consts.const_float(line.value, "a pose joint position")
            for r in rows:
                self.check_in_range(names[r], value, line.value.span)
                values.pop(names[r], None)
                values[names[r]] = value
        height = vals.get("base_height")
        order = {n: i for i, n in enumerate(m.joint_names)}
        joints = tuple(sorted(values.items(), key=lambda kv: order[kv[0]]))
        return Pose(base_height=None if height is None else float(height), joints=joints)

    def check_in_range(self, joint: str, value: float, span: Any) -> None:
        model = self.m.model
        j = self.m.joint_names.index(joint)
        if bool(model.jnt_limited[j]):
            lo, hi = (float(x) for x in model.jnt_range[j])
            if not lo - 1e-9 <= value <= hi + 1e-9:
                self.fail(span, f"pose puts '{joint}' at {fmt_num(value)}, outside its range [{fmt_num(lo)}, {fmt_num(hi)}]")

    def collide(self, part: ast.ModelCollide) -> Collide:
        m = self.m
        vals = self.values(part.settings, _COLLIDE_SETTINGS, "collide")
        if vals.get("dmin") is not None and vals.get("dmax") is not None and vals["dmin"] > vals["dmax"]:
            at = next(s for s in part.settings if s.key == "dmin")
            self.fail(at.value.span, f"dmin ({fmt_num(vals['dmin'])}) must not exceed dmax ({fmt_num(vals['dmax'])})")
        if "condim" in vals and vals["condim"] not in _CONDIMS:
            at = next(s for s in part.settings if s.key == "condim")
            self.fail(at.value.span, f"condim must be one of {', '.join(map(str, _CONDIMS))}, got {vals['condim']}")
        # Geoms of the world body (a floor, terrain) are never changed, so they are not selectable.
        moving = tuple(n if int(m.model.geom_bodyid[g]) != 0 else "" for g, n in enumerate(m.geom_names))
        keep: set[int] = set()
        for glob, span in self.strings(part.geoms, 'collide only ["*_foot*"]'):
            keep.update(self.select(glob, span, moving, "geom of a moving body"))
        return Collide(
            geoms=tuple(moving[g] for g in sorted(keep)),
            condim=vals.get("condim"),
            friction=None if vals.get("friction") is None else float(vals["friction"]),
            priority=vals.get("priority"),
            **{k: float(vals[k]) for k in Collide.SOFTNESS if vals.get(k) is not None},
        )

    # ----------------------------------------------------------------- actuators ... joints=

    def motors(self, act: ast.ActuatorsStmt) -> tuple[Motor, ...]:
        joints = next((s for s in act.settings if s.key == "joints"), None)
        others = [s for s in act.settings if s.key in _MOTOR_SETTINGS]
        lines = [a for a in act.overrides if _override_name(a) in _MOTOR_SETTINGS]
        if joints is None:
            for item in (*others, *lines):
                key = item.key if isinstance(item, ast.Setting) else _override_name(item)
                self.cx.sink.error(
                    item.span, f"{key} needs `joints=`: it sets the motors that `actuators ... joints=` creates"
                )
            if others or lines:
                raise Reported
            return ()
        m = self.m
        if m.nu > 0:
            self.fail(
                joints.span,
                f"the model already has {m.nu} actuators (its <actuator> elements); `joints=` creates motors on a "
                "model without any: remove joints=... to drive the model's own actuators",
            )
        names = self.joint1_names()
        selected: set[int] = set()
        for glob, span in self.strings(joints.value, 'joints="*" or joints=["*_hip_*", "*_knee_*"]'):
            selected.update(self.select(glob, span, names, "hinge or slide joint"))
        chosen = tuple(names[r] for r in sorted(selected))
        defaults = self.values(others, _MOTOR_SETTINGS, f"actuators {act.kind}")
        per_joint = {key: {n: defaults.get(key) for n in chosen} for key in _MOTOR_SETTINGS}
        for line in lines:
            self.attempt(self.motor_line, line, chosen, per_joint)
        return tuple(
            Motor(
                joint=n,
                effort=_float_or_none(per_joint["effort"][n]),
                armature=_float_or_none(per_joint["armature"][n]),
            )
            for n in chosen
        )

    def motor_line(self, line: ast.Assign, chosen: tuple[str, ...], per_joint: dict[str, dict[str, Any]]) -> None:
        target = line.target
        assert isinstance(target, ast.Index) and isinstance(target.base, ast.Name)
        key = target.base.id
        if line.op != "=":
            self.fail(line.span, f"use `{key}[...] = value` (not `{line.op}`)")
        if not isinstance(target.index, ast.Str):
            self.fail(target.index.span, f'select joints by name or glob, e.g. {key}["*_knee*"]')
        rows = self.select(target.index.value, target.index.span, chosen, "joint that `joints=` selects")
        value = self.cx.consts.const_float(line.value, f"{key} override")
        self.cx.settings.check_value(_MOTOR_SETTINGS[key], value, line.value.span, key)
        for r in rows:
            per_joint[key][chosen[r]] = value

    # ----------------------------------------------------------------- helpers

    def joint1_names(self) -> tuple[str, ...]:
        """Joint names with only the hinge and slide joints kept (others blank, so indices stay joint ids)."""
        keep = set(self.m.hinge_slide_joints)
        return tuple(n if j in keep else "" for j, n in enumerate(self.m.joint_names))

    def select(self, glob: str, span: Any, names: tuple[str, ...], kind: str) -> tuple[int, ...]:
        rows = match_names(glob, names) if glob else ()
        if not rows:
            self.fail(span, no_match_message(glob, names, kind))
        return rows

    def strings(self, node: ast.Expr, example: str) -> list[tuple[str, Any]]:
        """A string or a vector of strings: [(value, span)]."""
        items = node.items if isinstance(node, ast.Vector) else (node,)
        out = []
        for item in items:
            if not isinstance(item, ast.Str):
                self.fail(item.span, f"expected a quoted name or glob, e.g. {example}")
            out.append((item.value, item.span))
        if not out:
            self.fail(node.span, f"expected at least one name or glob, e.g. {example}")
        return out

    def values(self, settings: Any, table: dict[str, Any], where: str) -> dict[str, Any]:
        errors = len(self.cx.sink.diagnostics)
        vals = self.cx.settings.validate(settings, table, where)
        if len(self.cx.sink.diagnostics) > errors:
            raise Reported
        return {k: v for k, (v, _) in vals.items()}


def _override_name(assign: ast.Assign) -> str | None:
    target = assign.target
    if isinstance(target, ast.Index) and isinstance(target.base, ast.Name):
        return target.base.id
    return None


def _keyword(part: ast.ModelPart) -> str:
    keywords = {
        ast.ModelFloor: "floor",
        ast.ModelTerrain: "terrain",
        ast.ModelPose: "pose",
        ast.ModelCollide: "collide only",
    }
    return keywords.get(type(part), "imu")


def _float_or_none(x: Any) -> float | None:
    return None if x is None else float(x)

