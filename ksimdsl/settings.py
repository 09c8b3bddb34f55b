"""The settings schema: every `physics`, `train`, `policy`, `curriculum` and command setting, in one place.

Each section is a frozen dataclass; a field is one setting, declared with `setting(...)`:
its default, its bounds and a line of documentation.

    @dataclass(frozen=True)
    class TrainSettings(Section):
        lr: float = setting(3e-4, gt=0, le=1, doc="Adam learning rate")

The type annotation gives the setting's kind: `int`, `float` (`unit="s"`: a
duration, written with a unit in a task file), `bool`, a `Literal[...]` of
names, `tuple[int, ...]` (layer sizes). Everything else is derived from these
classes: the checker's tables (`ksimdsl.frontend.builtins`), the defaults of
`ksimdsl.abi`, command-line overrides (`ksimdsl.runtime.overrides`), the PPO
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
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any, ClassVar, Iterator, Literal, Mapping, get_args, get_origin, get_type_hints

from ksimdsl.errors import Diagnostic, KsimError

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
    "CommandSettings",
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
    "MAX_SUBSTEPS",
]

#: Integers the runtime keeps in int32 (step counters, indices) stay below this.
INT32_MAX = 2**31 - 1
#: Physics substeps per control step (ctrl_dt / dt) at most.
MAX_SUBSTEPS = 10_000
#: Transitions of one rollout (num_envs * rollout) at most: jax indexes them with int32.
MAX_TRANSITIONS = INT32_MAX

Engine = Literal["auto", "mjx", "mujoco"]
#: `engine` choices: auto picks mjx on an accelerator, else the C MuJoCo engine.
ENGINES: tuple[str, ...] = get_args(Engine)


# --------------------------------------------------------------------------- declaring settings


@dataclass(frozen=True)
class Setting:
    """One `key=value` setting as the checker, the command line and the docs see it.

    kind: "int", "float", "bool", "time" (seconds; a task file writes a unit),
    "name" (one of `choices`), "int_list" (an int or a vector of ints: each
    element within the bounds), "policy_dist" (`normal` | `mixture(K)`).
    `minimum` is the inclusive lower bound (`ge`), `gt`/`le`/`lt` the others.
    """

    kind: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    finite: bool = True
    key: str = ""  # as users write it
    name: str = ""  # the dataclass field
    section: str = ""
    default: Any = None
    doc: str = ""
    aliases: tuple[tuple[str, str], ...] = ()  # (alias, canonical name), e.g. swish -> silu
    max_items: int = 64  # int_list
    via: str = ""  # the key that sets this field in a task file, if another (mixtures: dist)
    in_file: bool = True  # a `key=value` of the task file's statement
    kinds: tuple[str, ...] = ()  # curriculum: the kinds this setting belongs to

    def canonical(self, name: str) -> str:
        """`name` with aliases resolved (swish -> silu)."""
        return dict(self.aliases).get(name, name)

    @property
    def accepted(self) -> tuple[str, ...]:
        """Every name a user may write: the choices, then the aliases."""
        return self.choices + tuple(a for a, _ in self.aliases)


def setting(
    default: Any,
    *,
    doc: str,
    key: str | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    unit: str | None = None,
    aliases: Mapping[str, str] | None = None,
    kind: str | None = None,
    via: str = "",
    in_file: bool = True,
    kinds: tuple[str, ...] = (),
    max_items: int = 64,
) -> Any:
    """A dataclass field that is a setting (see the module docstring)."""
    meta = {
        "key": key,
        "ge": ge,
        "gt": gt,
        "le": le,
        "lt": lt,
        "unit": unit,
        "doc": doc,
        "aliases": tuple((aliases or {}).items()),
        "kind": kind,
        "via": via,
        "in_file": in_file,
        "kinds": kinds,
        "max_items": max_items,
    }
    return field(default=default, metadata={"setting": meta})


def _kind_of(annotation: Any, meta: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    if meta["kind"] is not None:
        return meta["kind"], tuple(get_args(annotation)) if get_origin(annotation) is Literal else ()
    if get_origin(annotation) is Literal:
        return "name", tuple(get_args(annotation))
    if annotation is bool:
        return "bool", ()
    if annotation is int:
        return "int", ()
    if annotation is float:
        return ("time" if meta["unit"] == "s" else "float"), ()
    if get_origin(annotation) is tuple:
        return "int_list", ()
    raise TypeError(f"no setting kind for {annotation!r}")


@dataclass(frozen=True)
class Problem:
    """What is wrong with some settings.

    `keys`: the settings involved, the one to point at first. A problem of one
    value (`single`) reads after a label ("train setting 'lr' must be positive,
    got -1"); a cross-field problem is a sentence of its own.
    """

    keys: tuple[str, ...]
    text: str
    single: bool = False

    def describe(self, label: str) -> str:
        return f"{label} {self.text}" if self.single else self.text


class Section:
    """Base of the settings dataclasses: derived tables, conversion and validation."""

    SECTION: ClassVar[str] = ""
    #: keys written into SPEC dicts that are derived from the others (read and ignored)
    DERIVED: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        table = type(self).by_name()
        for name, s in table.items():
            value = getattr(self, name)
            fixed = _normalize(s, value)
            if fixed is not value:
                object.__setattr__(self, name, fixed)
        found = problems(type(self), {n: getattr(self, n) for n in table})
        if found:
            raise _error(self.SECTION, found)

    # ---- derived tables

    @classmethod
    def by_name(cls) -> Mapping[str, Setting]:
        """Field name -> Setting, in declaration order."""
        return _table(cls)

    @classmethod
    def table(cls) -> Mapping[str, Setting]:
        """User key -> Setting, in declaration order."""
        return MappingProxyType({s.key: s for s in cls.by_name().values()})

    @classmethod
    def file_table(cls) -> Mapping[str, Setting]:
        """The `key=value` settings a task file's statement accepts (the checker's table)."""
        return MappingProxyType({s.key: s for s in cls.by_name().values() if s.in_file})

    # ---- conversion

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Any:
        """From a SPEC-style dict (user keys; omitted keys take the defaults), validated."""
        table = cls.table()
        values: dict[str, Any] = {}
        found: list[Problem] = []
        for key, raw in dict(d).items():
            if key in cls.DERIVED:
                continue
            s = table.get(key)
            if s is None:
                found.append(Problem((key,), f"unknown {cls.SECTION} setting '{key}'"))
                continue
            try:
                values[s.name] = _coerce(s, raw)
            except _BadValue as exc:
                found.append(Problem((key,), str(exc)))
        if found:  # with what is wrong with the values that did convert
            found += [p for p in problems(cls, values) if p.single]
            raise _error(cls.SECTION, sorted(found, key=lambda p: list(table).index(p.keys[0]) if p.keys[0] in table else -1))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """SPEC-style plain data: user keys in declaration order, tuples as lists."""
        return {s.key: _plain(getattr(self, s.name)) for s in self.by_name().values()}

    def value(self, key: str) -> Any:
        """The value of the setting users call `key` (`lambda` -> `lam`)."""
        return getattr(self, self.table()[key].name)

    # ---- cross-field rules (overridden by the sections that have some)

    @classmethod
    def cross_problems(cls, v: Mapping[str, Any]) -> Iterator[Problem]:
        """Problems between fields; `v`: every field by name, each value valid on its own."""
        return iter(())


@lru_cache(maxsize=None)
def _table(cls: type) -> Mapping[str, Setting]:
    hints = get_type_hints(cls)
    out: dict[str, Setting] = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("setting")
        if meta is None:
            continue
        kind, choices = _kind_of(hints[f.name], meta)
        out[f.name] = Setting(
            kind=kind,
            choices=choices,
            minimum=meta["ge"],
            gt=meta["gt"],
            le=meta["le"],
            lt=meta["lt"],
            key=meta["key"] or f.name,
            name=f.name,
            section=cls.SECTION,
            default=f.default,
            doc=meta["doc"],
            aliases=meta["aliases"],
            max_items=meta["max_items"],
            via=meta["via"],
            in_file=meta["in_file"],
            kinds=meta["kinds"],
        )
    return MappingProxyType(out)


# --------------------------------------------------------------------------- the sections


@dataclass(frozen=True)
class PhysicsSettings(Section):
    """`physics dt=5ms ctrl_dt=20ms solver=newton iterations=1 ls_iterations=4`.

    A task without a `physics` statement uses the model's timestep as dt.
    """

    SECTION: ClassVar[str] = "physics"
    DERIVED: ClassVar[tuple[str, ...]] = ("substeps",)

    dt: float = setting(0.004, unit="s", ge=1e-6, le=1.0, doc="simulation timestep (default: the model's)")
    ctrl_dt: float = setting(0.02, unit="s", gt=0, le=10.0, doc="control period, a whole multiple of dt")
    solver: Literal["newton", "cg", "pgs"] = setting("newton", doc="constraint solver (pgs: C engine only)")
    iterations: int = setting(4, ge=1, le=10_000, doc="solver iterations")
    ls_iterations: int = setting(8, ge=1, le=10_000, doc="line-search iterations")

    @property
    def substeps(self) -> int:
        """Physics steps per control step."""
        return substeps_of(self.dt, self.ctrl_dt)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
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
    gamma: float = setting(0.99, ge=0, le=1, doc="discount")
    lam: float = setting(0.95, key="lambda", ge=0, le=1, doc="GAE lambda")
    clip: float = setting(0.2, gt=0, doc="PPO ratio clip")
    value_clip: float = setting(0.0, ge=0, doc="value clip (0: plain MSE)")
    entropy: float = setting(0.0, ge=0, doc="entropy bonus coefficient")
    value_coef: float = setting(0.5, ge=0, doc="value loss coefficient")
    max_grad_norm: float = setting(1.0, ge=0, doc="gradient norm clip (0: off)")
    normalize_obs: bool = setting(True, doc="running observation normalization")
    normalize_adv: bool = setting(True, doc="per-minibatch advantage normalization")
    steps: int = setting(100, ge=0, le=INT32_MAX, doc="training iterations (in total, over resumes)")
    max_seconds: float = setting(0.0, ge=0, doc="stop after this wall time (0: no limit)")
    seed: int = setting(0, ge=0, le=2**32 - 1, doc="random seed")
    checkpoint_every: int = setting(50, ge=0, le=INT32_MAX, doc="iterations between checkpoints (0: only at the end)")
    devices: int = setting(0, ge=0, le=65_536, doc="local devices to shard the environments over (0: all)")
    watchdog_s: float = setting(600.0, ge=0, doc="report an iteration slower than this as a stall (0: off)")
    media_every_s: float = setting(600.0, ge=0, doc="seconds between videos and plots (0: only at the end)")
    video: bool = setting(True, doc="write videos (false: plots only)")

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


@dataclass(frozen=True)
class CurriculumSettings(Section):
    """`curriculum episode_length levels=10 ...`, `curriculum linear ...`, `curriculum constant 1.0`.

    One class for the three kinds; each setting belongs to one kind (`kinds`).
    """

    SECTION: ClassVar[str] = "curriculum"

    kind: Literal["episode_length", "linear", "constant"] = setting("constant", in_file=False, doc="curriculum kind")
    levels: int = setting(10, ge=1, le=1_000_000, kinds=("episode_length",), doc="number of levels")
    up: float = setting(0.8, ge=0, kinds=("episode_length",), doc="up a level after an episode this long (x limit)")
    down: float = setting(0.3, ge=0, kinds=("episode_length",), doc="down a level below this length (x limit)")
    min_steps: int = setting(20, ge=0, le=INT32_MAX, kinds=("episode_length",), doc="control steps at a level first")
    step: float = setting(0.01, ge=0, kinds=("linear",), doc="level gained every `every` iterations")
    every: int = setting(100, ge=1, le=INT32_MAX, kinds=("linear",), doc="iterations per step")
    value: float = setting(1.0, ge=0, le=1, kinds=("constant",), doc="the constant level")

    @classmethod
    def kind_table(cls, kind: str) -> Mapping[str, Setting]:
        """The settings of one curriculum kind (the checker's table for `curriculum KIND`)."""
        return MappingProxyType({s.key: s for s in cls.by_name().values() if kind in s.kinds})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CurriculumSettings":
        d = dict(d)
        kind = d.get("kind", "constant")
        choices = cls.by_name()["kind"].choices
        if kind not in choices:
            raise KsimError(f"unknown curriculum kind '{kind}' (expected one of {', '.join(choices)})")
        other = [k for k in d if k != "kind" and k in cls.table() and k not in cls.kind_table(kind)]
        if other:
            raise KsimError(f"curriculum {kind} has no setting '{other[0]}'")
        return super().from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        own = self.kind_table(self.kind)
        return {"kind": self.kind, **{k: v for k, v in super().to_dict().items() if k in own}}


@dataclass(frozen=True)
class CommandSettings(Section):
    """`command vel zero_prob=0.1 ...`: settings of a command statement."""

    SECTION: ClassVar[str] = "command"

    zero_prob: float = setting(0.0, ge=0, le=1, doc="probability that a resample is all zeros")


CURRICULUM_KINDS: tuple[str, ...] = CurriculumSettings.by_name()["kind"].choices


# --------------------------------------------------------------------------- validation


class _BadValue(Exception):
    pass


def format_value(value: Any, setting: Setting | None = None) -> str:
    """A number as messages show it: 3, 0.5, 1e+30, inf; durations with a unit (20ms, 2s)."""
    if setting is not None and setting.kind == "time" and isinstance(value, (int, float)) and math.isfinite(value):
        if value != 0 and abs(value) < 1:
            return f"{format_value(value * 1000)}ms"
        return f"{format_value(value)}s"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return repr(value) if isinstance(value, str) else str(value)
    if not math.isfinite(value):
        return str(float(value))
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{float(value):.6g}"


def _number_problem(s: Setting, x: float) -> str | None:
    got = f", got {format_value(x, s)}"
    if s.finite and not math.isfinite(x):
        return f"must be finite{got}"
    if s.minimum is not None and not x >= s.minimum:
        return f"must be at least {format_value(s.minimum, s)}{got}"
    if s.gt is not None and not x > s.gt:
        return ("must be positive" if s.gt == 0 else f"must be greater than {format_value(s.gt, s)}") + got
    if s.le is not None and not x <= s.le:
        return f"must be at most {format_value(s.le, s)}{got}"
    if s.lt is not None and not x < s.lt:
        return f"must be less than {format_value(s.lt, s)}{got}"
    return None


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def value_problem(s: Setting, value: Any) -> str | None:
    """What is wrong with `value` (already of the setting's Python type) as a phrase, or None.

    "must be at least 1, got 0", "must be finite, got inf", ...; it reads after
    a label such as "train setting 'num_envs'".
    """
    if s.kind == "bool":
        return None if isinstance(value, bool) else "must be true or false"
    if s.kind in ("name", "policy_dist"):
        if value in s.choices:
            return None
        return f"must be one of {', '.join(s.accepted)}, got {format_value(value)}"
    if s.kind == "int":
        if not _is_int(value):
            return f"must be a whole number, got {format_value(value)}"
        return _number_problem(s, value)
    if s.kind in ("float", "time"):
        if not _is_number(value):
            return f"must be a number, got {format_value(value)}"
        return _number_problem(s, float(value))
    if s.kind == "int_list":
        if not isinstance(value, tuple) or not value:
            return "needs at least one layer size"
        if len(value) > s.max_items:
            return f"has {len(value)} sizes; at most {s.max_items} are supported"
        for item in value:
            if not _is_int(item):
                return f"must be whole numbers, got {format_value(item)}"
            problem = _number_problem(s, item)
            if problem is not None:
                return problem
        return None
    raise AssertionError(f"unknown setting kind {s.kind!r}")


def problems(cls: type, values: Mapping[str, Any]) -> list[Problem]:
    """Everything wrong with `values` (field name -> value, defaults for the rest) for section `cls`.

    Each value on its own first; the cross-field rules only when every value is valid.
    """
    table = cls.by_name()  # type: ignore[attr-defined]
    found = []
    for name, value in values.items():
        s = table[name]
        text = value_problem(s, value)
        if text is not None:
            found.append(Problem((s.key,), text, single=True))
    if found:
        return found
    merged = {name: s.default for name, s in table.items()} | dict(values)
    return list(cls.cross_problems(merged))  # type: ignore[attr-defined]


def _error(section: str, found: list[Problem]) -> KsimError:
    return KsimError([Diagnostic(p.describe(f"{section} setting '{p.keys[0]}'")) for p in found])


def minibatch_problem(num_envs: int, minibatches: int) -> str | None:
    """The rule that minibatches split the environments evenly (checked on settings and on rollouts)."""
    if minibatches >= 1 and num_envs % minibatches == 0:
        return None
    return f"num_envs={num_envs} must be a multiple of minibatches={minibatches} (minibatches split the environments)"


def substeps_of(dt: float, ctrl_dt: float) -> int:
    """Physics steps per control step: round(ctrl_dt / dt), at least 1."""
    ratio = ctrl_dt / dt
    return max(1, round(ratio)) if math.isfinite(ratio) and ratio < 1e18 else 2**62


def _normalize(s: Setting, value: Any) -> Any:
    """Lossless conversions to the field's type: an int for a float, a list for a tuple, an alias."""
    if s.kind in ("float", "time") and _is_int(value):
        return float(value)
    if s.kind == "int_list" and isinstance(value, list):
        return tuple(value)
    if s.kind == "int_list" and _is_int(value):
        return (value,)
    if s.kind == "name" and isinstance(value, str) and s.aliases:
        return s.canonical(value)
    return value


def _coerce(s: Setting, raw: Any) -> Any:
    """A value of JSON data (a SPEC dict, a stored run) as the setting's type, or _BadValue."""
    if s.kind == "bool":
        if isinstance(raw, bool):
            return raw
        raise _BadValue(f"{s.section} setting '{s.key}' must be true or false, got {raw!r}")
    if s.kind in ("name", "policy_dist"):
        if isinstance(raw, str) and s.canonical(raw) in s.choices:
            return s.canonical(raw)
        shown = f"'{raw}'" if isinstance(raw, str) else repr(raw)
        raise _BadValue(f"unknown {s.section} {s.key} {shown} (expected one of {', '.join(s.accepted)})")
    if s.kind == "int":
        if _is_number(raw) and float(raw).is_integer():
            return int(raw)
        raise _BadValue(f"{s.section} setting '{s.key}' must be a whole number, got {raw!r}")
    if s.kind in ("float", "time"):
        if _is_number(raw):
            return float(raw)
        raise _BadValue(f"{s.section} setting '{s.key}' must be a number, got {raw!r}")
    if s.kind == "int_list":
        items = [raw] if _is_number(raw) else raw
        if isinstance(items, (list, tuple)) and all(_is_number(i) and float(i).is_integer() for i in items):
            return tuple(int(i) for i in items)
        raise _BadValue(f"{s.section} setting '{s.key}' must be a list of whole numbers, got {raw!r}")
    raise AssertionError(f"unknown setting kind {s.kind!r}")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


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


# --------------------------------------------------------------------------- documentation


def _doc_value(s: Setting, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return format_value(value, s) if isinstance(value, (int, float)) else str(value)


def _doc_range(s: Setting) -> str:
    if s.choices:
        return " ".join(s.accepted)
    if s.kind == "bool":
        return "true false"
    parts = []
    if s.minimum is not None:
        parts.append(f"≥ {format_value(s.minimum, s)}")
    if s.gt is not None:
        parts.append(f"> {format_value(s.gt, s)}")
    if s.le is not None:
        parts.append(f"≤ {format_value(s.le, s)}")
    if s.lt is not None:
        parts.append(f"< {format_value(s.lt, s)}")
    return ", ".join(parts)


def docs_table(settings: Mapping[str, Setting]) -> str:
    """The Markdown table of docs/language.md for some settings (tests/test_settings.py keeps them equal)."""
    rows = ["| key | default | values | meaning |", "|---|---|---|---|"]
    for key, s in settings.items():
        rows.append(f"| `{key}` | `{_doc_value(s, s.default)}` | {_doc_range(s)} | {s.doc} |")
    return "\n".join(rows)
