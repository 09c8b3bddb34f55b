"""Names a task declares and where they are used: definitions, references, rename, outline."""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

from ksimdsl.errors import Span
from ksimdsl.frontend import ast
from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend.grammar import STATEMENT_KEYWORDS
from ksimdsl.lsp.syntax import Pos, contains, statement_exprs, walk_expr

__all__ = ["Symbol", "SymbolIndex", "build_index", "check_new_name", "RENAMABLE"]

#: Symbol kinds that can be renamed (their uses are plain names).
RENAMABLE = frozenset({"let", "state"})
#: Symbol kinds whose uses are tracked.
NAVIGABLE = frozenset({"let", "state", "command", "observation"})

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: Words the grammar or checker gives a meaning of their own.
_RESERVED = frozenset(
    {*STATEMENT_KEYWORDS, "and", "or", "not", "success", "bias", "delay", "history", "latency", "zero_offset", "every",
     "resample", "cmd", "prev"}
)


@dataclass(frozen=True)
class Symbol:
    """A declared name: `kind` in let, state, command, command_field, observation, reward, termination, metric,
    event."""

    name: str
    kind: str
    name_span: Span
    span: Span  # the whole declaration
    group: str = ""  # observation group / command of a field


@dataclass(frozen=True)
class SymbolIndex:
    symbols: tuple[Symbol, ...]
    # (kind, name) -> spans of the uses (definition excluded)
    uses: dict[tuple[str, str], tuple[Span, ...]]

    def defined(self, kind: str, name: str) -> Symbol | None:
        return next((s for s in self.symbols if s.kind == kind and s.name == name), None)

    def of_kind(self, *kinds: str) -> list[Symbol]:
        return [s for s in self.symbols if s.kind in kinds]

    def at(self, pos: Pos) -> Symbol | None:
        """The navigable symbol whose definition or a use is at `pos` (end of the name included)."""
        for s in self.symbols:
            if s.kind in NAVIGABLE and contains(s.name_span, pos, end_inclusive=True):
                return s
        for (kind, name), spans in self.uses.items():
            if any(contains(sp, pos, end_inclusive=True) for sp in spans):
                return self.definition(kind, name, pos)
        return None

    def definition(self, kind: str, name: str, pos: Pos | None = None) -> Symbol | None:
        if kind == "observation" and pos is not None:
            same = [s for s in self.symbols if s.kind == kind and s.name == name]
            return next((s for s in same if contains(s.name_span, pos, end_inclusive=True)), same[0] if same else None)
        return self.defined(kind, name)

    def references(self, sym: Symbol, include_declaration: bool = True) -> list[Span]:
        if sym.kind == "observation":
            spans = [s.name_span for s in self.symbols if s.kind == "observation" and s.name == sym.name]
            return spans if include_declaration else [sp for sp in spans if sp != sym.name_span]
        out = [sym.name_span] if include_declaration else []
        return out + list(self.uses.get((sym.kind, sym.name), ()))


def _declarations(module: ast.Module) -> list[Symbol]:
    out: list[Symbol] = []
    for st in module.statements:
        if isinstance(st, ast.LetStmt):
            out.append(Symbol(st.name, "let", st.name_span, st.span))
        elif isinstance(st, ast.StateStmt):
            out.append(Symbol(st.name, "state", st.name_span, st.span))
        elif isinstance(st, ast.CommandStmt):
            out.append(Symbol(st.name, "command", st.name_span, st.span))
            out += [Symbol(f.name, "command_field", f.name_span, f.span, st.name) for f in st.fields]
        elif isinstance(st, ast.ObserveStmt):
            out += [
                Symbol(i.name, "observation", i.name_span, i.span, st.group)
                for i in st.items
                if isinstance(i, ast.ObsItem)
            ]
        elif isinstance(st, ast.RewardStmt):
            out += [Symbol(r.name, "reward", r.name_span, r.span) for r in st.terms]
        elif isinstance(st, ast.TerminateStmt):
            out += [Symbol(x.name, "termination", x.name_span, x.span) for x in st.terms]
        elif isinstance(st, ast.MetricStmt):
            out += [Symbol(m.name, "metric", m.name_span, m.span) for m in st.items]
        elif isinstance(st, ast.EventStmt):
            out.append(Symbol(st.name, "event", st.name_span, st.span))
    return out


def build_index(module: ast.Module | None) -> SymbolIndex:
    if module is None:
        return SymbolIndex((), {})
    symbols = _declarations(module)
    lets = {s.name for s in symbols if s.kind == "let"}
    states = {s.name for s in symbols if s.kind == "state"}
    uses: dict[tuple[str, str], list[Span]] = {}
    for st in module.statements:
        for root in statement_exprs(st):
            for node in walk_expr(root):
                if isinstance(node, ast.Name):
                    kind = "let" if node.id in lets else "state" if node.id in states else None
                    if kind:
                        uses.setdefault((kind, node.id), []).append(node.span)
                elif isinstance(node, ast.Attr) and isinstance(node.base, ast.Name) and node.base.id == "cmd":
                    if "cmd" not in lets:
                        uses.setdefault(("command", node.name), []).append(node.name_span)
    return SymbolIndex(tuple(symbols), {k: tuple(v) for k, v in uses.items()})


def check_new_name(index: SymbolIndex, sym: Symbol, new: str) -> str | None:
    """Why `new` cannot replace `sym`'s name, or None if it can."""
    if not _IDENT.match(new):
        return f"'{new}' is not a name (letters, digits and _, not starting with a digit)"
    if new in _RESERVED or keyword.iskeyword(new):
        return f"'{new}' is a keyword"
    if new in bi.QUANTITIES or new in bi.FUNCTIONS or new in bi.LOOKUPS or new in bi.DISTRIBUTIONS:
        return f"'{new}' is a built-in name"
    if new != sym.name and any(s.name == new and s.kind in RENAMABLE for s in index.symbols):
        return f"'{new}' is already declared"
    return None
