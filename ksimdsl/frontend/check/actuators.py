"""The `actuators` statement: kind, gains, per-joint overrides, latency, zero_offset (docs/language.md)."""

from __future__ import annotations

import math

from ksimdsl import settings as S
from ksimdsl.errors import InternalCompilerError, did_you_mean
from ksimdsl.frontend import ast
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.check.compose import ACTUATOR_COMPOSE_KEYS
from ksimdsl.frontend.check.context import Ctx, Part, fmt_num
from ksimdsl.frontend.check.folding import range_units
from ksimdsl.frontend.check.names import no_match_message
from ksimdsl.frontend.check.settings import actuator_kinds_text
from ksimdsl.frontend.model_info import match_names

#: Settings a `key["GLOB"] = value` line (or a `joints GLOBS key=value` line) may set per joint.
PER_JOINT_GAINS = ("kp", "kd")


class ActuatorChecker(Part):
    """The `actuators` statement: kind, PD gains and their per-joint overrides, latency, zero_offset."""

    def actuators(self, stmt: ast.Statement | None) -> t.Actuators:
        if stmt is not None and not isinstance(stmt, ast.ActuatorsStmt):
            raise InternalCompilerError("actuators statement of the wrong type")
        m = self.m
        if m.nu == 0:
            self.fail(
                stmt.span if stmt is not None else None,
                "the model has no actuators; the policy acts through the MJCF's <actuator> elements",
                'create motors on the model\'s joints with e.g. `actuators position joints="*" kp=40 kd=2`',
            )
        kind = self.cx.settings.actuator_kind(stmt)
        self.cx.action_size = m.nu * S.actions_per_actuator(kind)
        names = m.actuator_names
        joints = [m.actuator_joint(a) for a in range(m.nu)]
        joint_names = tuple(m.joint_names[j] if j is not None else "" for j in joints)
        values = self.cx.settings.actuator_values(stmt, kind)
        span = stmt.span if stmt is not None else None

        feedback = kind in S.FEEDBACK_ACTUATORS
        if feedback:
            for a, j in enumerate(joints):
                if j is None or j not in m.hinge_slide_joints:
                    self.fail(
                        stmt.kind_span if stmt is not None else None,
                        f"actuators {kind} needs every MJCF actuator to drive a hinge or slide joint; "
                        f"actuator '{names[a]}' does not",
                    )
        gains = {g: [values.get(g, 0.0)] * m.nu for g in PER_JOINT_GAINS}
        latency = zero_offset = None
        if stmt is not None:
            for assign in stmt.overrides:
                self.attempt(self.gain_override, assign, kind, gains, joint_names, names)
            if stmt.latency is not None:
                latency = self.attempt(self.latency, stmt.latency)
            if stmt.zero_offset is not None:
                if kind not in S.POSITION_TARGET_ACTUATORS:
                    self.cx.sink.error(
                        stmt.zero_offset.span,
                        f"zero_offset needs {actuator_kinds_text(S.POSITION_TARGET_ACTUATORS)}: it offsets the joint "
                        f"position target, and actuators {kind} has none",
                    )
                else:
                    zero_offset = self.attempt(self.zero_offset, stmt.zero_offset)

        joint_ids = [j if j is not None else -1 for j in joints]
        qpos_adr = tuple(m.jnt_qpos_adr(j) if j >= 0 else -1 for j in joint_ids)
        dof_adr = tuple(m.jnt_dof_adr(j) if j >= 0 else -1 for j in joint_ids)
        limited = [bool(x) for x in m.model.actuator_ctrllimited]
        ctrl_range = None
        if any(limited):
            ctrl_range = tuple(
                (float(lo), float(hi)) if lim else (-math.inf, math.inf)
                for lim, (lo, hi) in zip(limited, m.model.actuator_ctrlrange)
            )
        own = S.ActuatorSettings.kind_table(kind)
        return t.Actuators(
            kind=kind,
            names=names,
            joint_names=joint_names,
            joint_qpos_adr=qpos_adr,
            joint_dof_adr=dof_adr,
            kp=tuple(gains["kp"]) if "kp" in own else (),
            kd=tuple(gains["kd"]) if "kd" in own else (),
            action_scale=float(values.get("action_scale", 1.0)),
            velocity_scale=float(values.get("velocity_scale", 1.0)),
            scale=float(values.get("scale", 1.0)),
            default_pos=tuple(m.default_qpos[a] for a in qpos_adr) if kind in S.POSITION_TARGET_ACTUATORS else (),
            ctrl_range=ctrl_range,
            latency=latency,
            zero_offset=zero_offset,
            span=span,
        )

    def gain_override(
        self,
        assign: ast.Assign,
        kind: str,
        gains: dict[str, list[float]],
        joint_names: tuple[str, ...],
        names: tuple[str, ...],
    ) -> None:
        target = assign.target
        if not (isinstance(target, ast.Index) and isinstance(target.base, ast.Name)):
            self.fail(target.span, 'an actuator override looks like kp["*_knee*"] = 80')
        gain = target.base.id
        if gain in ACTUATOR_COMPOSE_KEYS:
            return  # effort / armature of the motors `joints=` creates: checked with the model's composition
        if gain not in PER_JOINT_GAINS:
            choices = (*PER_JOINT_GAINS, "effort", "armature")
            self.fail(
                target.base.span,
                f"only kp, kd, effort and armature can be set per joint, not '{gain}'" + did_you_mean(gain, choices),
            )
        if gain not in S.ActuatorSettings.kind_table(kind):
            having = tuple(k for k in S.ACTUATOR_KINDS if gain in S.ActuatorSettings.kind_table(k))
            self.fail(target.base.span, f"{gain} overrides need {actuator_kinds_text(having)} (not actuators {kind})")
        if assign.op != "=":
            self.fail(assign.span, f"use `{gain}[...] = value` (not `{assign.op}`)")
        sel = target.index
        if not isinstance(sel, ast.Str):
            self.fail(sel.span, f'select joints by name or glob, e.g. {gain}["*_knee*"]')
        rows = match_names(sel.value, joint_names) or match_names(sel.value, names)
        if not rows:
            self.fail(sel.span, no_match_message(sel.value, joint_names, "actuated joint"))
        value = self.cx.consts.const_float(assign.value, f"{gain} override")
        if value < 0:
            self.fail(assign.value.span, f"{gain} must not be negative")
        for r in rows:
            gains[gain][r] = value

    def latency(self, lat: ast.ActuatorLatency) -> tuple[float, float]:
        rng = range_units(lat.range)
        hi = self.cx.consts.duration_seconds(rng.hi, "latency", allow_steps=True)
        lo = self.cx.consts.duration_seconds(rng.lo, "latency", allow_steps=True)
        if not 0 <= lo <= hi:
            self.fail(rng.span, "latency lo..hi needs 0 <= lo <= hi")
        if hi > self.cx.ctrl_dt + 1e-12:
            self.fail(
                rng.hi.span,
                f"latency may not exceed one control step (ctrl_dt = {fmt_num(self.cx.ctrl_dt * 1000)}ms)",
            )
        return (lo, hi)

    def zero_offset(self, zo: ast.ActuatorZeroOffset) -> t.Dist:
        value = self.cx.exprs.expr(zo.dist, Ctx("zero_offset", allow_dist=True))
        if not isinstance(value, t.Dist):
            self.fail(zo.dist.span, "zero_offset needs a distribution, e.g. gaussian(3deg)")
        self.cx.shapes.require_static(value, "zero_offset")
        out = self.cx.shapes.fit_shape(value, (self.m.nu,), zo.dist.span, "zero_offset")
        assert isinstance(out, t.Dist)
        return out
