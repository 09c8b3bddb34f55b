"""Wrap long generated statements at ~100 characters, the way a person (or black) would.

`wrap(prefix, expr, suffix, indent)` lays out `prefix + expr + suffix` at
`indent`: a statement that fits stays one line; otherwise the last bracket
group of the expression is split, one argument per line (short ones packed
several to a line), and an operator chain is broken before its lowest-priority
operators (`if`/`else`, `or`, `and`, comparisons, `+`/`-`), parenthesized
when it is not inside brackets already. Only whitespace and line breaks inside
brackets change (plus parentheses around a whole right-hand side), so the
wrapped code parses to the same AST.
"""

from __future__ import annotations

__all__ = ["WIDTH", "wrap"]

#: The line length generated code aims for.
WIDTH = 100

_OPEN = "([{"
_CLOSE = ")]}"
#: Operator classes, lowest priority first (each with its surrounding spaces).
_OPERATORS = (
    (" if ", " else "),
    (" or ",),
    (" and ",),
    (" <= ", " >= ", " == ", " != ", " < ", " > "),
    (" + ", " - "),
)


def _depths(text: str) -> list[int]:
    """The bracket depth at each character (strings count as depth 1)."""
    out: list[int] = []
    depth = 0
    quote = ""
    for ch in text:
        if quote:
            out.append(depth + 1)
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
            out.append(depth + 1)
        elif ch in _OPEN:
            out.append(depth)
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
            out.append(depth)
        else:
            out.append(depth)
    return out


def _split_commas(inner: str) -> list[str]:
    depth = _depths(inner)
    parts: list[str] = []
    start = 0
    for i, ch in enumerate(inner):
        if ch == "," and depth[i] == 0:
            parts.append(inner[start:i].strip())
            start = i + 1
    parts.append(inner[start:].strip())
    return [p for p in parts if p]


def _trailing_group(expr: str) -> int | None:
    """Index of the bracket opening the group that ends `expr`, if the text before it is one primary."""
    if not expr or expr[-1] not in _CLOSE:
        return None
    depth = _depths(expr)
    for i in range(len(expr) - 2, -1, -1):
        if expr[i] in _OPEN and depth[i] == depth[-1]:
            head = expr[:i]
            if any(ch == " " and depth[k] == 0 for k, ch in enumerate(head)):
                return None
            return i
    return None


def _widest_group(expr: str) -> tuple[int, int] | None:
    """(open, close) of the longest top-level bracket group of a primary (`-2*f(a, b)**2`)."""
    depth = _depths(expr)
    if any(ch == " " and depth[k] == 0 for k, ch in enumerate(expr)):
        return None
    best: tuple[int, int] | None = None
    start = None
    for i, ch in enumerate(expr):
        if ch in _OPEN and depth[i] == 0:
            start = i
        elif ch in _CLOSE and depth[i] == 0 and start is not None:
            if best is None or i - start > best[1] - best[0]:
                best = (start, i)
            start = None
    return best


def _operator_split(expr: str) -> list[str] | None:
    """`expr` cut before its lowest-priority top-level operators (None: no operator)."""
    depth = _depths(expr)
    for ops in _OPERATORS:
        cuts = []
        i = 0
        while i < len(expr):
            if depth[i] == 0:
                op = next((o for o in ops if expr.startswith(o, i)), None)
                if op is not None and i > 0:
                    cuts.append(i)
                    i += len(op)
                    continue
            i += 1
        if cuts:
            bounds = [0, *cuts, len(expr)]
            return [expr[a:b].strip() for a, b in zip(bounds, bounds[1:])]
    return None


def _items(parts: list[str], indent: int) -> list[str]:
    """Comma-separated `parts` at `indent`: packed when each fits, else one (wrapped) per line."""
    pad = " " * indent
    if all(indent + len(p) + 1 <= WIDTH for p in parts) and len(parts) > 1:
        lines: list[str] = []
        line = ""
        for k, p in enumerate(parts):
            piece = p + ("," if k < len(parts) - 1 else "")
            if line and indent + len(line) + 1 + len(piece) > WIDTH:
                lines.append(pad + line)
                line = piece
            else:
                line = f"{line} {piece}" if line else piece
        lines.append(pad + line)
        return lines
    out: list[str] = []
    for k, p in enumerate(parts):
        sub = _fmt(p, indent, indent, True)
        sub[0] = pad + sub[0]
        if k < len(parts) - 1:
            sub[-1] += ","
        out += sub
    return out


def _fmt(expr: str, col: int, indent: int, bracketed: bool, reserve: int = 0) -> list[str]:
    """Lines of `expr` starting at column `col`; continuation lines carry their own indentation."""
    if col + len(expr) + reserve <= WIDTH:
        return [expr]
    pieces = _operator_split(expr)
    if pieces is not None and len(pieces) > 1:
        if not bracketed:
            return _fmt(f"({expr})", col, indent, False, reserve)
        lines: list[str] = []
        for k, piece in enumerate(pieces):
            if k == 0:
                lines += _fmt(piece, col, indent, True)
                continue
            op, rest = piece.split(" ", 1)  # `+ x`, `if c`, `else b`
            sub = _fmt(rest, indent + len(op) + 1, indent, True)
            sub[0] = " " * indent + f"{op} {sub[0]}"
            lines += sub
        return lines
    o = _trailing_group(expr)
    tail = ""
    if o is None:
        group = _widest_group(expr)
        if group is None:
            return [expr]
        o, end = group
        expr, tail = expr[: end + 1], expr[end + 1 :]
    head, opening, closing = expr[:o], expr[o], expr[-1] + tail
    parts = _split_commas(expr[o + 1 : -1])
    if parts and parts[0][0] in _OPEN and _trailing_group(parts[0]) == 0:
        # Hug a leading list: `f([` ... `], dtype=x)`.
        first = parts[0]
        items = _items(_split_commas(first[1:-1]), indent + 4)
        rest = "".join(f", {p}" for p in parts[1:])
        return [head + opening + first[0], *items, " " * indent + first[-1] + rest + closing]
    return [head + opening, *_items(parts, indent + 4), " " * indent + closing]


def wrap(prefix: str, expr: str, suffix: str = "", indent: int = 0) -> list[str]:
    """The lines of the statement `prefix + expr + suffix` at `indent` spaces, wrapped at `WIDTH`."""
    lines = _fmt(expr, indent + len(prefix), indent, False, len(suffix))
    lines[0] = " " * indent + prefix + lines[0]
    lines[-1] += suffix
    return lines
