"""Messages for MJCF names that match nothing: did-you-mean for names and globs,
and the list of the names the model does have."""

from __future__ import annotations

import fnmatch
from difflib import SequenceMatcher
from typing import Iterable

from ksimdsl.errors import did_you_mean
from ksimdsl.frontend.model_info import is_glob

__all__ = ["suggest_glob", "no_match_message", "names_note"]


def suggest_glob(pattern: str, names: Iterable[str]) -> str | None:
    """A corrected glob that matches something, for a glob that matched nothing.

    Replaces one literal fragment of the pattern by the most similar substring
    of a name (e.g. '*_kne*' -> '*knee*').
    """
    names = [n for n in names if n]
    best: tuple[float, str] | None = None
    frags = [f for f in _glob_fragments(pattern) if f]
    for frag in frags:
        for name in names:
            for width in {max(1, len(frag) - 1), len(frag), len(frag) + 1}:
                for i in range(0, max(1, len(name) - width + 1)):
                    sub = name[i : i + width]
                    # prefer fixing a typo over dropping characters
                    ratio = SequenceMatcher(None, frag, sub).ratio() - (0.15 if width < len(frag) else 0.0)
                    if ratio < 0.6 or (best is not None and ratio <= best[0]):
                        continue
                    candidate = pattern.replace(frag, sub, 1)
                    if any(fnmatch.fnmatchcase(n, candidate) for n in names):
                        best = (ratio, candidate)
    return best[1] if best else None


def _glob_fragments(pattern: str) -> list[str]:
    out, cur = [], ""
    for c in pattern:
        if c in "*?":
            out.append(cur)
            cur = ""
        else:
            cur += c
    out.append(cur)
    return out


def no_match_message(pattern: str, names: tuple[str, ...], kind: str) -> str:
    """`glob '*_kne*' matches no joint (did you mean '*knee*'?)` / `no joint named 'x' (...)`."""
    valid = [n for n in names if n]
    if is_glob(pattern):
        hint = suggest_glob(pattern, valid)
        return f"glob '{pattern}' matches no {kind}" + (f" (did you mean '{hint}'?)" if hint else "")
    return f"no {kind} named '{pattern}'" + did_you_mean(pattern, valid)


def _plural(kind: str) -> str:
    return kind[:-1] + "ies" if kind.endswith("y") else kind + "s"


def names_note(kind: str, names: Iterable[str], limit: int = 30) -> str:
    """`bodies: world, cart, pole_1` (at most `limit` names)."""
    valid = list(dict.fromkeys(n for n in names if n))
    if not valid:
        return f"the model has no named {_plural(kind)}"
    shown = ", ".join(valid[:limit]) + (", ..." if len(valid) > limit else "")
    return f"{_plural(kind)}: {shown}"
