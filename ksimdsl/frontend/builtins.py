"""Tables of the language's built-ins: quantities, model lookups, functions,
distributions and settings, with their signatures and shape rules.

The checker (`ksimdsl.frontend.check`) reads these tables; keeping them here
makes the language's vocabulary one readable list (and the source of "did you
mean" candidates and of the valid-key lists in error messages).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from ksimdsl import settings as S
from ksimdsl.settings import ENGINES, Setting

__all__ = [
    "QUANTITIES",
    "ROOT_QUANTITIES",
    "INFINITE_LIMITS_NOTE",
    "LOOKUPS",
    "Param",
    "FunctionSig",
    "FUNCTIONS",
    "HEIGHT_SCAN",
    "HEIGHT_SCAN_MAX_POINTS",
    "DISTRIBUTIONS",
    "TOLERANCE_SIGMOIDS",
    "SWIZZLE",
    "Setting",
    "PHYSICS_SETTINGS",
    "TRAIN_SETTINGS",
    "POLICY_KINDS",
    "POLICY_SETTINGS",
    "AMP_SETTINGS",
    "AMP_QUANTITIES",
    "ACTUATOR_KINDS",
    "CURRICULUM_KINDS",
    "CURRICULUM_DEFAULTS",
    "COMMAND_SETTINGS",
    "ENGINES",
    "RESET_TARGETS",
    "SINGLE_STATEMENTS",
    "REF_QUANTITIES",
    "REF_OPTIONS",
]

#: Built-in quantities read from the physics state (shape from the model).
QUANTITIES: Mapping[str, str] = MappingProxyType(
    {
        "qpos": "generalized positions, (nq,)",
        "qvel": "generalized velocities, (nv,)",
        "qacc": "generalized accelerations, (nv,)",
        "joint_pos": "positions of the hinge and slide joints",
        "joint_vel": "velocities of the hinge and slide joints",
        "joint_acc": "accelerations of the hinge and slide joints",
        "actuator_force": "actuator forces, (nu,)",
        "default_joint_pos": "joint_pos of the default pose (keyframe 0, else qpos0)",
        "joint_lower": "lower limit of each joint_pos element (MJCF range; -inf where the joint is unlimited)",
        "joint_upper": "upper limit of each joint_pos element (MJCF range; +inf where the joint is unlimited)",
        "base_pos": "root position, world frame, [3]",
        "base_quat": "root orientation quaternion (wxyz), [4]",
        "base_lin_vel": "root linear velocity, world frame, [3]",
        "base_ang_vel": "root angular velocity, world frame, [3]",
        "local_lin_vel": "root linear velocity, root frame, [3]",
        "local_ang_vel": "root angular velocity, root frame, [3]",
        "base_lin_acc": "root linear acceleration, world frame, [3]",
        "base_ang_acc": "root angular acceleration, world frame, [3]",
        "projected_gravity": "gravity direction in the root frame, [3]",
        "com_inertia": "com-based inertia of every body but the world, [10 * (nbody - 1)]",
        "com_vel": "com-based velocity of every body but the world, [6 * (nbody - 1)]",
        "time": "episode time in seconds",
        "ctrl_dt": "control period in seconds (a constant)",
        "level": "curriculum level in [0, 1]",
        "action": "the policy's action, [action_size]",
    }
)

#: Note for a constant with no value because a joint has no range (checker and lowering).
INFINITE_LIMITS_NOTE = (
    "joint_lower and joint_upper are -inf and inf for a joint without a range; "
    'select the limited joints, e.g. joint_upper["name"] or joint_upper[i:j]'
)

#: Quantities that need a root free joint.
ROOT_QUANTITIES = frozenset(n for n in QUANTITIES if n.startswith(("base_", "local_")) or n == "projected_gravity")

#: Model lookups `name("object")` -> the kind of MJCF object they name.
LOOKUPS: Mapping[str, str] = MappingProxyType(
    {
        "sensor": "sensor",
        "body_pos": "body",
        "body_quat": "body",
        "body_lin_vel": "body",
        "body_up": "body",
        "body_forward": "body",
        "site_pos": "site",
        "contact": "geom",
        "contact_force": "geom",
        "height_scan": "body",
    }
)

_REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """A function parameter; `default` is a float, a mode name, or required (no default)."""

    name: str
    default: object = _REQUIRED
    mode: bool = False  # a name such as `sigmoid=gaussian`, not an expression

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


@dataclass(frozen=True)
class FunctionSig:
    """A math function: parameters in canonical order and its shape rule.

    Rules: "elementwise" (all arguments broadcast, float result of that shape),
    "reduce" (any shape -> scalar), "reduce_bool" (bool of any shape -> bool), "exp_kernel", "dot", "cross", "angle",
    "quat_rotate", "one_hot", "where", "minmax" (one argument: reduce, two:
    elementwise).
    """

    name: str
    params: tuple[Param, ...]
    rule: str
    doc: str
    min_args: int | None = None  # positional minimum when fewer than all required

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)


def _f(name: str, params: tuple[Param, ...], rule: str, doc: str, min_args: int | None = None) -> FunctionSig:
    return FunctionSig(name, params, rule, doc, min_args)


#: `height_scan(BODY, grid=[nx, ny], spacing=S)`, a model lookup with keyword arguments (check/heightscan.py).
HEIGHT_SCAN = FunctionSig(
    "height_scan",
    (Param("body"), Param("grid"), Param("spacing")),
    "lookup",
    "height of the body above the ground at each point of an nx x ny grid under it, [nx * ny]",
)
#: The most points one height_scan() may have.
HEIGHT_SCAN_MAX_POINTS = 1024


_X = Param("x")

FUNCTIONS: Mapping[str, FunctionSig] = MappingProxyType(
    {
        f.name: f
        for f in (
            _f("exp_kernel", (_X, Param("s")), "exp_kernel", "exp(-|x|^2 / (2 s^2)), vector x: squared norm"),
            _f("norm", (_X,), "reduce", "Euclidean norm"),
            _f("norm2", (_X,), "reduce", "squared Euclidean norm"),
            _f("sum", (_X,), "reduce", "sum of the elements"),
            _f("mean", (_X,), "reduce", "mean of the elements"),
            _f("any", (_X,), "reduce_bool", "true if any element is true"),
            _f("all", (_X,), "reduce_bool", "true if every element is true"),
            _f("abs", (_X,), "elementwise", "absolute value"),
            _f("sqrt", (_X,), "elementwise", "square root"),
            _f("exp", (_X,), "elementwise", "exponential"),
            _f("log", (_X,), "elementwise", "natural logarithm"),
            _f("sin", (_X,), "elementwise", "sine"),
            _f("cos", (_X,), "elementwise", "cosine"),
            _f("tanh", (_X,), "elementwise", "hyperbolic tangent"),
            _f("min", (Param("a"), Param("b", None)), "minmax", "min(v): smallest element; min(a, b): elementwise", 1),
            _f("max", (Param("a"), Param("b", None)), "minmax", "max(v): largest element; max(a, b): elementwise", 1),
            _f("clip", (_X, Param("lo"), Param("hi")), "elementwise", "clip x to [lo, hi]"),
            _f("dot", (Param("a"), Param("b")), "dot", "dot product"),
            _f("cross", (Param("a"), Param("b")), "cross", "cross product of two [3] vectors"),
            _f("where", (Param("cond"), Param("a"), Param("b")), "where", "elementwise select"),
            _f("angle", (Param("u"), Param("v")), "angle", "angle between two vectors (radians)"),
            _f("quat_rotate", (Param("q"), Param("v")), "quat_rotate", "rotate [3] v by the wxyz quaternion q"),
            _f(
                "quat_rotate_inv",
                (Param("q"), Param("v")),
                "quat_rotate",
                "rotate [3] v by the inverse of the wxyz quaternion q",
            ),
            _f("one_hot", (Param("i"), Param("n")), "one_hot", "[n] vector with 1 at index round(i)"),
            _f(
                "tolerance",
                (
                    _X,
                    Param("lo", 0.0),
                    Param("hi", 0.0),
                    Param("margin", 0.0),
                    Param("sigmoid", "gaussian", mode=True),
                    Param("value_at_margin", 0.1),
                ),
                "elementwise",
                "dm_control rewards.tolerance: 1 inside [lo, hi], sigmoid falloff over margin",
            ),
        )
    }
)

#: dm_control sigmoids accepted by tolerance(sigmoid=...).
TOLERANCE_SIGMOIDS = (
    "gaussian",
    "hyperbolic",
    "long_tail",
    "reciprocal",
    "cosine",
    "linear",
    "quadratic",
    "tanh_squared",
)

#: Distribution name -> (minimum, maximum) number of positional arguments.
DISTRIBUTIONS: Mapping[str, tuple[int, int]] = MappingProxyType({"uniform": (1, 2), "gaussian": (1, 2)})

#: Swizzle letters -> element index.
SWIZZLE: Mapping[str, int] = MappingProxyType({"x": 0, "y": 1, "z": 2, "w": 3})


# Settings tables: views of the schema in ksimdsl.settings (kinds, choices, bounds, defaults live there).
# `Setting` (re-exported) has the value kind, the choices and the bounds of one `key=value`.

PHYSICS_SETTINGS: Mapping[str, Setting] = S.PhysicsSettings.file_table()

TRAIN_SETTINGS: Mapping[str, Setting] = S.TrainSettings.file_table()

POLICY_KINDS: tuple[str, ...] = S.PolicySettings.by_name()["kind"].choices

POLICY_SETTINGS: Mapping[str, Setting] = S.PolicySettings.file_table()

#: `amp` settings; its `features = [...]` line is a list of quantities, checked apart.
AMP_SETTINGS: Mapping[str, Setting] = S.AmpSettings.file_table()

#: The quantities an `amp` feature may read: computable from a clip frame's qpos and qvel alone.
AMP_QUANTITIES: tuple[str, ...] = (
    "joint_pos",
    "joint_vel",
    "qpos",
    "qvel",
    "base_pos",
    "base_quat",
    "base_lin_vel",
    "base_ang_vel",
    "local_lin_vel",
    "local_ang_vel",
    "projected_gravity",
)

#: Actuator kind -> its settings (all floats) with defaults; None: required.
ACTUATOR_KINDS: Mapping[str, Mapping[str, float | None]] = MappingProxyType(
    {
        kind: MappingProxyType({k: s.default for k, s in S.ActuatorSettings.kind_table(kind).items()})
        for kind in S.ACTUATOR_KINDS
    }
)

#: Curriculum kind -> its settings, and their defaults.
CURRICULUM_KINDS: Mapping[str, Mapping[str, Setting]] = MappingProxyType(
    {kind: S.CurriculumSettings.kind_table(kind) for kind in S.CURRICULUM_KINDS}
)

CURRICULUM_DEFAULTS: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {kind: MappingProxyType({k: s.default for k, s in table.items()}) for kind, table in CURRICULUM_KINDS.items()}
)

COMMAND_SETTINGS: Mapping[str, Setting] = S.CommandSettings.file_table()

#: reset / event assignment targets.
RESET_TARGETS = (
    "joint_pos",
    "joint_vel",
    "qpos",
    "qvel",
    "base_pos",
    "base_quat",
    "base_lin_vel",
    "base_ang_vel",
    "base_yaw",
)

#: Statements that may appear at most once (keyword as users write it).
SINGLE_STATEMENTS = (
    "task",
    "model",
    "physics",
    "engine",
    "episode",
    "actuators",
    "observe actor",
    "observe critic",
    "reward",
    "terminate",
    "randomize",
    "reset",
    "reference",
    "curriculum",
    "policy",
    "train",
    "amp",
)

#: What `ref.NAME` reads: the reference motion (`reference` statement) at the current phase.
REF_QUANTITIES: Mapping[str, str] = MappingProxyType(
    {
        "joint_pos": "the reference's joint_pos (hinge and slide joints)",
        "joint_vel": "the reference's joint_vel",
        "qpos": "the reference's generalized positions, (nq,)",
        "qvel": "the reference's generalized velocities, (nv,)",
        "base_pos": "the reference's root position, world frame, [3]",
        "base_quat": "the reference's root orientation quaternion (wxyz), [4]",
        "body_pos": 'ref.body_pos("name"): the reference\'s world position of a body, [3]',
        "phase": "where the reference is: 0 at its first frame, 1 at its last",
    }
)

#: Options of the `reference` statement: (what happens at the clip's end, where an episode starts).
REF_OPTIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"end": ("loop", "clamp"), "start": ("random", "fixed")}
)
