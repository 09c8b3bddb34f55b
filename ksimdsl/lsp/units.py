"""Physical units of typed expressions, for hover only (`vector[21] rad`).

The checker folds units into numbers and does not keep them on types, so
this is a best-effort reading of the typed tree: built-in quantities have
known units (joint quantities from the MJCF joint types), and units pass
through selections, `prev`, negation, reductions that keep them, sums of
like units and scaling by a constant. Anything else is unknown (None);
"" means dimensionless.
"""

from __future__ import annotations

from ksimdsl.frontend import typed as t
from ksimdsl.frontend.model_info import ModelInfo

__all__ = ["unit_of"]

_FIXED = {
    "base_pos": "m",
    "base_lin_vel": "m/s",
    "local_lin_vel": "m/s",
    "base_ang_vel": "rad/s",
    "local_ang_vel": "rad/s",
    "base_lin_acc": "m/s²",
    "base_ang_acc": "rad/s²",
    "time": "s",
    "ctrl_dt": "s",
    "projected_gravity": "",
    "base_quat": "",
    "level": "",
    "action": "",
    "body_pos": "m",
    "site_pos": "m",
    "body_lin_vel": "m/s",
    "body_up": "",
    "body_forward": "",
    "body_quat": "",
}
#: joint quantity -> (hinge unit, slide unit)
_JOINT = {
    "joint_pos": ("rad", "m"),
    "default_joint_pos": ("rad", "m"),
    "joint_lower": ("rad", "m"),
    "joint_upper": ("rad", "m"),
    "joint_vel": ("rad/s", "m/s"),
    "joint_acc": ("rad/s²", "m/s²"),
}
_KEEP = frozenset({"abs", "min", "max", "clip", "sum", "mean", "norm", "reduce_min", "reduce_max"})
_DIMENSIONLESS = frozenset({"exp_kernel", "tolerance", "sin", "cos", "tanh", "exp", "one_hot"})


def _joint_unit(q: t.Quantity, info: ModelInfo | None) -> str | None:
    hinge, slide = _JOINT[q.name]
    if info is None:
        return None
    kinds = set()
    for name in set(q.labels):
        if name in info.joint_names:
            kinds.add(int(info.model.jnt_type[info.joint_names.index(name)]))
    if kinds == {3}:
        return hinge
    if kinds == {2}:
        return slide
    return f"{hinge} or {slide}" if kinds else None


def unit_of(e: t.Expr, info: ModelInfo | None, depth: int = 0) -> str | None:
    if depth > 60:
        return None
    d = depth + 1
    if isinstance(e, t.Quantity):
        if e.name in _JOINT:
            return _joint_unit(e, info)
        return _FIXED.get(e.name)
    if isinstance(e, (t.Let, t.Prev)):
        return unit_of(e.value if isinstance(e, t.Let) else e.expr, info, d)
    if isinstance(e, (t.Gather, t.Unary)):
        return unit_of(e.base if isinstance(e, t.Gather) else e.operand, info, d)
    if isinstance(e, (t.Level, t.Action)):
        return ""
    if isinstance(e, t.Apply):
        if e.func in _KEEP and e.args:
            return unit_of(e.args[0], info, d)
        if e.func == "angle":
            return "rad"
        if e.func in _DIMENSIONLESS:
            return ""
        return None
    if isinstance(e, t.Binary):
        a, b = unit_of(e.left, info, d), unit_of(e.right, info, d)
        ca, cb = isinstance(e.left, t.Const), isinstance(e.right, t.Const)
        if e.op in "+-":
            return a if a == b or cb else b if ca else None
        if e.op in "*/":
            if cb:
                return a
            if ca and e.op == "*":
                return b
            if a == "" and e.op == "*":
                return b
            if b == "":
                return a
        return None
    if isinstance(e, t.Where):
        a, b = unit_of(e.a, info, d), unit_of(e.b, info, d)
        return a if a == b or isinstance(e.b, t.Const) else b if isinstance(e.a, t.Const) else None
    return None
