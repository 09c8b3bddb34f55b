"""The settings schema: every `physics`, `train`, `policy`, `curriculum`, `actuators` and command setting, in one place.

Each section is a frozen dataclass; a field is one setting, declared with `setting(...)`:
its default, its bounds and a line of documentation.

    @dataclass(frozen=True)
    class TrainSettings(Section):
        lr: float = setting(3e-4, gt=0, le=1, doc="Adam learning rate")

The type annotation gives the setting's kind: `int`, `float` (`unit="s"`: a
duration, written with a unit in a task file), `bool`, a `Literal[...]` of
names, `tuple[int, ...]` (layer sizes). Everything else is derived from these
classes: the checker's tables (`ksimdsl.frontend.builtins`), the defaults of
`ksimdsl.abi`, command-line overrides (`ksimdsl.runtime.training.overrides`), the PPO
and network configurations of the runtime, the run's config.json and the
settings tables of docs/language.md (tests/test_settings.py compares them).

Validation lives here too, so a task file (`ksimdsl check`, FILE:LINE:COL), a
command-line override and a stored run are held to the same rules:

* `value_problem(setting, value)`: one value (type, choices, finite, bounds);
* `problems(cls, values)`: the values of one section and its cross-field rules
  (num_envs divisible by minibatches, ctrl_dt a multiple of dt, ...);
* `memory_problem(...)`: whether a rollout fits in this machine's memory.

Constructing a section validates it (`KsimError`), so `dataclasses.replace`
never yields invalid settings. This module imports nothing from ksimdsl but
`ksimdsl.errors`: the frontend, the ABI and the runtime all import it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Iterator, Literal, Mapping, get_args

from ksimdsl.errors import KsimError
from ksimdsl.settings.schema import (
    Problem,
    Section,
    Setting,
    docs_table,
    format_value,
    problems,
    setting,
    value_problem,
)

__all__ = [
    "Engine",
    "ENGINES",
    "Setting",
    "Problem",
    "Section",
    "setting",
    "PhysicsSettings",
    "TrainSettings",
    "PolicySettings",
    "CurriculumSettings",
    "AmpSettings",
    "CommandSettings",
    "ActuatorSettings",
    "ACTUATOR_KINDS",
    "FEEDBACK_ACTUATORS",
    "POSITION_TARGET_ACTUATORS",
    "actions_per_actuator",
    "CURRICULUM_KINDS",
    "value_problem",
    "problems",
    "minibatch_problem",
    "substeps_of",
    "rollout_bytes",
    "machine_memory_bytes",
    "memory_problem",
    "format_value",
    "docs_table",
    "INT32_MAX",
    "ADAPTIVE_LR_RANGE",
    "MAX_SUBSTEPS",
]

#: Integers the runtime keeps in int32 (step counters, indices) stay below this.
#: Iterations a task trains for when it sets neither `steps` nor `max_seconds`.
DEFAULT_ITERATIONS = 100
INT32_MAX = 2**31 - 1
#: The learning rate of `lr_schedule=adaptive` stays in [low, high] (rsl_rl's bounds).
ADAPTIVE_LR_RANGE = (1e-5, 1e-2)
#: Physics substeps per control step (ctrl_dt / dt) at most.
MAX_SUBSTEPS = 10_000
#: Transitions of one rollout (num_envs * rollout) at most: jax indexes them with int32.
MAX_TRANSITIONS = INT32_MAX

Engine = Literal["auto", "mjx", "mujoco"]
#: `engine` choices: auto picks mjx on an accelerator, else the C MuJoCo engine.
ENGINES: tuple[str, ...] = get_args(Engine)


# --------------------------------------------------------------------------- the sections


@dataclass(frozen=True)
class PhysicsSettings(Section):
    """`physics dt=5ms ctrl_dt=20ms solver=newton iterations=1 ls_iterations=4 impl=warp`.

    A task without a `physics` statement uses the model's timestep as dt.
    `impl`, `naconmax`, `njmax` and `sphere_hfield` choose how the MJX engine
    steps (they do not change the kernels): see ksimdsl.runtime.engine.resolve_impl,
    ksimdsl.runtime.engine.mjx.physics and ksimdsl.runtime.engine.mjx.hfield.
    """

    SECTION: ClassVar[str] = "physics"
    DERIVED: ClassVar[tuple[str, ...]] = ("substeps",)

    dt: float = setting(0.004, unit="s", ge=1e-6, le=1.0, doc="simulation timestep (default: the model's)")
    ctrl_dt: float = setting(0.02, unit="s", gt=0, le=10.0, doc="control period, a whole multiple of dt")
    solver: Literal["newton", "cg", "pgs"] = setting("newton", doc="constraint solver (pgs: C engine only)")
    iterations: int = setting(4, ge=1, le=10_000, doc="solver iterations")
    ls_iterations: int = setting(8, ge=1, le=10_000, doc="line-search iterations")
    impl: Literal["auto", "jax", "warp"] = setting(
        "auto", doc="MJX implementation: jax, warp (MuJoCo Warp), auto (warp on one NVIDIA GPU when installed)"
    )
    naconmax: int = setting(0, ge=0, le=1_000_000, doc="impl=warp: contacts per env (0: from the model)")
    njmax: int = setting(0, ge=0, le=1_000_000, doc="impl=warp: constraint rows per env (0: from the model)")
    sphere_hfield: Literal["manifold", "deepest"] = setting(
        "manifold", doc="impl=jax: contacts of a sphere on a height field (MJX's 4-point manifold, or the deepest one)"
    )

    @property
    def substeps(self) -> int:
        """Physics steps per control step."""
        return substeps_of(self.dt, self.ctrl_dt)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if d["sphere_hfield"] == "manifold":  # absent at its default: the SPEC and run hashes of older tasks
            del d["sphere_hfield"]
        return {"dt": d.pop("dt"), "ctrl_dt": d.pop("ctrl_dt"), "substeps": self.substeps, **d}

    @classmethod
    def cross_problems(cls, v: Mapping[str, Any]) -> Iterator[Problem]:
        dt, ctrl_dt = v["dt"], v["ctrl_dt"]
        n = substeps_of(dt, ctrl_dt)
        if n < 1 or abs(n * dt - ctrl_dt) > 1e-6 * ctrl_dt + 1e-12:
            yield Problem(
                ("ctrl_dt", "dt"),
                f"ctrl_dt ({format_value(ctrl_dt * 1000)}ms) must be a whole multiple of dt ({format_value(dt * 1000)}ms)",
            )
        elif n > MAX_SUBSTEPS:
            yield Problem(
                ("dt", "ctrl_dt"),
                f"ctrl_dt / dt = {format_value(n)} physics steps per control step; at most {MAX_SUBSTEPS} are supported",
            )


@dataclass(frozen=True)
class PolicySettings(Section):
    """`policy mlp hidden=[256, 256] dist=mixture(5) min_std=0.01 max_std=1.0`.

    kind: "mlp" | "gru"; hidden: layer widths (for gru, hidden[0] is the GRU
    width and hidden[1:] dense layers after it); layers: stacked GRU cells;
    dist: "normal" | "mixture" with `mixtures` components; std bounds and the
    initial std of the action distribution; activation of the dense layers.
    """

    SECTION: ClassVar[str] = "policy"

    kind: Literal["mlp", "gru"] = setting("mlp", in_file=False, doc="network: `policy mlp` or `policy gru`")
    hidden: tuple[int, ...] = setting((256, 256), ge=1, le=65_536, doc="layer widths (gru default: 256)")
    layers: int = setting(1, ge=1, le=64, doc="stacked GRU cells (gru)")
    dist: Literal["normal", "mixture"] = setting("normal", kind="policy_dist", doc="`normal` or `mixture(K)`")
    mixtures: int = setting(1, ge=1, le=1024, via="dist", in_file=False, doc="mixture components (dist=mixture(K))")
    min_std: float = setting(0.01, gt=0, doc="smallest action std")
    max_std: float = setting(1.0, gt=0, doc="largest action std")
    init_std: float = setting(0.5, gt=0, doc="initial action std, in [min_std, max_std]")
    activation: Literal["elu", "relu", "tanh", "silu", "gelu"] = setting(
        "elu", aliases={"swish": "silu"}, doc="activation of the dense layers (swish is silu)"
    )

    @classmethod
    def cross_problems(cls, v: Mapping[str, Any]) -> Iterator[Problem]:
        if v["min_std"] > v["max_std"]:
            yield Problem(("min_std", "max_std"), "policy min_std must not exceed max_std")
        elif not v["min_std"] <= v["init_std"] <= v["max_std"]:
            yield Problem(
                ("init_std", "min_std", "max_std"),
                f"policy init_std={format_value(v['init_std'])} is outside "
                f"[min_std, max_std] = [{format_value(v['min_std'])}, {format_value(v['max_std'])}]",
            )


@dataclass(frozen=True)
class TrainSettings(Section):
    """`train num_envs=256 rollout=32 epochs=4 minibatches=4 lr=3e-4 ...`: PPO and the training loop."""

    SECTION: ClassVar[str] = "train"

    num_envs: int = setting(256, ge=1, le=2**24, doc="parallel environments")
    rollout: int = setting(32, ge=1, le=100_000, doc="control steps per environment per iteration")
    epochs: int = setting(4, ge=1, le=10_000, doc="passes over each rollout")
    minibatches: int = setting(4, ge=1, le=2**24, doc="minibatches per epoch; they split the environments")
    lr: float = setting(3e-4, gt=0, le=1.0, doc="learning rate")
    optimizer: Literal["adam", "adamw"] = setting("adam", doc="optimizer")
    weight_decay: float = setting(0.0, ge=0, doc="adamw weight decay")
    warmup: int = setting(0, ge=0, le=INT32_MAX, doc="optimizer steps of linear lr warmup")
    lr_schedule: Literal["constant", "adaptive"] = setting(
        "constant", doc="`adaptive`: lr x or / 1.5 each minibatch to keep the policy's KL near desired_kl"
    )
    desired_kl: float = setting(
        0.01, gt=0, le=1, doc="lr_schedule=adaptive: target KL of the policy from the update's start"
    )
    gamma: float = setting(0.99, ge=0, le=1, doc="discount")
    lam: float = setting(0.95, key="lambda", ge=0, le=1, doc="GAE lambda")
    clip: float = setting(0.2, gt=0, doc="PPO ratio clip")
    value_clip: float = setting(0.0, ge=0, doc="value clip (0: plain MSE)")
    entropy: float = setting(0.0, ge=0, doc="entropy bonus coefficient")
    value_coef: float = setting(0.5, ge=0, doc="value loss coefficient")
    max_grad_norm: float = setting(1.0, ge=0, doc="gradient norm clip (0: off)")
    normalize_obs: bool = setting(True, doc="running observation normalization")
    normalize_adv: bool = setting(True, doc="per-minibatch advantage normalization")
    steps: int = setting(
        0, ge=0, le=INT32_MAX, doc="training iterations in total, over resumes (0: until max_seconds, or 100 without it)"
    )
    max_seconds: float = setting(0.0, ge=0, doc="stop after this wall time (0: no limit)")
    seed: int = setting(0, ge=0, le=2**32 - 1, doc="random seed")
    checkpoint_every: int = setting(50, ge=0, le=INT32_MAX, doc="iterations between checkpoints (0: only at the end)")
    devices: int = setting(0, ge=0, le=65_536, doc="local devices to shard the environments over (0: all)")
    watchdog_s: float = setting(600.0, ge=0, doc="report an iteration slower than this as a stall (0: off)")
    media_every_s: float = setting(600.0, ge=0, doc="seconds between videos and plots (0: only at the end)")
    video: bool = setting(True, doc="write videos (false: plots only)")

    @property
    def iteration_limit(self) -> int | None:
        """Iterations to train for: `steps`; when it is 0, none (max_seconds decides) or 100 without max_seconds."""
        if self.steps > 0:
            return self.steps
        return None if self.max_seconds > 0 else DEFAULT_ITERATIONS

    @classmethod
    def cross_problems(cls, v: Mapping[str, Any]) -> Iterator[Problem]:
        text = minibatch_problem(v["num_envs"], v["minibatches"])
        if text is not None:
            yield Problem(("num_envs", "minibatches"), text)
        if v["num_envs"] * v["rollout"] > MAX_TRANSITIONS:
            yield Problem(
                ("num_envs", "rollout"),
                f"num_envs * rollout = {format_value(v['num_envs'] * v['rollout'])} transitions per iteration; "
                f"at most {MAX_TRANSITIONS} are supported",
            )
        low, high = ADAPTIVE_LR_RANGE
        if v["lr_schedule"] == "adaptive" and not low <= v["lr"] <= high:
            yield Problem(
                ("lr", "lr_schedule"),
                f"with lr_schedule=adaptive, lr is the starting value of a learning rate kept in "
                f"[{format_value(low)}, {format_value(high)}]; got lr={format_value(v['lr'])}",
            )


@dataclass(frozen=True)
class AmpSettings(Section):
    """`amp hidden=[256, 256] weight=0.5 gp=5.0 lr=1e-4 replay=100000`: the adversarial motion prior's discriminator.

    Its `features = [...]` line (quantities, not a setting) is checked apart (ksimdsl.frontend.check.amp).
    """

    SECTION: ClassVar[str] = "amp"

    hidden: tuple[int, ...] = setting((256, 256), ge=1, le=65_536, doc="discriminator layer widths")
    weight: float = setting(0.5, ge=0, le=1e6, doc="weight of the style reward added to the task reward")
    gp: float = setting(5.0, ge=0, le=1e6, doc="gradient penalty coefficient (on reference transitions)")
    lr: float = setting(1e-4, gt=0, le=1.0, doc="discriminator learning rate (adam)")
    replay: int = setting(
        100_000, ge=0, le=10_000_000, doc="policy transitions kept in the discriminator's replay buffer (0: none)"
    )
    logit_reg: float = setting(
        0.0, ge=0, le=1e6, doc="weight of the sum of squared output-layer weights in the discriminator loss"
    )
    weight_decay: float = setting(
        0.0, ge=0, le=1e6, doc="weight of the sum of squared weights of all layers in the discriminator loss"
    )


@dataclass(frozen=True)
class CurriculumSettings(Section):
    """`curriculum episode_length levels=10 ...`, `curriculum distance up=4m ...`, `curriculum linear ...`,
    `curriculum constant 1.0`.

    One class for the four kinds; each setting belongs to some kinds (`kinds`), and a key
    means one setting within a kind (`up` is a fraction of the episode limit for
    `episode_length`, a distance in m for `distance`).
    """

    SECTION: ClassVar[str] = "curriculum"
    _LEVELED: ClassVar[tuple[str, ...]] = ("episode_length", "distance")

    kind: Literal["episode_length", "distance", "linear", "constant"] = setting(
        "constant", in_file=False, doc="curriculum kind"
    )
    levels: int = setting(
        10, ge=1, le=1_000_000, kinds=_LEVELED, doc="number of levels (with a `terrain`, default: its rows - 1)"
    )
    up: float = setting(0.8, ge=0, kinds=("episode_length",), doc="up a level after an episode this long (x limit)")
    down: float = setting(0.3, ge=0, kinds=("episode_length",), doc="down a level below this length (x limit)")
    up_distance: float = setting(
        4.0,
        key="up",
        ge=0,
        kinds=("distance",),
        doc="up a level after the base travelled this far from its spawn point (m)",
    )
    down_distance: float = setting(
        0.0,
        key="down",
        ge=0,
        kinds=("distance",),
        doc="down a level after travelling less than this (m); a failure too",
    )
    min_steps: int = setting(20, ge=0, le=INT32_MAX, kinds=_LEVELED, doc="control steps at a level first")
    step: float = setting(0.01, ge=0, kinds=("linear",), doc="level gained every `every` iterations")
    every: int = setting(100, ge=1, le=INT32_MAX, kinds=("linear",), doc="iterations per step")
    value: float = setting(1.0, ge=0, le=1, kinds=("constant",), doc="the constant level")

    @classmethod
    def kind_table(cls, kind: str) -> Mapping[str, Setting]:
        """The settings of one curriculum kind (the checker's table for `curriculum KIND`), by key."""
        return MappingProxyType({s.key: s for s in cls.by_name().values() if kind in s.kinds})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CurriculumSettings":
        d = dict(d)
        kind = d.get("kind", "constant")
        choices = cls.by_name()["kind"].choices
        if kind not in choices:
            raise KsimError(f"unknown curriculum kind '{kind}' (expected one of {', '.join(choices)})")
        own = cls.kind_table(kind)
        known = {s.key for s in cls.by_name().values()}
        other = [k for k in d if k != "kind" and k in known and k not in own]
        if other:
            raise KsimError(f"curriculum {kind} has no setting '{other[0]}'")
        return cls.from_keys(d, {"kind": cls.by_name()["kind"], **own})

    def to_dict(self) -> dict[str, Any]:
        own = self.kind_table(self.kind)
        return {"kind": self.kind, **{k: getattr(self, s.name) for k, s in own.items()}}


@dataclass(frozen=True)
class CommandSettings(Section):
    """`command vel zero_prob=0.1 ...`: settings of a command statement."""

    SECTION: ClassVar[str] = "command"

    zero_prob: float = setting(0.0, ge=0, le=1, doc="probability that a resample is all zeros")


@dataclass(frozen=True)
class ActuatorSettings(Section):
    """`actuators KIND key=value ...`: what an action does (docs/language.md, "actuators").

    One class for the five kinds, as CurriculumSettings; each setting belongs to
    the kinds that list it (`kinds`), and `REQUIRED` names the settings a kind
    needs written out (their defaults are never used). Per-joint kp / kd lines,
    latency, zero_offset and the motors of `joints=` (effort, armature) are
    checked by ksimdsl.frontend.check.
    """

    SECTION: ClassVar[str] = "actuators"
    REQUIRED: ClassVar[Mapping[str, tuple[str, ...]]] = MappingProxyType(
        {"position": ("kp",), "velocity": ("kd",), "position_velocity": ("kp",)}
    )

    kind: Literal["ctrl", "torque", "position", "velocity", "position_velocity"] = setting(
        "ctrl", in_file=False, doc="actuator kind"
    )
    kp: float = setting(
        0.0,
        ge=0,
        kinds=("position", "position_velocity"),
        doc="position gain (N m/rad, N/m); per joint: `kp[GLOB] = ...`",
    )
    kd: float = setting(
        0.0,
        ge=0,
        kinds=("position", "velocity", "position_velocity"),
        doc="velocity gain (N m s/rad, N s/m); per joint: `kd[GLOB] = ...`",
    )
    action_scale: float = setting(
        1.0,
        ge=0,
        kinds=("position", "velocity", "position_velocity"),
        doc="per unit of action: the position target's offset (rad, m); "
        "with velocity, the target velocity (rad/s, m/s)",
    )
    velocity_scale: float = setting(
        1.0, ge=0, kinds=("position_velocity",), doc="target velocity (rad/s, m/s) per unit of the action's second half"
    )
    scale: float = setting(1.0, ge=0, kinds=("torque",), doc="ctrl per unit of action")

    @classmethod
    def kind_table(cls, kind: str) -> Mapping[str, Setting]:
        """The settings of one actuator kind (the checker's table); a required one has default None."""
        required = cls.REQUIRED.get(kind, ())
        return MappingProxyType(
            {
                s.key: dataclasses.replace(s, default=None) if s.key in required else s
                for s in cls.by_name().values()
                if kind in s.kinds
            }
        )


ACTUATOR_KINDS: tuple[str, ...] = ActuatorSettings.by_name()["kind"].choices
#: Kinds whose motors MuJoCo turns into feedback laws on their joints (ksimdsl.runtime.engine.model).
FEEDBACK_ACTUATORS: tuple[str, ...] = ("position", "velocity", "position_velocity")
#: Kinds whose action sets a joint position target: default_pos and zero_offset apply.
POSITION_TARGET_ACTUATORS: tuple[str, ...] = ("position", "position_velocity")


def actions_per_actuator(kind: str) -> int:
    """Action values per actuator: 2 for position_velocity (targets, then velocities), else 1."""
    return 2 if kind == "position_velocity" else 1


CURRICULUM_KINDS: tuple[str, ...] = CurriculumSettings.by_name()["kind"].choices


def minibatch_problem(num_envs: int, minibatches: int) -> str | None:
    """The rule that minibatches split the environments evenly (checked on settings and on rollouts)."""
    if minibatches >= 1 and num_envs % minibatches == 0:
        return None
    return f"num_envs={num_envs} must be a multiple of minibatches={minibatches} (minibatches split the environments)"



def substeps_of(dt: float, ctrl_dt: float) -> int:
    """Physics steps per control step: round(ctrl_dt / dt), at least 1."""
    ratio = ctrl_dt / dt
    return max(1, round(ratio)) if math.isfinite(ratio) and ratio < 1e18 else 2**62




# --------------------------------------------------------------------------- memory


def rollout_bytes(train: TrainSettings, *, obs_actor_size: int, obs_critic_size: int, action_size: int) -> int:
    """A lower estimate of the memory one training iteration holds: the rollout and its PPO copies.

    Per transition (float32): both observations, the action and its raw value,
    reward, done flags, value, log-probability, advantage and return; twice, for
    the shuffled minibatch copies of the update.
    """
    per_transition = obs_actor_size + obs_critic_size + 2 * action_size + 8
    return 2 * 4 * train.num_envs * train.rollout * per_transition


def machine_memory_bytes() -> int | None:
    """Physical memory of this machine (os.sysconf), or None where it cannot be read."""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return int(pages) * int(size) if pages > 0 and size > 0 else None


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def memory_problem(
    train: TrainSettings,
    *,
    obs_actor_size: int,
    obs_critic_size: int,
    action_size: int,
    available: int | None = None,
) -> Problem | None:
    """A problem when the rollout of `train` cannot fit in `available` bytes (default: this machine's memory)."""
    available = machine_memory_bytes() if available is None else available
    need = rollout_bytes(
        train, obs_actor_size=obs_actor_size, obs_critic_size=obs_critic_size, action_size=action_size
    )
    if available is None or need <= available:
        return None
    return Problem(
        ("num_envs", "rollout"),
        f"num_envs={train.num_envs} x rollout={train.rollout} needs at least {_gib(need)} for the rollout "
        f"({obs_actor_size} + {obs_critic_size} observations and {action_size} actions per step), "
        f"but this machine has {_gib(available)} of memory; lower num_envs or rollout",
    )
