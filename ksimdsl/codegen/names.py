"""The module-level names of a generated kernel, and the comments that tie code to the task file.

* `Quoter` quotes task lines (`# walk.ksim:80  base_yaw = uniform(-180deg, 180deg)`);
  every comment with user text goes through `printer.comment`, which escapes
  everything but printable ASCII;
* `MemNames` names the slots of the per-env memory (`MEM_DELAY_GRAVITY = 32`)
  and prints mem indices with them (`mem[MEM_RING_GRAVITY + 2]`);
* `Constants` names the module-level constant arrays and gather indices after
  the definition they belong to (`BEYOND_LIMITS_CONST`, `JOINT_POS_KNEE_IDX`);
* `draw_table` lists which `rand_n` / `rand_u` elements feed which task line.
"""

from __future__ import annotations

import math
import posixpath
from typing import Mapping, Sequence

import sympy as sp

from ksimdsl.codegen.layout import WIDTH, wrap
from ksimdsl.codegen.printer import comment, float_literal
from ksimdsl.errors import Span
from ksimdsl.ir import vec
from ksimdsl.ir.dag import unique_nodes
from ksimdsl.ir.program import DrawUse, MemSlot, Origin, Table
from ksimdsl.ir.reference import TableGather

__all__ = ["Quoter", "MemNames", "Constants", "draw_table", "table_lines", "upper_ident"]


def upper_ident(name: str) -> str:
    """`name` as an upper-case Python identifier (`prev.action` -> `PREV_ACTION`)."""
    out = "".join(c if c.isascii() and c.isalnum() else "_" for c in name.upper()).strip("_")
    while "__" in out:
        out = out.replace("__", "_")
    return out if out and not out[0].isdigit() else f"C_{out}"


class Quoter:
    """Quotes lines of the task file `name` (only its base name is shown) whose text is `text`."""

    def __init__(self, name: str, text: str) -> None:
        self.name = posixpath.basename(name.replace("\\", "/")) or name
        self.lines = text.splitlines()

    def where(self, span: Span | None, exact: bool = False) -> str:
        """`walk.ksim:80  base_yaw = uniform(-180deg, 180deg)`: the line of `span` (empty without a span).

        With `exact`, only the text of a one-line span (`(joint_upper + joint_lower) / 2`).
        """
        if span is None:
            return ""
        text = self.lines[span.line - 1] if 1 <= span.line <= len(self.lines) else ""
        if exact and span.end_line == span.line and span.end_col > span.col:
            text = text[span.col - 1 : span.end_col - 1]
        return f"{self.name}:{span.line}  {text.strip()}".rstrip()

    def comment(self, span: Span | None, indent: int = 0, exact: bool = False) -> str | None:
        """The comment line quoting `span` (see `where`), shortened to fit `WIDTH` (None without a span)."""
        text = self.where(span, exact)
        if not text:
            return None
        return fit_comment(comment(text), indent)


def fit_comment(line: str, indent: int) -> str:
    """A comment line cut (with `...`) to fit `WIDTH` at `indent`."""
    room = WIDTH - indent
    return line if len(line) <= room else line[: room - 3].rstrip() + "..."


class MemNames:
    """Module constants for the offsets of the mem slots, and mem indices printed with them."""

    def __init__(self, slots: Sequence[MemSlot], used: set[str]) -> None:
        self.slots = list(slots)
        self.names: list[str] = []
        for s in self.slots:
            name = f"MEM_{upper_ident(s.name)}"
            k = 1
            while name in used:
                k += 1
                name = f"MEM_{upper_ident(s.name)}_{k}"
            used.add(name)
            self.names.append(name)

    def _locate(self, i: int) -> tuple[str, int]:
        for s, name in zip(self.slots, self.names):
            if s.offset <= i < s.offset + s.size:
                return name, i - s.offset
        return "", i

    def index(self, i: int) -> str:
        """`MEM_X` or `MEM_X + k` for element `i` of mem."""
        name, k = self._locate(i)
        if not name:
            return str(i)
        return name if k == 0 else f"{name} + {k}"

    def range(self, start: int, stop: int) -> str:
        """`MEM_X:MEM_X + n` (both ends relative to the slot holding `start`)."""
        name, k = self._locate(start)
        if not name:
            return f"{start}:{stop}"
        first = name if k == 0 else f"{name} + {k}"
        return f"{first}:{name} + {stop - start + k}"

    def lines(self, quote: Quoter, size: int) -> list[str]:
        out = [f"# Per-env memory `mem` ({size} float{'s' if size != 1 else ''}): the offset of each slot."]
        for s, name in zip(self.slots, self.names):
            what = quote.where(s.span)
            note = f"{s.name}, {s.size} float{'s' if s.size != 1 else ''}"
            out.append(fit_comment(f"{name} = {s.offset}  " + comment(f"{note}{'; ' + what if what else ''}"), 0))
        return out


class Constants:
    """Module-level constant arrays (packed constants and gather indices), each named once.

    An anonymous constant (a literal or a folded expression, `ConstArr` named
    `_...`) or gather is named after the definition it belongs to (`origins`,
    recorded by the lowering) and quotes the sub-expression it folds; a named
    constant (`DEFAULT_JOINT_POS`) quotes the task line that first uses it.
    """

    def __init__(self, origins: Mapping[object, Origin], used: set[str]) -> None:
        self.origins = origins
        self.arrays: dict[sp.Basic, str] = {}
        self.indices: dict[tuple[int, ...], str] = {}
        self._spans: dict[str, Span | None] = {}
        self._exact: dict[str, bool] = {}  # quote only the folded sub-expression, not its whole line
        self._used = used

    def _unique(self, name: str) -> str:
        name = upper_ident(name)
        cand, k = name, 1
        while cand in self._used:
            k += 1
            cand = f"{name}_{k}"
        self._used.add(cand)
        return cand

    def collect(self, exprs: Sequence[sp.Basic]) -> None:
        for node in unique_nodes(exprs):
            if isinstance(node, vec.ConstArr) and node not in self.arrays:
                origin = self.origins.get(node)
                anonymous = node.name.startswith("_")
                if anonymous and origin is not None:
                    self.arrays[node] = name = self._unique(f"{origin.name}_const")
                else:
                    self.arrays[node] = name = self._unique(node.name)
                self._spans[name] = origin.span if origin is not None else None
                self._exact[name] = anonymous
            elif isinstance(node, TableGather) and node.columns not in self.indices:
                origin = self.origins.get(node.columns)
                self.indices[node.columns] = name = self._unique(f"{origin.name if origin else node.table}_idx")
                self._spans[name] = origin.span if origin is not None else None
            elif isinstance(node, vec.ArrGather) and node.indices not in self.indices:
                origin = self.origins.get(node.indices)
                if origin is not None:
                    self.indices[node.indices] = name = self._unique(f"{origin.name}_idx")
                else:
                    self.indices[node.indices] = name = self._unique(f"{node.base.name}_idx")
                self._spans[name] = origin.span if origin is not None else None

    def lines(self, backend: str, quote: Quoter) -> list[str]:
        out: list[str] = []
        arr = "jnp" if backend == "jax" else "np"
        defs = [
            (name, [repr(v) if math.isfinite(v) else float_literal(v, arr) for v in node.values], arr, "float32")
            for node, name in self.arrays.items()
        ]
        defs += [(name, [str(i) for i in idx], "np", "int32") for idx, name in self.indices.items()]
        for name, values, module, dtype in defs:
            note = quote.comment(self._spans.get(name), exact=self._exact.get(name, False))
            if note:
                out.append(note)
            out += wrap(f"{name} = ", f"{module}.array([{', '.join(values)}], dtype={module}.{dtype})")
        return out


def table_lines(table: Table, backend: str, quote: Quoter) -> list[str]:
    """A reference frame table as a module-level constant: one row per frame, wrapped at the line width.

    Values print as the shortest text that reads back as the same float32.
    """
    module = "jnp" if backend == "jax" else "np"
    out = [line for line in (quote.comment(table.span),) if line]
    out.append(fit_comment(comment(f"{table.name}: {table.title}"), 0))
    out.append(f"{table.name} = {module}.array([")
    for row in table.values:
        line = "    ["
        for k, v in enumerate(row):
            piece = str(float(v)) if float(v).is_integer() else str(v)
            piece += ", " if k < len(row) - 1 else "],"
            if len(line) + len(piece.rstrip()) > WIDTH:
                out.append(line.rstrip())
                line = "     "
            line += piece
        out.append(line)
    out.append(f"], dtype={module}.float32)")
    return out


def draw_table(draws: Sequence[DrawUse], quote: Quoter, indent: int) -> list[str]:
    """Comment lines: which elements of `rand_n` ~ N(0, 1) / `rand_u` ~ U[0, 1) feed which task line."""
    if not draws:
        return []
    out = ["# Random draws (rand_n ~ N(0, 1), rand_u ~ U[0, 1)):"]
    for d in sorted(draws, key=lambda d: (d.base != "rand_n", d.start)):
        where = f"{d.base}[{d.start}]" if d.count == 1 else f"{d.base}[{d.start}:{d.start + d.count}]"
        what = quote.where(d.span) or "(no task line)"
        out.append(fit_comment(comment(f"  {where:<16}{what}"), indent))
    return out
