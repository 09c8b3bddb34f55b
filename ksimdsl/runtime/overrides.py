"""`key=value` overrides from the command line (`ksimdsl train TASK.ksim num_envs=64 lr=1e-3`).

Every `physics`, `engine`, `train` and `policy` setting can be overridden; a
key may carry its section (`train.lr=1e-3`). Values are type-checked against
the setting's kind:

    int      num_envs=64            float   lr=3e-4, max_seconds=60
    bool     normalize_obs=false    choice  solver=cg, engine=mujoco
    ints     hidden=[64,64] or hidden=64
    dist     dist=normal, dist=mixture(5)

An unknown key or a bad value is a `KsimError` that points at the offending
item of the command line and, for keys, lists the valid ones with a
"did you mean" suggestion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Callable, Sequence

from ksimdsl.abi import DEFAULT_PHYSICS, DEFAULT_POLICY, DEFAULT_TRAIN, ENGINES, TaskSpec
from ksimdsl.errors import Diagnostic, KsimError, Source, Span, did_you_mean

__all__ = ["apply_overrides", "valid_keys", "SECTIONS"]

SECTIONS = ("physics", "engine", "train", "policy")

_CHOICES: dict[str, tuple[str, ...]] = {
    "solver": ("newton", "cg", "pgs"),
    "engine": ENGINES,
    "kind": ("mlp", "gru"),
    "optimizer": ("adam", "adamw"),
    "activation": ("elu", "relu", "tanh", "silu", "gelu"),
}
#: Integer settings that must be at least 1 (others: at least 0).
_POSITIVE = {"num_envs", "rollout", "epochs", "minibatches", "steps", "iterations", "ls_iterations", "layers", "mixtures", "substeps"}
#: Float settings that must be > 0.
_POSITIVE_FLOAT = {"dt", "ctrl_dt", "lr", "min_std", "max_std", "init_std"}


class _BadValue(Exception):
    pass


@dataclass(frozen=True)
class _Setting:
    section: str
    key: str
    parse: Callable[[str], Any]


def _parse_int(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise _BadValue("expected an integer") from None
    if not value.is_integer():
        raise _BadValue("expected an integer")
    return int(value)


def _parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise _BadValue("expected a number") from None


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise _BadValue("expected true or false")


def _parse_ints(text: str) -> list[int]:
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    parts = [p.strip() for p in body.split(",") if p.strip()]
    if not parts:
        raise _BadValue("expected a list of integers like [64,64]")
    try:
        values = [_parse_int(p) for p in parts]
    except _BadValue:
        raise _BadValue("expected a list of integers like [64,64]") from None
    if any(v < 1 for v in values):
        raise _BadValue("sizes must be positive")
    return values


def _choice(key: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in _CHOICES[key]:
            raise _BadValue(f"expected one of {', '.join(_CHOICES[key])}{did_you_mean(value, _CHOICES[key])}")
        return value

    return parse


def _parser_for(key: str, default: Any) -> Callable[[str], Any]:
    if key in _CHOICES:
        return _choice(key)
    if isinstance(default, bool):
        return _parse_bool
    if isinstance(default, int):
        return _parse_int
    if isinstance(default, float):
        return _parse_float
    if isinstance(default, (list, tuple)):
        return _parse_ints
    raise AssertionError(f"no parser for setting {key!r}")


def _settings() -> dict[str, _Setting]:
    out: dict[str, _Setting] = {}
    physics = dict(DEFAULT_PHYSICS) | {"substeps": 1}
    for key, default in physics.items():
        out[key] = _Setting("physics", key, _parser_for(key, default))
    out["engine"] = _Setting("engine", "engine", _choice("engine"))
    for key, default in DEFAULT_TRAIN.items():
        out[key] = _Setting("train", key, _parser_for(key, default))
    for key, default in DEFAULT_POLICY.items():
        if key == "dist":
            continue
        out[key] = _Setting("policy", key, _parser_for(key, default))
    out["dist"] = _Setting("policy", "dist", lambda text: text)  # parsed in _apply (may set mixtures)
    return out


_SETTINGS = _settings()


def valid_keys() -> list[str]:
    """Every key `apply_overrides` accepts, sorted."""
    return sorted(_SETTINGS)


def _check_range(key: str, value: Any) -> None:
    if key in _POSITIVE and value < 1:
        raise _BadValue("must be at least 1")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if key in _POSITIVE_FLOAT and value <= 0:
            raise _BadValue("must be positive")
        if value < 0:
            raise _BadValue("must not be negative")


_DIST = re.compile(r"^\s*(normal|mixture)\s*(?:\(\s*(\d+)\s*\))?\s*$")


def apply_overrides(spec: TaskSpec, items: Sequence[str]) -> TaskSpec:
    """`spec` with every `key=value` of `items` applied (later items win)."""
    if not items:
        return spec
    line = " ".join(items)
    source = Source("command line", line)
    physics = dict(spec.physics)
    train = dict(spec.train)
    policy = dict(spec.policy)
    engine = spec.engine
    diagnostics: list[Diagnostic] = []
    col = 1
    for item in items:
        start, col = col, col + len(item) + 1
        key_text, sep, value_text = item.partition("=")
        key_span = Span.point(1, start, max(1, len(key_text)))
        value_span = Span.point(1, start + len(key_text) + 1, max(1, len(value_text)))
        if not sep or not key_text.strip():
            diagnostics.append(Diagnostic(f"expected key=value, got '{item}'", key_span, source))
            continue
        key = key_text.strip()
        section = None
        if "." in key:
            section, key = key.split(".", 1)
        setting = _SETTINGS.get(key)
        if setting is None or (section is not None and section != setting.section):
            diagnostics.append(
                Diagnostic(
                    f"unknown setting '{key_text}'{did_you_mean(key, _SETTINGS)}",
                    key_span,
                    source,
                    notes=(f"valid keys: {', '.join(valid_keys())}",),
                )
            )
            continue
        try:
            if key == "dist":
                match = _DIST.match(value_text)
                if match is None:
                    raise _BadValue("expected normal or mixture(K)")
                policy["dist"] = match.group(1)
                if match.group(2) is not None:
                    policy["mixtures"] = _parse_int(match.group(2))
                    _check_range("mixtures", policy["mixtures"])
                continue
            value = setting.parse(value_text)
            if not isinstance(value, (str, list)):
                _check_range(key, value)
        except _BadValue as exc:
            diagnostics.append(Diagnostic(f"bad value for '{key}': {exc}", value_span, source))
            continue
        if setting.section == "physics":
            physics[key] = value
            if key in ("dt", "ctrl_dt"):
                physics["substeps"] = max(1, round(physics["ctrl_dt"] / physics["dt"]))
        elif setting.section == "engine":
            engine = value
        elif setting.section == "train":
            train[key] = value
        else:
            policy[key] = value
    if diagnostics:
        raise KsimError(diagnostics)
    return replace(
        spec,
        physics=MappingProxyType(physics),
        engine=engine,
        train=MappingProxyType(train),
        policy=MappingProxyType(policy),
    )
