"""Quick fixes: replace a name with the one a did-you-mean diagnostic suggests."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ksimdsl.errors import Diagnostic, Span

__all__ = ["Fix", "did_you_mean_fix"]

_DID_YOU_MEAN = re.compile(r"'([^']+)'(?:(?!').)*\(did you mean '([^']+)'\?\)")


@dataclass(frozen=True)
class Fix:
    title: str
    span: Span  # the text to replace (one line)
    new_text: str
    diagnostic: Diagnostic


def did_you_mean_fix(d: Diagnostic, lines: list[str]) -> Fix | None:
    """The replacement a did-you-mean diagnostic (message or note) suggests, or None."""
    if d.span is None or d.span.line != d.span.end_line or not (1 <= d.span.line <= len(lines)):
        return None
    for text in (d.message, *d.notes):
        m = _DID_YOU_MEAN.search(text)
        if m is None:
            continue
        bad, good = m.group(1), m.group(2)
        line = lines[d.span.line - 1]
        lo, hi = d.span.col - 1, min(d.span.end_col - 1, len(line))
        region = line[lo:hi]
        at = region.find(bad)
        if at < 0:
            continue
        start = d.span.col + at
        return Fix(f"Replace '{bad}' with '{good}'", Span(d.span.line, start, d.span.line, start + len(bad)), good, d)
    return None
