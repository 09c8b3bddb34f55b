"""`key=value` overrides from the command line (`ksimdsl train TASK.ksim num_envs=64 lr=1e-3`).

Every `physics`, `engine`, `train` and `policy` setting can be overridden; a
key may carry its section (`train.lr=1e-3`). Values are parsed by the kind the
settings schema (`ksimdsl.settings`) gives the key, and checked against the
same bounds and cross-field rules as the task file's own settings:

    int      num_envs=64            float   lr=3e-4, max_seconds=60
    bool     normalize_obs=false    choice  solver=cg, engine=mujoco
    time     dt=0.002 (seconds) or dt=2ms
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
from typing import Any, Mapping, Sequence

from ksimdsl import settings as S
from ksimdsl.abi import TaskSpec
from ksimdsl.errors import Diagnostic, KsimError, Source, Span, did_you_mean

__all__ = ["apply_overrides", "check_items", "valid_keys", "parse_value", "SECTIONS"]

SECTIONS = ("physics", "engine", "train", "policy")

#: The engine is a setting of its own, outside the sections.
_ENGINE = S.Setting("name", S.ENGINES, key="engine", name="engine", section="engine", doc="simulator")
_CLASSES: Mapping[str, Any] = MappingProxyType(
    {"physics": S.PhysicsSettings, "train": S.TrainSettings, "policy": S.PolicySettings}
)


def _table() -> Mapping[str, S.Setting]:
    out: dict[str, S.Setting] = {}
    for section in SECTIONS:
        table = {"engine": _ENGINE} if section == "engine" else _CLASSES[section].table()
        for key, setting in table.items():
            assert key not in out, f"override key {key!r} is in two sections"
            out[key] = setting
    return MappingProxyType(out)


_SETTINGS = _table()


def valid_keys() -> list[str]:
    """Every key `apply_overrides` accepts, sorted."""
    return sorted(_SETTINGS)


class BadValue(Exception):
    """A value that does not parse (the message says what was expected)."""


_TIME = re.compile(r"^\s*([-+0-9.eEinfa]+)\s*(s|ms)?\s*$")
_DIST = re.compile(r"^\s*(normal|mixture)\s*(?:\(\s*(\d+)\s*\))?\s*$")


def _parse_int(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise BadValue("expected an integer") from None
    if not value.is_integer():
        raise BadValue("expected an integer")
    return int(value)


def _parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BadValue("expected a number") from None


def _parse_time(text: str) -> float:
    match = _TIME.match(text)
    if match is None:
        raise BadValue("expected a duration in seconds, like 0.002 or 2ms")
    return _parse_float(match.group(1)) * (1e-3 if match.group(2) == "ms" else 1.0)


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise BadValue("expected true or false")


def _parse_ints(text: str) -> tuple[int, ...]:
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    parts = [p.strip() for p in body.split(",") if p.strip()]
    try:
        return tuple(_parse_int(p) for p in parts)
    except BadValue:
        raise BadValue("expected a list of integers like [64,64]") from None


def _parse_name(setting: S.Setting, text: str) -> str:
    value = text.strip().lower()
    if value not in setting.accepted:
        raise BadValue(f"expected one of {', '.join(setting.accepted)}{did_you_mean(value, setting.accepted)}")
    return setting.canonical(value)


def parse_value(setting: S.Setting, text: str) -> Any:
    """The command-line text of a setting as its value (`dist`: a (dist, mixtures) pair); BadValue if it is not one."""
    if setting.kind == "policy_dist":
        match = _DIST.match(text)
        if match is None or (match.group(1) == "mixture") != (match.group(2) is not None):
            raise BadValue("expected normal or mixture(K)")
        return match.group(1), 1 if match.group(2) is None else _parse_int(match.group(2))
    parse = {
        "int": _parse_int,
        "float": _parse_float,
        "time": _parse_time,
        "bool": _parse_bool,
        "int_list": _parse_ints,
    }.get(setting.kind)
    if parse is None:
        return _parse_name(setting, text)
    value = parse(text)
    problem = S.value_problem(setting, value)
    if problem is not None:
        raise BadValue(problem)
    return value


@dataclass(frozen=True)
class _Item:
    """One `key=value` of the command line, parsed."""

    setting: S.Setting
    value: Any
    span: Span  # the whole item


def _parse_items(items: Sequence[str], source: Source) -> tuple[list[_Item], list[Diagnostic]]:
    parsed: list[_Item] = []
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
            value = parse_value(setting, value_text)
        except BadValue as exc:
            diagnostics.append(Diagnostic(f"bad value for '{key}': {exc}", value_span, source))
            continue
        parsed.append(_Item(setting, value, Span.point(1, start, max(1, len(item)))))
    return parsed, diagnostics


def check_items(items: Sequence[str]) -> None:
    """A KsimError for every item that is not a known `key=value` with a valid value (before any compiling)."""
    _, diagnostics = _parse_items(items, Source("command line", " ".join(items)))
    if diagnostics:
        raise KsimError(diagnostics)


def apply_overrides(spec: TaskSpec, items: Sequence[str]) -> TaskSpec:
    """`spec` with every `key=value` of `items` applied (later items win), validated like a task file."""
    if not items:
        return spec
    source = Source("command line", " ".join(items))
    parsed, diagnostics = _parse_items(items, source)
    engine = spec.engine
    changes: dict[str, dict[str, Any]] = {section: {} for section in _CLASSES}
    where: dict[str, Span] = {}  # key -> the last item that set it
    for item in parsed:
        s = item.setting
        where[s.key] = item.span
        if s.section == "engine":
            engine = item.value
        elif s.kind == "policy_dist":
            changes["policy"]["dist"], changes["policy"]["mixtures"] = item.value
            where["mixtures"] = item.span
        else:
            changes[s.section][s.name] = item.value
    sections: dict[str, Any] = {}
    for section, cls in _CLASSES.items():
        current = getattr(spec, section)
        if not changes[section]:
            continue
        values = {name: getattr(current, name) for name in cls.by_name()} | changes[section]
        found = S.problems(cls, values)
        for p in found:
            span = next((where[k] for k in p.keys if k in where), None)
            diagnostics.append(Diagnostic(p.describe(f"bad value for '{p.keys[0]}':"), span, source))
        if not found:
            sections[section] = cls(**values)
    if diagnostics:
        raise KsimError(sorted(diagnostics, key=lambda d: (d.span.col if d.span else 0)))
    return replace(spec, engine=engine, **sections)
