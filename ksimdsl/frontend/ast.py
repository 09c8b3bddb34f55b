"""The untyped syntax tree of a `.ksim` file, as the parser builds it.

Every node is a frozen dataclass with a `span` (1-based line/col, see
`ksimdsl.errors.Span`). The checker (`ksimdsl.frontend.check`) resolves names
against the MJCF model and turns this into the typed task (`CheckedTask`).

Expressions
-----------
    Num(value, unit)           1, 0.5, 3e-4, 10ms, 0.5m (unit in {None,"deg","ms","m","s","steps"})
    Str(value)                 "foot_left", "*_knee*"
    Name(id)                   joint_pos, level, air_time
    Vector(items)              [0, 0, 1], [cos(a), sin(a), joint_vel]
    Range(lo, hi)              0..10ms   (only where a statement allows it)
    Call(func, args, kwargs)   exp_kernel(x, 0.25), tolerance(x, lo=0, hi=1), ref.body_pos("foot")
                               (a call on a name, `NAME.f(...)`, has func "NAME.f")
    Attr(base, name)           base_pos.z, cmd.vel, base_lin_vel.xy
    Index(base, index)         v["glob"], v[3], v[1:4]   (index: Expr | Slice)
    Slice(lo, hi)              1:4 (either side may be None)
    Unary(op, operand)         -x, not x        (op in {"-", "not"})
    Binary(op, left, right)    + - * / ^ < <= > >= == != and or

Statements
----------
See the classes below; the file is `Module(statements)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from ksimdsl.errors import Span

# --------------------------------------------------------------------------- expressions


@dataclass(frozen=True, slots=True)
class Num:
    value: float
    unit: str | None
    span: Span
    is_int: bool = False  # written without '.' or exponent


@dataclass(frozen=True, slots=True)
class Str:
    value: str
    span: Span


@dataclass(frozen=True, slots=True)
class Name:
    id: str
    span: Span


@dataclass(frozen=True, slots=True)
class Vector:
    items: tuple["Expr", ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Range:
    lo: "Expr"
    hi: "Expr"
    span: Span


@dataclass(frozen=True, slots=True)
class Keyword:
    name: str
    value: "Expr"
    span: Span  # span of `name=value`


@dataclass(frozen=True, slots=True)
class Call:
    func: str
    args: tuple["Expr", ...]
    kwargs: tuple[Keyword, ...]
    span: Span
    func_span: Span  # span of the function name alone


@dataclass(frozen=True, slots=True)
class Attr:
    base: "Expr"
    name: str
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class Slice:
    lo: "Expr | None"
    hi: "Expr | None"
    span: Span


@dataclass(frozen=True, slots=True)
class Index:
    base: "Expr"
    index: "Expr | Slice"
    span: Span


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "-" | "not"
    operand: "Expr"
    span: Span


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # "+" "-" "*" "/" "^" "<" "<=" ">" ">=" "==" "!=" "and" "or"
    left: "Expr"
    right: "Expr"
    span: Span


Expr = Union[Num, Str, Name, Vector, Range, Call, Attr, Index, Unary, Binary]

# --------------------------------------------------------------------------- statements


@dataclass(frozen=True, slots=True)
class Setting:
    """`key=value` in a settings line (physics, train, policy, actuators, curriculum, command)."""

    key: str
    value: Expr
    span: Span
    key_span: Span


@dataclass(frozen=True, slots=True)
class Assign:
    """`target op value` with op in {"=", "+=", "*="}; target is Name/Attr/Index.

    Used by actuators (`kp["*_knee*"] = 80`), randomize, reset and event blocks.
    """

    target: Expr
    op: str
    value: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class TaskStmt:
    name: str
    doc: str | None
    span: Span


@dataclass(frozen=True, slots=True)
class ModelFloor:
    """`floor friction=1.0`: add a ground plane."""

    settings: tuple[Setting, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class TerrainTile:
    """`rough amplitude=0.02m..0.1m`: one tile kind of a `terrain` (values may be ranges)."""

    kind: str
    settings: tuple[Setting, ...]
    span: Span
    kind_span: Span


@dataclass(frozen=True, slots=True)
class ModelTerrain:
    """`terrain rows=5 size=8m ...` and its tile lines: a height field instead of a floor."""

    settings: tuple[Setting, ...]
    tiles: tuple[TerrainTile, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class ModelImu:
    """`imu imu at "imu_in_pelvis"`: gyro, accelerometer and orientation sensors at a site or body."""

    name: str
    target: str
    span: Span
    name_span: Span
    target_span: Span


@dataclass(frozen=True, slots=True)
class PoseJoint:
    """`"*_knee_joint" = 0.3` in a `pose` block."""

    joint: str
    value: Expr
    span: Span
    joint_span: Span


@dataclass(frozen=True, slots=True)
class ModelPose:
    """`pose base_height=0.78` and joint-glob lines: the default pose (keyframe 0)."""

    settings: tuple[Setting, ...]
    joints: tuple[PoseJoint, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class ModelCollide:
    """`collide only ["*_foot*"] condim=3`: only these geoms collide, and only with the world."""

    geoms: Expr
    settings: tuple[Setting, ...]
    span: Span


ModelPart = Union[ModelFloor, ModelTerrain, ModelImu, ModelPose, ModelCollide]


@dataclass(frozen=True, slots=True)
class ModelStmt:
    path: str
    span: Span
    path_span: Span
    parts: tuple[ModelPart, ...] = ()  # the composition block, in source order


@dataclass(frozen=True, slots=True)
class SettingsStmt:
    """`physics ...`, `train ...` (settings may continue on indented lines)."""

    keyword: str  # "physics" | "train"
    settings: tuple[Setting, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class EngineStmt:
    engine: str  # "mjx" | "mujoco" | "auto" (checked later)
    span: Span
    engine_span: Span


@dataclass(frozen=True, slots=True)
class EpisodeStmt:
    length: Num  # `20s` or `1000 steps`
    span: Span


@dataclass(frozen=True, slots=True)
class ActuatorLatency:
    range: Range
    span: Span


@dataclass(frozen=True, slots=True)
class ActuatorZeroOffset:
    dist: Call
    span: Span


@dataclass(frozen=True, slots=True)
class ActuatorsStmt:
    kind: str  # "position" | "torque" | "ctrl"
    kind_span: Span
    settings: tuple[Setting, ...]
    overrides: tuple[Assign, ...]  # kp["*_knee*"] = 80
    latency: ActuatorLatency | None
    zero_offset: ActuatorZeroOffset | None
    span: Span


@dataclass(frozen=True, slots=True)
class LetStmt:
    name: str
    value: Expr
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class StateStmt:
    """`state air_time[2] = 0 -> where(feet, 0, air_time + ctrl_dt)`; size None means scalar."""

    name: str
    size: Expr | None
    init: Expr
    update: Expr
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class CommandField:
    name: str
    dist: Expr  # usually a Call: uniform(a, b), gaussian(s), or a constant
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class CommandStmt:
    """`command vel resample every 5s zero_prob=0.1` + one field per line."""

    name: str
    resample_every: Expr | None  # None: sampled once per episode
    settings: tuple[Setting, ...]  # zero_prob=...
    fields: tuple[CommandField, ...]
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class Noise:
    """`~ gaussian(0.01)` (additive) or `~ gaussian(0.01) *` (multiplicative)."""

    dist: Call
    multiplicative: bool
    span: Span


@dataclass(frozen=True, slots=True)
class ObsItem:
    name: str
    value: Expr
    noise: Noise | None
    bias: Call | None
    delay: Range | None
    span: Span
    name_span: Span
    history: Expr | None = None  # `history K`


@dataclass(frozen=True, slots=True)
class ObsInclude:
    """A bare `actor` line inside `observe critic`: every actor observation, clean."""

    group: str
    span: Span


@dataclass(frozen=True, slots=True)
class ObserveStmt:
    group: str  # "actor" | "critic"
    items: tuple[ObsItem | ObsInclude, ...]
    span: Span
    group_span: Span


@dataclass(frozen=True, slots=True)
class RewardTerm:
    name: str
    weight: Expr
    value: Expr
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class RewardStmt:
    terms: tuple[RewardTerm, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class TerminationTerm:
    name: str
    cond: Expr
    success: bool
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class TerminateStmt:
    terms: tuple[TerminationTerm, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class MetricItem:
    """`name = value`: a scalar logged every control step (averaged per episode), never rewarded."""

    name: str
    value: Expr
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class MetricStmt:
    items: tuple[MetricItem, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class RandomizeStmt:
    assigns: tuple[Assign, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class ResetStmt:
    """`reset` and its writes; `from_reference` is the span of a first line `from reference`, if any."""

    assigns: tuple[Assign, ...]
    span: Span
    from_reference: Span | None = None


@dataclass(frozen=True, slots=True)
class EventStmt:
    """`event push every uniform(1s, 3s)` + assignments."""

    name: str
    every: Expr
    assigns: tuple[Assign, ...]
    span: Span
    name_span: Span


@dataclass(frozen=True, slots=True)
class ReferenceStmt:
    """`reference "clips/walk.npz" loop random`: a motion clip and its options (names, checked later)."""

    path: str
    span: Span
    path_span: Span
    options: tuple[Name, ...] = ()


@dataclass(frozen=True, slots=True)
class CurriculumStmt:
    """`curriculum episode_length levels=10 ...`, `curriculum linear step=...`, `curriculum constant 1.0`."""

    kind: str
    kind_span: Span
    args: tuple[Expr, ...]  # positional (constant's value)
    settings: tuple[Setting, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class PolicyStmt:
    """`policy mlp hidden=[256, 256] dist=mixture(5) min_std=0.01`."""

    kind: str
    kind_span: Span
    settings: tuple[Setting, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class AmpStmt:
    """`amp hidden=[256, 256] weight=0.5 gp=5.0` with `features = [joint_pos, ...]` among its settings."""

    settings: tuple[Setting, ...]
    span: Span
    keyword_span: Span


Statement = Union[
    TaskStmt,
    ModelStmt,
    SettingsStmt,
    EngineStmt,
    EpisodeStmt,
    ActuatorsStmt,
    LetStmt,
    StateStmt,
    CommandStmt,
    ObserveStmt,
    RewardStmt,
    TerminateStmt,
    MetricStmt,
    RandomizeStmt,
    ResetStmt,
    EventStmt,
    ReferenceStmt,
    CurriculumStmt,
    PolicyStmt,
    AmpStmt,
]


@dataclass(frozen=True, slots=True)
class Module:
    statements: tuple[Statement, ...]
    path: str
