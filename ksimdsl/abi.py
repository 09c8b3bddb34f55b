"""The contract between generated kernel modules and the runtime (ABI version 1).

The compiler emits a module with a `SPEC` dict (JSON-compatible) and the
functions `reset`, `observe`, `step` (see docs/architecture.md). The runtime
turns `SPEC` into the frozen `TaskSpec` below. This module is pure Python and
imports nothing from the rest of ksimdsl except errors, so both the compiler
and the runtime may import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Mapping

ABI_VERSION = 1

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
    }
)

PHASES = ("reset", "observe", "step")

DEFAULT_PHYSICS: Mapping[str, Any] = MappingProxyType(
    {"dt": 0.004, "ctrl_dt": 0.02, "solver": "newton", "iterations": 4, "ls_iterations": 8}
)

DEFAULT_POLICY: Mapping[str, Any] = MappingProxyType(
    {
        "kind": "mlp",
        "hidden": [256, 256],
        "layers": 1,  # gru layers
        "dist": "normal",
        "mixtures": 1,
        "min_std": 0.01,
        "max_std": 1.0,
        "init_std": 0.5,
        "activation": "elu",
    }
)

DEFAULT_TRAIN: Mapping[str, Any] = MappingProxyType(
    {
        "num_envs": 256,
        "rollout": 32,
        "epochs": 4,
        "minibatches": 4,
        "lr": 3e-4,
        "optimizer": "adam",  # adam | adamw
        "weight_decay": 0.0,
        "warmup": 0,  # optimizer steps of linear lr warmup
        "gamma": 0.99,
        "lambda": 0.95,
        "clip": 0.2,
        "value_clip": 0.0,  # 0: plain MSE; clipping at a fixed size cripples a critic whose returns are O(100)
        "entropy": 0.0,
        "value_coef": 0.5,
        "max_grad_norm": 1.0,
        "normalize_obs": True,
        "normalize_adv": True,
        "steps": 100,  # training iterations
        "max_seconds": 0.0,  # 0: no wall-clock limit
        "seed": 0,
        "checkpoint_every": 50,  # iterations
        "devices": 0,  # 0: all local devices
        "watchdog_s": 600.0,  # a single jitted iteration slower than this is reported as a stall
        "media_every_s": 600.0,  # write a video and plots into the run directory this often (0: only at the end)
        "video": True,  # False: plots only
    }
)

ENGINES = ("auto", "mjx", "mujoco")

#: Scalars the PPO update reports each iteration (runtime.ppo.update; plotted by runtime.plots).
PPO_METRICS = (
    "loss",
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clip_fraction",
    "explained_variance",
    "grad_norm",
    "skipped_steps",
    "action_std",
    "lr",
)


@dataclass(frozen=True)
class ObsEntry:
    name: str
    size: int
    offset: int


@dataclass(frozen=True)
class ActuatorSpec:
    kind: str  # position | torque | ctrl
    joint_qpos_adr: tuple[int, ...] = ()
    joint_dof_adr: tuple[int, ...] = ()
    kp: tuple[float, ...] = ()
    kd: tuple[float, ...] = ()
    action_scale: float = 1.0
    scale: float = 1.0
    default_pos: tuple[float, ...] = ()
    ctrl_range: tuple[tuple[float, float], ...] | None = None
    latency: tuple[float, float] | None = None
    zero_offset: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class TaskSpec:
    """Everything the runtime needs to know about a compiled task besides its kernels."""

    abi: int
    task: str
    doc: str
    source_file: str
    model: str
    physics: Mapping[str, Any]
    engine: str
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
    curriculum: Mapping[str, Any]
    policy: Mapping[str, Any]
    train: Mapping[str, Any]
    numba_args: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    ops: Mapping[str, Any] = field(default_factory=dict)

    @property
    def obs_actor_size(self) -> int:
        return sum(e.size for e in self.obs_actor)

    @property
    def obs_critic_size(self) -> int:
        return sum(e.size for e in self.obs_critic)

    @property
    def substeps(self) -> int:
        return int(self.physics["substeps"])

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "TaskSpec":
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
        physics = dict(DEFAULT_PHYSICS) | dict(d["physics"])
        physics.setdefault("substeps", max(1, round(physics["ctrl_dt"] / physics["dt"])))
        return TaskSpec(
            abi=d["abi"],
            task=d["task"],
            doc=d.get("doc") or "",
            source_file=d.get("source_file", ""),
            model=d["model"],
            physics=MappingProxyType(physics),
            engine=d.get("engine", "auto"),
            episode_steps=int(d["episode_steps"]),
            actuators=ActuatorSpec(**act_kw),
            action_size=int(d["action_size"]),
            obs_actor=tuple(ObsEntry(o["name"], int(o["size"]), int(o["offset"])) for o in d["obs"]["actor"]),
            obs_critic=tuple(ObsEntry(o["name"], int(o["size"]), int(o["offset"])) for o in d["obs"]["critic"]),
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
            curriculum=MappingProxyType(dict(d.get("curriculum") or {"kind": "constant", "value": 1.0})),
            policy=MappingProxyType(dict(DEFAULT_POLICY) | dict(d.get("policy") or {})),
            train=MappingProxyType(dict(DEFAULT_TRAIN) | dict(d.get("train") or {})),
            numba_args=MappingProxyType({k: tuple(v) for k, v in (d.get("numba_args") or {}).items()}),
            ops=MappingProxyType(dict(d.get("ops") or {})),
        )

    def with_overrides(self, **changes: Any) -> "TaskSpec":
        return replace(self, **changes)
