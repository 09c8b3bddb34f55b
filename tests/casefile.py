"""Data-driven test files (mypy-style): one `[case NAME]` block per test.

    Free text before the first case is a comment.

    [case reward_weight_expression]
    reward
        air_time 0.2 * level : 1
    [out]
    RewardStmt @1:1-2:29
    ...

The text right after the `[case]` line is the `source` section; further
sections start with a `[section]` line (`[model]`, `[out]`, ...). Trailing
blank lines of a section are not part of it. `update_section` rewrites one
section of one case in place (for `pytest --update-goldens`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_CASE = re.compile(r"^\[case ([A-Za-z0-9_.-]+)\]$")
_SECTION = re.compile(r"^\[([a-z]+)\]$")


@dataclass(frozen=True)
class DataCase:
    """One `[case]` block: its sections in file order (`source` first)."""

    name: str
    path: Path
    line: int  # 1-based line of the `[case]` header
    sections: tuple[tuple[str, str], ...]

    def section(self, name: str) -> str | None:
        for key, text in self.sections:
            if key == name:
                return text
        return None

    @property
    def source(self) -> str:
        return self.section("source") or ""


@dataclass(frozen=True)
class CaseFile:
    path: Path
    header: str
    cases: tuple[DataCase, ...]

    def render(self) -> str:
        parts = [self.header.rstrip("\n") + "\n\n"] if self.header.strip() else []
        for case in self.cases:
            parts.append(f"[case {case.name}]\n")
            for key, text in case.sections:
                if key != "source":
                    parts.append(f"[{key}]\n")
                if text:
                    parts.append(text + "\n")
            parts.append("\n")
        return "".join(parts).rstrip("\n") + "\n"


def read_case_file(path: Path) -> CaseFile:
    """Parse a case file; case names must be unique within it."""
    header: list[str] = []
    cases: list[DataCase] = []
    name: str | None = None
    start = 0
    sections: list[tuple[str, list[str]]] = []

    def close() -> None:
        if name is not None:
            done = tuple((key, "\n".join(lines).rstrip()) for key, lines in sections)
            cases.append(DataCase(name, path, start, done))

    for lineno, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        case = _CASE.match(line)
        section = _SECTION.match(line)
        if case:
            close()
            name, start, sections = case.group(1), lineno, [("source", [])]
        elif name is None:
            header.append(line)
        elif section:
            sections.append((section.group(1), []))
        else:
            sections[-1][1].append(line)
    close()
    names = [c.name for c in cases]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{path}: duplicate case names {duplicates}")
    return CaseFile(path, "\n".join(header), tuple(cases))


def update_section(path: Path, case_name: str, section: str, text: str) -> None:
    """Replace (or append) `section` of case `case_name` in the file at `path`."""
    file = read_case_file(path)
    cases = []
    for case in file.cases:
        if case.name == case_name:
            sections = list(case.sections)
            keys = [key for key, _ in sections]
            if section in keys:
                sections[keys.index(section)] = (section, text.rstrip())
            else:
                sections.append((section, text.rstrip()))
            case = DataCase(case.name, case.path, case.line, tuple(sections))
        cases.append(case)
    path.write_text(CaseFile(path, file.header, tuple(cases)).render(), encoding="utf-8")
