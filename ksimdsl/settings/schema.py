"""The machinery of the settings schema (see ksimdsl.settings): declaring, converting, validating, documenting.

A setting is a dataclass field made with `setting(...)`; `Section` derives
its `Setting` descriptors (kind from the type annotation, bounds and doc from
the field's metadata) and validates every instance on construction.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any, ClassVar, Iterator, Literal, Mapping, get_args, get_origin, get_type_hints

from ksimdsl.errors import Diagnostic, KsimError

__all__ = [
    "Setting",
    "Problem",
    "Section",
    "setting",
    "value_problem",
    "problems",
    "format_value",
    "docs_table",
]


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
        return cls.from_keys(d, cls.table())

    @classmethod
    def from_keys(cls, d: Mapping[str, Any], table: Mapping[str, Setting]) -> Any:
        """`from_dict` with the keys of `table` (user key -> Setting)."""
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
        default = "required" if s.default is None else f"`{_doc_value(s, s.default)}`"
        rows.append(f"| `{key}` | {default} | {_doc_range(s)} | {s.doc} |")
    return "\n".join(rows)
