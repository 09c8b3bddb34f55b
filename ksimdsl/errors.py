"""Diagnostics shared by every stage of ksimdsl.

A *user error* (bad task file, bad override, missing run directory) is a
`KsimError` carrying one or more `Diagnostic`s.  It is printed as

    tasks/walk.ksim:12:9: error: unknown joint 'kne' (did you mean 'knee'?)
        kp["kne"] = 80
           ^~~~~

and the CLI exits with status 2, never showing a Python traceback.

A bug in ksimdsl itself is an `InternalCompilerError`; the CLI reports it as
such (exit 3) so that users can tell "my file is wrong" from "the tool is
broken".

This module imports nothing from the rest of the package: everything else
imports it.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field
from typing import Iterable, Sequence

__all__ = [
    "Span",
    "Source",
    "Diagnostic",
    "KsimError",
    "InternalCompilerError",
    "DiagnosticSink",
    "suggest",
    "did_you_mean",
    "MAX_ERRORS",
    "QUOTE_WIDTH",
]

#: How many independent errors one file reports before giving up.
MAX_ERRORS = 20

#: At most this many characters of a source line are quoted under a message
#: (a window around the caret, `...` marking what was cut).
QUOTE_WIDTH = 120


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source file. Lines and columns are 1-based; `end_col` is exclusive."""

    line: int
    col: int
    end_line: int
    end_col: int

    @staticmethod
    def point(line: int, col: int, width: int = 1) -> "Span":
        return Span(line, col, line, col + max(1, width))

    def merge(self, other: "Span") -> "Span":
        a = min((self.line, self.col), (other.line, other.col))
        b = max((self.end_line, self.end_col), (other.end_line, other.end_col))
        return Span(a[0], a[1], b[0], b[1])


@dataclass(frozen=True, slots=True)
class Source:
    """The text of one task file and the name to report it under."""

    path: str
    text: str

    def line_text(self, line: int) -> str:
        lines = _lines(self.text)
        if 1 <= line <= len(lines):
            return lines[line - 1]
        return ""


@functools.lru_cache(maxsize=4)
def _lines(text: str) -> list[str]:
    """The lines of a source text (cached: a file with many errors is split once)."""
    return text.splitlines()


def _quote(text: str, col: int, width: int) -> tuple[str, int, int]:
    """A window of at most `QUOTE_WIDTH` characters of `text` around columns col..col+width.

    Returns (shown text, caret column in it, caret width in it); both columns 1-based.
    """
    if len(text) <= QUOTE_WIDTH:
        return text, col, width
    body = QUOTE_WIDTH - 6  # room for the `...` on both sides
    lo = max(0, min(col - 1 - body // 3, len(text) - body))
    hi = min(len(text), lo + body)
    head = "..." if lo > 0 else ""
    tail = "..." if hi < len(text) else ""
    start = col - lo + len(head)
    return head + text[lo:hi] + tail, start, max(1, min(width, hi - (col - 1)))


def _clip(message: str, limit: int = 8 * QUOTE_WIDTH) -> str:
    """`message`, its middle cut out when it is longer than `limit` (a name of a million characters)."""
    if len(message) <= limit:
        return message
    keep = limit // 2
    return f"{message[:keep]} ... {message[-keep:]}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One message, optionally tied to a position in a source file."""

    message: str
    span: Span | None = None
    source: Source | None = None
    severity: str = "error"
    notes: tuple[str, ...] = ()

    def format(self) -> str:
        """`FILE:LINE:COL: error: MESSAGE`, the source line and a caret under the span."""
        where = self.source.path if self.source is not None else "ksimdsl"
        message = _clip(self.message)
        if self.span is not None:
            head = f"{where}:{self.span.line}:{self.span.col}: {self.severity}: {message}"
        else:
            head = f"{where}: {self.severity}: {message}"
        out = [head]
        if self.span is not None and self.source is not None:
            text = self.source.line_text(self.span.line).replace("\t", " ")
            if text:
                out.append("    " + text)
                start = max(1, self.span.col)
                if self.span.end_line == self.span.line:
                    width = max(1, self.span.end_col - self.span.col)
                else:
                    width = max(1, len(text) - start + 1)
                width = max(1, min(width, len(text) - start + 1))
                text, start, width = _quote(text, start, width)
                out[-1] = "    " + text
                out.append("    " + " " * (start - 1) + "^" + "~" * (width - 1))
        for note in self.notes:
            out.append(f"    note: {note}")
        return "\n".join(out)


class KsimError(Exception):
    """A user error: the task file, an override or a CLI argument is wrong.

    Holds one or more diagnostics; `str(err)` is their formatted text.
    """

    def __init__(self, diagnostics: Diagnostic | str | Sequence[Diagnostic]):
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic(diagnostics)]
        elif isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        if not self.diagnostics:
            raise ValueError("KsimError needs at least one diagnostic")
        super().__init__(self.format())

    @classmethod
    def at(cls, source: Source | None, span: Span | None, message: str, *notes: str) -> "KsimError":
        return cls(Diagnostic(message, span, source, notes=tuple(notes)))

    @property
    def first(self) -> Diagnostic:
        return self.diagnostics[0]

    def format(self) -> str:
        text = "\n".join(d.format() for d in self.diagnostics)
        n = len(self.diagnostics)
        if n > 1:
            text += f"\n{n} errors"
        return text


class InternalCompilerError(Exception):
    """A bug in ksimdsl itself, never the user's fault."""

    def __init__(self, message: str, span: Span | None = None, source: Source | None = None):
        where = ""
        if span is not None and source is not None:
            where = f" (while compiling {source.path}:{span.line}:{span.col})"
        super().__init__(f"internal compiler error: {message}{where}")


@dataclass
class DiagnosticSink:
    """Collects independent errors so that one run reports all of them (up to `limit`)."""

    source: Source | None = None
    limit: int = MAX_ERRORS
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def error(self, span: Span | None, message: str, *notes: str) -> None:
        self.diagnostics.append(Diagnostic(message, span, self.source, notes=tuple(notes)))
        if len(self.diagnostics) >= self.limit:
            self.raise_if_any(truncated=True)

    def extend(self, err: KsimError) -> None:
        for d in err.diagnostics:
            self.diagnostics.append(d)
            if len(self.diagnostics) >= self.limit:
                self.raise_if_any(truncated=True)

    def raise_if_any(self, truncated: bool = False) -> None:
        if self.diagnostics:
            diags = list(self.diagnostics)
            if truncated:
                diags.append(Diagnostic(f"too many errors ({self.limit}); stopping", None, self.source, "note"))
            raise KsimError(diags)


def suggest(name: str, candidates: Iterable[str], n: int = 1, cutoff: float = 0.6) -> list[str]:
    """Near-miss names for `name` among `candidates`, best first."""
    cands = sorted(set(candidates))
    hits = difflib.get_close_matches(name, cands, n=n, cutoff=cutoff)
    if not hits:
        lowered = {c.lower(): c for c in cands}
        hits = [lowered[h] for h in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=cutoff)]
    return hits


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`" (did you mean 'x'?)"` or `""`."""
    hits = suggest(name, candidates)
    return f" (did you mean '{hits[0]}'?)" if hits else ""
