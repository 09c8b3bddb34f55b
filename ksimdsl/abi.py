"""The contract between generated kernel modules and the runtime (ABI version 1).

The compiler emits a module with a `SPEC` dict (JSON-compatible) and the
functions `reset`, `observe`, `step` (see docs/architecture.md). The runtime
turns `SPEC` into the frozen `TaskSpec` below (`TaskSpec.from_dict`, the one
reader) and back (`TaskSpec.to_dict`, the SPEC format the run's config.json
records). Its settings are the typed dataclasses of `ksimdsl.settings`
(`spec.train.lr`, `spec.policy.hidden`, `spec.physics.dt`); change them with
`dataclasses.replace`. This module is pure Python and imports nothing from the
rest of ksimdsl except errors and settings, so both the compiler and the
runtime may import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Mapping

from ksimdsl.errors import KsimError
from ksimdsl.settings import ENGINES, AmpSettings, CurriculumSettings, PhysicsSettings, PolicySettings, TrainSettings

__all__ = [
    "ABI_VERSION",
    "MEM_SPAWN",
    "MEM_TRAVELLED",
    "PHYS_FIELDS",
    "PHASES",
    "ENGINES",
    "DEFAULT_PHYSICS",
    "DEFAULT_POLICY",
    "DEFAULT_TRAIN",
    "PPO_METRICS",
    "ObsEntry",
    "ActuatorSpec",
    "TaskSpec",
    "AmpSpec",
    "AMP_METRICS",
    "AMP_REPLAY_METRICS",
    "AMP_REG_METRICS",
]

ABI_VERSION = 1

#: mem slots of `curriculum distance`: the base's x, y at the reset, and its distance from there
#: (updated by every step; the runtime reads it when an episode ends).
MEM_SPAWN = "curriculum.spawn"
MEM_TRAVELLED = "curriculum.travelled"

#: Physics arrays a kernel may read, with their per-env shapes (see docs/architecture.md).
PHYS_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "qpos": "(nq,)",
        "qvel": "(nv,)",
        "qacc": "(nv,)",
        "actuator_force": "(nu,)",
        "xpos": "(nbody, 3)",
        "xquat": "(nbody, 4)",
        "xmat": "(nbody, 9)",
        "cvel": "(nbody, 6)",
        "cinert": "(nbody, 10)",
        "subtree_com": "(nbody, 3)",
        "site_xpos": "(nsite, 3)",
        "sensordata": "(nsensordata,)",
        "time": "()",
        "contact": "(C,)",
        "contact_force": "(C,)",
        "height_scan": "(H,)",
    }
)

PHASES = ("reset", "observe", "step")

def _defaults(cls: type) -> Mapping[str, Any]:
    d = cls().to_dict()
    for key in cls.DERIVED:
        d.pop(key, None)
    return MappingProxyType(d)


#: Defaults of the settings sections as SPEC-style dicts (derived from ksimdsl.settings).
DEFAULT_PHYSICS: Mapping[str, Any] = _defaults(PhysicsSettings)
DEFAULT_POLICY: Mapping[str, Any] = _defaults(PolicySettings)
DEFAULT_TRAIN: Mapping[str, Any] = _defaults(TrainSettings)

#: Scalars the PPO update reports each iteration (runtime.ppo.update; plotted by runtime.plots);
#: `kl` only with `train lr_schedule=adaptive`.
PPO_METRICS = (
    "loss",
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "kl",
    "clip_fraction",
    "explained_variance",
    "grad_norm",
    "skipped_steps",
    "action_std",
    "lr",
)

#: Keys `ppo.update` adds for a task with an `amp` block (ksimdsl.runtime.rl.amp).
AMP_METRICS = ("reward/amp_style", "amp/disc_loss", "amp/disc_acc_ref", "amp/disc_acc_policy", "amp/grad_penalty")
#: ... and with a replay buffer (`replay` > 0): D's accuracy on the buffer's transitions, the buffer's filled fraction;
#: with `logit_reg` or `weight_decay`: the regularizer's part of `amp/disc_loss`.
AMP_REPLAY_METRICS = ("amp/disc_acc_replay", "amp/replay_filled")
AMP_REG_METRICS = ("amp/disc_reg",)


@dataclass(frozen=True)
class ObsEntry:
    name: str
    size: int  # history * the size of one value
    offset: int
    history: int = 1  # `history K`: the last K values, newest first

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "offset": self.offset} | (
            {"history": self.history} if self.history > 1 else {}
        )

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "ObsEntry":
        return ObsEntry(d["name"], int(d["size"]), int(d["offset"]), int(d.get("history", 1)))


@dataclass(frozen=True)
class ActuatorSpec:
    kind: str  # ksimdsl.settings.ACTUATOR_KINDS: ctrl | torque | position | velocity | position_velocity
    joint_qpos_adr: tuple[int, ...] = ()
    joint_dof_adr: tuple[int, ...] = ()
    kp: tuple[float, ...] = ()
    kd: tuple[float, ...] = ()
    action_scale: float = 1.0
    velocity_scale: float = 1.0
    scale: float = 1.0
    default_pos: tuple[float, ...] = ()
    ctrl_range: tuple[tuple[float, float], ...] | None = None
    latency: tuple[float, float] | None = None
    zero_offset: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """SPEC["actuators"]; `velocity_scale` only where it means something (position_velocity), so the
        SPEC, and the checkpoint hash, of every other task is what it was before that kind existed."""
        d = {f.name: _plain(getattr(self, f.name)) for f in fields(ActuatorSpec)}
        if self.kind != "position_velocity":
            del d["velocity_scale"]
        return d


@dataclass(frozen=True)
class TaskSpec:
    """Everything the runtime needs to know about a compiled task besides its kernels."""

    abi: int
    task: str
    doc: str
    source_file: str
    model: str
    physics: PhysicsSettings
    engine: str  # one of ENGINES
    episode_steps: int
    actuators: ActuatorSpec
    action_size: int
    obs_actor: tuple[ObsEntry, ...]
    obs_critic: tuple[ObsEntry, ...]
    rewards: tuple[str, ...]
    terminations: tuple[str, ...]
    success: tuple[bool, ...]
    mem_size: int
    mem_layout: tuple[Mapping[str, Any], ...]
    commands: tuple[Mapping[str, Any], ...]
    randomize_fields: tuple[str, ...]
    writes_phys: bool
    phys_inputs: tuple[str, ...]
    contact_queries: tuple[Mapping[str, Any], ...]
    rand: Mapping[str, tuple[int, int]]
    curriculum: CurriculumSettings
    policy: PolicySettings
    train: TrainSettings
    numba_args: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    ops: Mapping[str, Any] = field(default_factory=dict)
    dropped_rewards: tuple[str, ...] = ()
    #: what the task adds to the MJCF (ksimdsl.model.compose.Composition.to_dict); empty: nothing
    compose: Mapping[str, Any] = field(default_factory=dict)
    metrics: tuple[str, ...] = ()  # `metric` names: the step kernel's `metrics` output (absent when empty)
    #: {"ground": [geom ids], "scans": [{"body", "grid", "spacing", "offset"}]}; absent without height_scan()
    height_scan: Mapping[str, Any] = field(default_factory=dict)
    amp: "AmpSpec | None" = None  # the `amp` block (absent without one)

    @property
    def obs_actor_size(self) -> int:
        return sum(e.size for e in self.obs_actor)

    @property
    def obs_critic_size(self) -> int:
        return sum(e.size for e in self.obs_critic)

    @property
    def substeps(self) -> int:
        return self.physics.substeps

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "TaskSpec":
        """The one reader of SPEC dicts (a generated module's, or a stored run's); settings are validated."""
        if d.get("abi") != ABI_VERSION:
            raise ValueError(
                f"generated module has ABI {d.get('abi')!r}, this ksimdsl expects {ABI_VERSION}; "
                "recompile the task (ksimdsl compile)"
            )
        act = dict(d["actuators"])
        act_kw = {f.name: act[f.name] for f in fields(ActuatorSpec) if f.name in act}
        for k in ("joint_qpos_adr", "joint_dof_adr", "kp", "kd", "default_pos"):
            if k in act_kw:
                act_kw[k] = tuple(act_kw[k])
        if act_kw.get("ctrl_range") is not None:
            act_kw["ctrl_range"] = tuple(tuple(r) for r in act_kw["ctrl_range"])
        if act_kw.get("latency") is not None:
            act_kw["latency"] = tuple(act_kw["latency"])
        return TaskSpec(
            abi=d["abi"],
            task=d["task"],
            doc=d.get("doc") or "",
            source_file=d.get("source_file", ""),
            model=d["model"],
            physics=PhysicsSettings.from_dict(d["physics"]),
            engine=_engine(d.get("engine", "auto")),
            episode_steps=int(d["episode_steps"]),
            actuators=ActuatorSpec(**act_kw),
            action_size=int(d["action_size"]),
            obs_actor=tuple(ObsEntry.from_dict(o) for o in d["obs"]["actor"]),
            obs_critic=tuple(ObsEntry.from_dict(o) for o in d["obs"]["critic"]),
            rewards=tuple(r["name"] for r in d["rewards"]),
            terminations=tuple(t["name"] for t in d["terminations"]),
            success=tuple(bool(t["success"]) for t in d["terminations"]),
            mem_size=int(d["mem_size"]),
            mem_layout=tuple(MappingProxyType(dict(m)) for m in d.get("mem_layout", ())),
            commands=tuple(MappingProxyType(dict(c)) for c in d.get("commands", ())),
            randomize_fields=tuple(d.get("randomize_fields", ())),
            writes_phys=bool(d.get("writes_phys", False)),
            phys_inputs=tuple(d["phys_inputs"]),
            contact_queries=tuple(MappingProxyType(dict(c)) for c in d.get("contact_queries", ())),
            rand=MappingProxyType({k: tuple(v) for k, v in d["rand"].items()}),
            curriculum=CurriculumSettings.from_dict(d.get("curriculum") or {}),
            policy=PolicySettings.from_dict(d.get("policy") or {}),
            train=TrainSettings.from_dict(d.get("train") or {}),
            numba_args=MappingProxyType({k: tuple(v) for k, v in (d.get("numba_args") or {}).items()}),
            ops=MappingProxyType(dict(d.get("ops") or {})),
            dropped_rewards=tuple(d.get("dropped_rewards", ())),
            compose=MappingProxyType(dict(d.get("compose") or {})),
            metrics=tuple(m["name"] for m in d.get("metrics", ())),
            height_scan=MappingProxyType(dict(d.get("height_scan") or {})),
            amp=AmpSpec.from_dict(d["amp"]) if d.get("amp") else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """This spec as SPEC-format plain data: `TaskSpec.from_dict(spec.to_dict()) == spec`."""
        d: dict[str, Any] = {
            "abi": self.abi,
            "task": self.task,
            "doc": self.doc,
            "source_file": self.source_file,
            "model": self.model,
            **({"compose": _plain(self.compose)} if self.compose else {}),
            "physics": self.physics.to_dict(),
            "engine": self.engine,
            "episode_steps": self.episode_steps,
            "actuators": self.actuators.to_dict(),
            "action_size": self.action_size,
            "obs": {
                "actor": [o.to_dict() for o in self.obs_actor],
                "critic": [o.to_dict() for o in self.obs_critic],
            },
            "rewards": [{"name": r} for r in self.rewards],
            "dropped_rewards": list(self.dropped_rewards),
            "terminations": [{"name": n, "success": s} for n, s in zip(self.terminations, self.success)],
            **({"metrics": [{"name": n} for n in self.metrics]} if self.metrics else {}),
            "mem_size": self.mem_size,
            "mem_layout": _plain(self.mem_layout),
            "commands": _plain(self.commands),
            "randomize_fields": list(self.randomize_fields),
            "writes_phys": self.writes_phys,
            "phys_inputs": list(self.phys_inputs),
            "contact_queries": _plain(self.contact_queries),
            **({"height_scan": _plain(self.height_scan)} if self.height_scan else {}),
            "rand": _plain(self.rand),
        }
        if self.numba_args:
            d["numba_args"] = _plain(self.numba_args)
        d["curriculum"] = self.curriculum.to_dict()
        d["policy"] = self.policy.to_dict()
        d["train"] = self.train.to_dict()
        if self.amp is not None:
            d["amp"] = self.amp.to_dict()
        d["ops"] = _plain(self.ops)
        return d

    def with_overrides(self, **changes: Any) -> "TaskSpec":
        return replace(self, **changes)


@dataclass(frozen=True)
class AmpSpec:
    """SPEC["amp"]: the discriminator's settings, the feature pieces (ksimdsl.model.amp_features) with
    their source text, and the reference clip's features at the control period, one row per step."""

    settings: AmpSettings
    features: tuple[Mapping[str, Any], ...]
    names: tuple[str, ...]
    reference: tuple[tuple[float, ...], ...]

    @property
    def feature_size(self) -> int:
        return len(self.reference[0]) if self.reference else 0

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "AmpSpec":
        return AmpSpec(
            settings=AmpSettings.from_dict(d.get("settings") or {}),
            features=tuple(MappingProxyType({k: tuple(v) if isinstance(v, list) else v for k, v in p.items()})
                           for p in d["features"]),
            names=tuple(d.get("names", ())),
            reference=tuple(tuple(float(x) for x in row) for row in d["reference"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings.to_dict(),
            "features": _plain(self.features),
            "names": list(self.names),
            "reference": _plain(self.reference),
        }


def _engine(name: Any) -> str:
    if name not in ENGINES:
        raise KsimError(f"unknown engine {name!r} (expected one of {', '.join(ENGINES)})")
    return str(name)


def _plain(value: Any) -> Any:
    """JSON-style data: mappings as dicts, tuples as lists, recursively."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
