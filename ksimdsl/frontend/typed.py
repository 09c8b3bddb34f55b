"""The typed, resolved task: what the checker produces and the IR lowering consumes.

`ksimdsl.frontend.check` turns the untyped `ast.Module` into a `CheckedTask`.
Everything in it is resolved against the MJCF model: names became ids and
addresses, globs became index tuples, units were folded (angles in radians,
times in seconds, or in control steps where a count is due), keyword arguments
were put into a fixed order with defaults filled in, and `let` names were
substituted (the name survives as a `Let` wrapper so generated code can use it).

Typed expressions
-----------------
Every expression node is a frozen dataclass with a `type: Type` and a `span`
(the source region, excluded from equality so that two occurrences of the same
expression compare equal; `prev` slots and contact queries are deduplicated
that way). The lowering only needs these node kinds:

    Const(value)                    a number or a constant vector (bool consts: 0.0/1.0 with kind "bool")
    PhysRead(array, elements)       elements of a raw physics array of docs/architecture.md
    Level()                         the env's curriculum level in [0, 1]
    Action()                        the policy action, shape (action_size,)
    StateRef(name)                  a `state` variable (value before this step's update)
    CommandRef(name)                a command's current value, shape (number of fields,)
    Prev(expr, slot)                `prev(expr)`: mem slot `slot` of `CheckedTask.prev_slots`
    Let(name, value)                a `let` name; lower `value`, use `name` for readability
    Quantity(name, arg, value)      a built-in quantity (base_ang_vel, body_pos("torso"), ...);
                                    `value` is its expansion into the other node kinds, so
                                    lowering `value` is always correct
    Apply(func, args, mode)         a math function (see FUNCTIONS in ksimdsl.frontend.builtins)
    Gather(base, indices)           constant-index selection (swizzle, v[i], v[i:j], v["glob"])
    Concat(items)                   vector literal with non-constant elements
    Unary(op, operand)              "-" (float)
    Binary(op, left, right)         "+ - * / ^" elementwise, scalars broadcast
    Compare(op, left, right)        "< <= > >= == !=" elementwise -> bool
    Logic(op, operands)             "and" / "or" (2 operands), "not" (1 operand), bool -> bool
    Where(cond, a, b)               elementwise select
    Cast(operand)                   bool -> float (1.0 / 0.0)
    Dist(kind, params)              a random draw of shape `type.shape` (reset, randomize, event,
                                    command, noise, bias, zero_offset, every, state init)
    RefRead(table, columns, quats)  the reference motion at the current phase (`ref.*`, `reference`)

Shapes are () for scalars or (n,) for vectors; binary operations broadcast a
scalar against a vector, never two vectors of different lengths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ksimdsl.errors import Span
from ksimdsl.frontend import typed_expr as _expr
from ksimdsl.model.compose import Composition
from ksimdsl.settings import AmpSettings, CurriculumSettings, PolicySettings, TrainSettings
from ksimdsl.frontend.typed_expr import (  # re-exported: `typed` is the one module to import
    BOOL,
    FLOAT,
    Action,
    Apply,
    Binary,
    Cast,
    CommandRef,
    Compare,
    Concat,
    Const,
    Dist,
    Expr,
    Gather,
    Let,
    Level,
    Logic,
    PhysRead,
    Prev,
    Quantity,
    RefRead,
    StateRef,
    Type,
    Unary,
    Where,
    children,
    walk,
)
from ksimdsl.frontend.typed_expr import span_field as _span

__all__ = [  # every expression node of typed_expr, then the task
    *(name for name in _expr.__all__ if name != "span_field"),
    "FreeRoot",
    "ModelSummary",
    "AmpDef",
    "Physics",
    "Actuators",
    "LetDef",
    "StateDef",
    "CommandFieldDef",
    "CommandDef",
    "ObsItem",
    "RewardDef",
    "TerminationDef",
    "MetricDef",
    "RandomizeDef",
    "Write",
    "EventDef",
    "ContactQuery",
    "HeightScanQuery",
    "PrevSlot",
    "ReferenceDef",
    "CheckedTask",
]

# --------------------------------------------------------------------------- task


@dataclass(frozen=True, slots=True)
class FreeRoot:
    """The model's root free joint (the `base_*` quantities read it)."""

    joint_id: int
    body_id: int
    qpos_adr: int  # qpos[qpos_adr : qpos_adr+3] position, [+3 : +7] quaternion (wxyz)
    dof_adr: int  # qvel[dof_adr : +3] world linear velocity, [+3 : +6] body-frame angular


@dataclass(frozen=True, slots=True)
class ModelSummary:
    """Sizes and defaults of the MJCF model the task was checked against."""

    path: str  # as written in the task (or the override)
    resolved_path: str  # absolute file path
    nq: int
    nv: int
    nu: int
    nbody: int
    njnt: int
    ngeom: int
    nsite: int
    nsensor: int
    nsensordata: int
    nkey: int
    timestep: float  # MJCF <option timestep>
    default_qpos: tuple[float, ...]  # keyframe 0 if the model has one, else qpos0
    root: FreeRoot | None
    composition: Composition = Composition()  # what the task adds to the MJCF (the sizes above include it)
    terrain_span: Span | None = _span()  # the model block's `terrain` line (where the spawn draws come from)


@dataclass(frozen=True, slots=True)
class Physics:
    """Resolved `physics` settings; `substeps * dt == ctrl_dt`."""

    dt: float
    ctrl_dt: float
    substeps: int
    solver: str  # "newton" | "cg"
    iterations: int
    ls_iterations: int
    impl: str = "auto"  # the MJX implementation: "auto" | "jax" | "warp" (not in the kernels)
    naconmax: int = 0  # impl=warp buffers per env (0: from the model)
    njmax: int = 0
    sphere_hfield: str = "manifold"  # impl=jax: "manifold" (MJX's 4 contacts) | "deepest" (1)


@dataclass(frozen=True, slots=True)
class Actuators:
    """The action source. One entry per MJCF actuator (`nu` of them) in every tuple.

    kind "position": target = default_pos + action_scale * action (+ zero offset),
    PD gains kp/kd (glob overrides applied). "velocity": target velocity
    action_scale * action, gain kd. "position_velocity": 2 nu actions, the
    position targets as for "position", then target velocities velocity_scale *
    action, gains kp/kd. "torque": ctrl = scale * action. "ctrl": ctrl = action.
    For "torque" and "ctrl", an actuator that does not drive a joint has joint
    name "" and addresses -1. kp and kd are empty unless the kind has them
    (ksimdsl.settings.ActuatorSettings), default_pos unless the kind sets a
    position target.
    """

    kind: str
    names: tuple[str, ...]  # actuator names
    joint_names: tuple[str, ...]  # driven joint per actuator ("" if none)
    joint_qpos_adr: tuple[int, ...]
    joint_dof_adr: tuple[int, ...]
    kp: tuple[float, ...]
    kd: tuple[float, ...]
    action_scale: float
    velocity_scale: float
    scale: float
    default_pos: tuple[float, ...]
    ctrl_range: tuple[tuple[float, float], ...] | None  # None: no actuator is ctrllimited
    latency: tuple[float, float] | None  # seconds, per episode uniform
    zero_offset: Dist | None  # shape (nu,), radians
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class LetDef:
    """`let name = value` (for reference; uses are already substituted as `Let` nodes)."""

    name: str
    value: Expr
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class StateDef:
    """`state name[size] = init -> update`; `type` is the declared shape (float)."""

    name: str
    type: Type
    init: Expr  # constants, level, distributions; already broadcast to `type`
    update: Expr  # same shape as `type`; sees pre-update values of every state
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class CommandFieldDef:
    """One command field: a scalar `Dist` or constant."""

    name: str
    value: Expr
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class CommandDef:
    """`command name resample every T zero_prob=p`; resample_steps None: once per episode."""

    name: str
    fields: tuple[CommandFieldDef, ...]
    resample_steps: int | None
    zero_prob: float
    span: Span | None = _span()

    @property
    def size(self) -> int:
        return len(self.fields)


@dataclass(frozen=True, slots=True)
class ObsItem:
    """One observation: clean `value` (float), then delay, noise and bias (actor only), then history.

    `noise` is additive, or multiplicative when `noise_multiplicative`; `bias` is
    drawn once per episode; `delay` is (lo, hi) control steps drawn per episode;
    `history` K > 1 observes the last K values (as observed), newest first.
    """

    name: str
    value: Expr
    noise: Dist | None = None
    noise_multiplicative: bool = False
    bias: Dist | None = None
    delay: tuple[int, int] | None = None
    history: int = 1
    span: Span | None = _span()

    @property
    def size(self) -> int:
        """The size of one value (the observation holds `history` of them: `obs_size`)."""
        return self.value.type.size

    @property
    def obs_size(self) -> int:
        return self.size * self.history


@dataclass(frozen=True, slots=True)
class RewardDef:
    """`name weight : value`; both scalar float; weight uses only constants and `level`."""

    name: str
    weight: Expr
    value: Expr
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class TerminationDef:
    """`name : cond [success]`; cond is a scalar bool."""

    name: str
    cond: Expr
    success: bool
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class MetricDef:
    """`name = value` in the `metric` block: a scalar float computed every control step, logged and
    averaged per episode, never part of the reward."""

    name: str
    value: Expr
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class RandomizeDef:
    """`field[rows] op value` on an MjModel array, per env, per reset.

    `rows` are the selected first-axis indices (all rows when nothing was
    selected); `field_shape` is the array's full shape. `value` is a Dist of
    shape (len(rows),) (one draw per row, applied to every column of a 2-D
    field) or a scalar expression of constants and `level`.
    """

    field: str
    rows: tuple[int, ...]
    field_shape: tuple[int, ...]
    op: str  # "=" | "+=" | "*="
    value: Expr
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Write:
    """A `reset`/`event` assignment on the physics state, in canonical form.

    target "qpos" / "qvel": `index` are addresses into qpos / qvel.
    target "base_ang_vel": `index` are world-frame components (0..2) of the root's
    angular velocity (lowering rotates into the free joint's body-frame qvel).
    target "base_yaw": `index` is (); "=" sets the root's heading about world z
    (keeping roll and pitch), "+=" rotates the root about world z.
    `value` has shape (len(index),) (scalar for base_yaw); scalar distributions
    were broadcast to one draw per element.
    """

    target: str
    index: tuple[int, ...]
    op: str  # "=" | "+=" | "*="
    value: Expr
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class EventDef:
    """`event name every T`: the writes fire when the event's timer runs out.

    `every` is in control steps: a Const, or a scalar Dist redrawn after each firing.
    """

    name: str
    every: Expr
    writes: tuple[Write, ...]
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class ContactQuery:
    """Element c of the engine's contact table: any contact between a geom of A and one of B."""

    geoms_a: tuple[int, ...]
    geoms_b: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class HeightScanQuery:
    """`height_scan(BODY, grid=[nx, ny], spacing=S)`: nx * ny points of the engine's height-scan array."""

    body: int
    nx: int
    ny: int
    spacing: float

    @property
    def size(self) -> int:
        return self.nx * self.ny


@dataclass(frozen=True, slots=True)
class PrevSlot:
    """A `prev(expr)` memory slot, written at the end of every step."""

    slot: int
    expr: Expr


@dataclass(frozen=True, eq=False)
class ReferenceDef:
    """`reference "clips/walk.npz" loop random`: the clip, mapped onto the model (`ksimdsl.model.motion`).

    `qpos` [F, nq] and `qvel` [F, nv] are in the model's order; `quat_adr` are the qpos addresses of
    its quaternions (free and ball joints: normalized after interpolation); `bodies` the model bodies
    `ref.body_pos` reads, in the column order of `body_pos` [F, len(bodies), 3]. The phase runs over the
    clip's `frames - 1` intervals; `loop` wraps at the end (else it stays at the last frame); a
    `random_start` is drawn per reset (else 0).
    """

    path: str  # as written in the task
    resolved_path: str
    loop: bool
    random_start: bool
    fps: float
    qpos: Any  # np.ndarray (F, nq)
    qvel: Any  # np.ndarray (F, nv)
    quat_adr: tuple[int, ...]
    bodies: tuple[int, ...] = ()
    body_names: tuple[str, ...] = ()
    body_pos: Any = None  # np.ndarray (F, len(bodies), 3), None without bodies
    qvel_given: bool = True  # False: velocities are finite differences of the clip's qpos
    span: Span | None = None

    @property
    def frames(self) -> int:
        return int(self.qpos.shape[0])


@dataclass(frozen=True)
class AmpDef:
    """The `amp` block: discriminator settings, the feature pieces (ksimdsl.model.amp_features), the
    source text of each feature, and the reference clip's features resampled at ctrl_dt, [K, F]."""

    settings: AmpSettings
    features: tuple[dict[str, Any], ...]
    names: tuple[str, ...]
    reference: Any  # np.ndarray [K, F] float32
    span: Span | None = None


@dataclass(frozen=True, slots=True)
class CheckedTask:
    """A fully checked task: every name resolved, every shape known, units folded.

    `train`, `policy` and `curriculum` are the validated settings of `ksimdsl.settings`.
    """

    name: str
    doc: str
    source_path: str
    model: ModelSummary
    physics: Physics
    engine: str  # "auto" | "mjx" | "mujoco"
    episode_steps: int
    actuators: Actuators
    action_size: int
    lets: tuple[LetDef, ...]
    states: tuple[StateDef, ...]
    commands: tuple[CommandDef, ...]
    obs_actor: tuple[ObsItem, ...]
    obs_critic: tuple[ObsItem, ...]
    rewards: tuple[RewardDef, ...]
    terminations: tuple[TerminationDef, ...]
    randomize: tuple[RandomizeDef, ...]
    reset: tuple[Write, ...]
    events: tuple[EventDef, ...]
    contact_queries: tuple[ContactQuery, ...]
    prev_slots: tuple[PrevSlot, ...]
    curriculum: CurriculumSettings
    policy: PolicySettings
    train: TrainSettings
    source_text: str = ""  # the task file's text (quoted in the generated code's comments)
    metrics: tuple[MetricDef, ...] = ()
    reference: ReferenceDef | None = None  # the `reference` statement (`reset` may start from it)
    height_scans: tuple[HeightScanQuery, ...] = ()  # in the order of their points in `height_scan`
    ground_geoms: tuple[int, ...] = ()  # what height scans hit (ksimdsl.model.ground); empty without scans
    curriculum_span: Span | None = _span()  # the `curriculum` statement
    amp: AmpDef | None = None  # the `amp` block (adversarial motion prior; needs `reference`)
