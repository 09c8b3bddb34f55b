"""What a quoted MJCF name in a task refers to: its kind, the model's names of that kind, and a description."""

from __future__ import annotations

from ksimdsl.frontend import ast
from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.model_info import OBJECT_KINDS, ModelInfo, is_glob, match_names

__all__ = ["string_kind", "kind_for_base", "kind_for_call", "candidates", "describe", "describe_match"]

_JOINT_TYPES = {0: "free", 1: "ball", 2: "slide", 3: "hinge"}
_GEOM_TYPES = dict(enumerate(("plane", "hfield", "sphere", "capsule", "ellipsoid", "cylinder", "box", "mesh", "sdf")))
#: Indexable quantities whose elements are named after joints (hinge/slide ones) or actuators.
_JOINT_LABELLED = ("joint_pos", "joint_vel", "joint_acc", "default_joint_pos", "joint_lower", "joint_upper", "kp", "kd")
_QPOS_LABELLED = ("qpos", "qvel", "qacc")
_ACTUATOR_LABELLED = ("actuator_force", "action")


def kind_for_call(func: str) -> str | None:
    """The kind of name a lookup call takes ("geom_or_body" for contact)."""
    if func in ("contact", "contact_force"):
        return "geom_or_body"
    return bi.LOOKUPS.get(func)


def kind_for_base(base: str) -> str | None:
    """The kind of name `base["..."]` selects."""
    if base in _JOINT_LABELLED:
        return "joint1"  # the 1-dof joints, elements of joint_pos
    if base in _QPOS_LABELLED:
        return "joint"
    if base in _ACTUATOR_LABELLED:
        return "actuator"
    for prefix, kind in OBJECT_KINDS.items():
        if base.startswith(prefix):
            return kind
    return None


def string_kind(chain: list[object]) -> str | None:
    """The kind of model name the innermost Str of `chain` (outermost-first nodes) names."""
    if len(chain) < 2 or not isinstance(chain[-1], ast.Str):
        return None
    parent = chain[-2]
    if isinstance(parent, ast.Call):
        return kind_for_call(parent.func)
    if isinstance(parent, ast.Vector) and len(chain) >= 3 and isinstance(chain[-3], ast.Call):
        return kind_for_call(chain[-3].func)
    if isinstance(parent, ast.Index) and parent.index is chain[-1]:
        if isinstance(parent.base, ast.Name):
            return kind_for_base(parent.base.id)
        if isinstance(parent.base, ast.Attr):
            return kind_for_base(parent.base.name)
    return None


def candidates(info: ModelInfo, kind: str) -> tuple[tuple[str, str], ...]:
    """(name, kind) pairs of the model's named objects of `kind`."""
    if kind == "joint1":
        return tuple((info.joint_names[j], "joint") for j in info.hinge_slide_joints if info.joint_names[j])
    if kind == "geom_or_body":
        return candidates(info, "geom") + candidates(info, "body")
    try:
        names = info.names_of(kind)
    except KeyError:
        return ()
    return tuple((n, kind) for n in names if n)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def describe(info: ModelInfo, kind: str, name: str) -> str:
    """One line about the named object, e.g. `joint 'knee_left': hinge, range [-2.6, 0.035] rad, body 'shin_left'`."""
    m = info.model
    names = info.names_of(kind)
    if name not in names:
        return f"{kind} '{name}'"
    i = names.index(name)
    if kind == "joint":
        jt = int(m.jnt_type[i])
        text = f"joint '{name}': {_JOINT_TYPES.get(jt, str(jt))}"
        if jt in (2, 3):
            lo, hi = (float(v) for v in m.jnt_range[i])
            unit = "rad" if jt == 3 else "m"
            text += f", range [{_fmt(lo)}, {_fmt(hi)}] {unit}" if bool(m.jnt_limited[i]) else ", unlimited"
        return text + f", body '{info.body_names[int(m.jnt_bodyid[i])]}', qpos[{int(m.jnt_qposadr[i])}]"
    if kind == "body":
        parent = info.body_names[int(m.body_parentid[i])]
        mass, geoms = _fmt(float(m.body_mass[i])), len(info.body_geoms(i))
        return f"body '{name}': mass {mass} kg, {geoms} geoms, parent '{parent}'"
    if kind == "geom":
        gt = int(m.geom_type[i])
        return f"geom '{name}': {_GEOM_TYPES.get(gt, str(gt))} on body '{info.body_names[int(m.geom_bodyid[i])]}'"
    if kind == "sensor":
        import mujoco

        try:
            st = mujoco.mjtSensor(int(m.sensor_type[i])).name.removeprefix("mjSENS_").lower()
        except ValueError:
            st = str(int(m.sensor_type[i]))
        dim = int(m.sensor_dim[i])
        return f"sensor '{name}': {st}, dim {dim} (sensordata[{int(m.sensor_adr[i])}:{int(m.sensor_adr[i]) + dim}])"
    if kind == "site":
        return f"site '{name}' on body '{info.body_names[int(m.site_bodyid[i])]}'"
    if kind == "actuator":
        joint = info.actuator_joint(i)
        text = f"actuator '{name}'" + (f" driving joint '{info.joint_names[joint]}'" if joint is not None else "")
        if bool(m.actuator_ctrllimited[i]):
            lo, hi = (float(v) for v in m.actuator_ctrlrange[i])
            text += f", ctrl range [{_fmt(lo)}, {_fmt(hi)}]"
        return text
    return f"{kind} '{name}'"


def describe_match(info: ModelInfo, kind: str, pattern: str, labels: tuple[str, ...] = ()) -> str:
    """Markdown for a quoted name or glob of `kind`: what it resolves to."""
    if labels:
        label_kind = "joint" if kind in ("joint1", "joint") else kind
        pairs = tuple((n, label_kind) for n in labels if n)
    else:
        pairs = candidates(info, kind)
    names = tuple(dict.fromkeys(n for n, _ in pairs))
    kind_of = {n: k for n, k in reversed(pairs)}
    hits = [names[i] for i in match_names(pattern, names)]
    if not hits:
        return f"no {kind.replace('joint1', 'joint').replace('_or_', ' or ')} matches '{pattern}' in this model"
    if is_glob(pattern):
        shown = ", ".join(f"`{h}`" for h in hits[:40]) + (" ..." if len(hits) > 40 else "")
        return f"glob `{pattern}` matches {len(hits)} {kind_of[hits[0]]}{'s' if len(hits) != 1 else ''}: {shown}"
    return describe(info, kind_of[hits[0]], hits[0])


def labels_of(node: t.Expr | None) -> tuple[str, ...]:
    """MJCF element names of a typed quantity (empty when unknown)."""
    while isinstance(node, t.Let):
        node = node.value
    return node.labels if isinstance(node, t.Quantity) else ()
