"""The LSP requests on one analysed document: results as lsprotocol types."""

from __future__ import annotations

from dataclasses import dataclass

from lsprotocol import types as lsp

from ksimdsl.errors import Diagnostic
from ksimdsl.frontend import ast
from ksimdsl.lsp.actions import did_you_mean_fix
from ksimdsl.lsp.analysis import Analysis
from ksimdsl.lsp.completion import complete
from ksimdsl.lsp.hover import hover
from ksimdsl.lsp.positions import Codec
from ksimdsl.lsp.symbols import RENAMABLE, Symbol, SymbolIndex, build_index, check_new_name

__all__ = ["Document", "RenameRefused"]

_SEVERITY = {
    "error": lsp.DiagnosticSeverity.Error,
    "warning": lsp.DiagnosticSeverity.Warning,
    "note": lsp.DiagnosticSeverity.Information,
}
_SYMBOL_KINDS = {
    "let": lsp.SymbolKind.Variable,
    "state": lsp.SymbolKind.Variable,
    "command": lsp.SymbolKind.Event,
    "command_field": lsp.SymbolKind.Field,
    "observation": lsp.SymbolKind.Field,
    "reward": lsp.SymbolKind.Number,
    "termination": lsp.SymbolKind.Boolean,
    "metric": lsp.SymbolKind.Number,
    "event": lsp.SymbolKind.Event,
}


class RenameRefused(Exception):
    """A rename that cannot be done (the message says why)."""


@dataclass(frozen=True, eq=False)
class Document:
    """One analysed version of an open document and its symbol index."""

    uri: str
    analysis: Analysis
    index: SymbolIndex
    encoding: str = "utf-16"

    @staticmethod
    def of(uri: str, analysis: Analysis, encoding: str = "utf-16") -> "Document":
        return Document(uri, analysis, build_index(analysis.module), encoding)

    @property
    def codec(self) -> Codec:
        return Codec(self.analysis.lines, self.encoding)

    def pos(self, p: lsp.Position) -> tuple[int, int]:
        """1-based (line, column) of an LSP position."""
        line0, col0 = self.codec.from_client(p)
        return line0 + 1, col0 + 1

    # ----------------------------------------------------------------- diagnostics

    def lsp_diagnostic(self, d: Diagnostic) -> lsp.Diagnostic:
        message = d.message + "".join(f"\nnote: {n}" for n in d.notes)
        return lsp.Diagnostic(
            range=self.codec.range(d.span),
            message=message,
            severity=_SEVERITY.get(d.severity, lsp.DiagnosticSeverity.Error),
            source="ksimdsl",
        )

    def diagnostics(self) -> list[lsp.Diagnostic]:
        return [self.lsp_diagnostic(d) for d in self.analysis.diagnostics]

    # ----------------------------------------------------------------- requests

    def hover(self, p: lsp.Position) -> lsp.Hover | None:
        h = hover(self.analysis, self.index, self.pos(p))
        if h is None:
            return None
        return lsp.Hover(lsp.MarkupContent(lsp.MarkupKind.Markdown, h.markdown), self.codec.range(h.span))

    def completion(self, lines: list[str], p: lsp.Position) -> lsp.CompletionList:
        codec = Codec(lines, self.encoding)
        line0, col0 = codec.from_client(p)
        items = []
        for it in complete(self.analysis, self.index, lines, line0, col0):
            edit = lsp.TextEdit(lsp.Range(codec.to_client(line0, it.start), p), it.insert or it.label)
            items.append(
                lsp.CompletionItem(
                    label=it.label,
                    kind=getattr(lsp.CompletionItemKind, it.kind, lsp.CompletionItemKind.Text),
                    detail=it.detail or None,
                    documentation=it.doc or None,
                    text_edit=edit,
                    sort_text=f"{len(items):04d}",
                )
            )
        return lsp.CompletionList(is_incomplete=False, items=items)

    def _location(self, span) -> lsp.Location:
        return lsp.Location(self.uri, self.codec.range(span))

    def definition(self, p: lsp.Position) -> list[lsp.Location]:
        sym = self.index.at(self.pos(p))
        return [self._location(sym.name_span)] if sym is not None else []

    def references(self, p: lsp.Position, include_declaration: bool) -> list[lsp.Location]:
        sym = self.index.at(self.pos(p))
        if sym is None:
            return []
        return [self._location(sp) for sp in self.index.references(sym, include_declaration)]

    def _renamable(self, p: lsp.Position) -> Symbol:
        sym = self.index.at(self.pos(p))
        if sym is None or sym.kind not in RENAMABLE:
            raise RenameRefused("only a `let` or `state` name can be renamed")
        return sym

    def prepare_rename(self, p: lsp.Position) -> lsp.PrepareRenamePlaceholder | None:
        try:
            sym = self._renamable(p)
        except RenameRefused:
            return None
        pos = self.pos(p)
        spans = self.index.references(sym)
        here = next((sp for sp in spans if sp.line == pos[0] and sp.col <= pos[1] <= sp.end_col), sym.name_span)
        return lsp.PrepareRenamePlaceholder(self.codec.range(here), sym.name)

    def rename(self, p: lsp.Position, new_name: str) -> lsp.WorkspaceEdit:
        sym = self._renamable(p)
        why = check_new_name(self.index, sym, new_name)
        if why is not None:
            raise RenameRefused(why)
        edits = [lsp.TextEdit(self.codec.range(sp), new_name) for sp in self.index.references(sym)]
        return lsp.WorkspaceEdit(changes={self.uri: edits})

    def code_actions(self, rng: lsp.Range) -> list[lsp.CodeAction]:
        out = []
        lines = self.analysis.lines
        for d in self.analysis.diagnostics:
            fix = did_you_mean_fix(d, lines)
            if fix is None:
                continue
            drange = self.codec.range(d.span)
            if (drange.end.line, drange.end.character) < (rng.start.line, rng.start.character) or (
                drange.start.line, drange.start.character) > (rng.end.line, rng.end.character):
                continue
            edit = lsp.TextEdit(self.codec.range(fix.span), fix.new_text)
            out.append(
                lsp.CodeAction(
                    title=fix.title,
                    kind=lsp.CodeActionKind.QuickFix,
                    diagnostics=[self.lsp_diagnostic(d)],
                    edit=lsp.WorkspaceEdit(changes={self.uri: [edit]}),
                    is_preferred=True,
                )
            )
        return out

    def symbols(self) -> list[lsp.DocumentSymbol]:
        module = self.analysis.module
        if module is None:
            return []
        r = self.codec.range
        out: list[lsp.DocumentSymbol] = []
        syms = self.index.symbols
        for st in module.statements:
            if isinstance(st, ast.TaskStmt):
                out.append(
                    lsp.DocumentSymbol(f"task {st.name}", lsp.SymbolKind.Module, r(st.span), r(st.span), detail=st.doc)
                )
                continue
            mine = [s for s in syms if st.span.line <= s.name_span.line <= st.span.end_line]
            head = next((s for s in mine if s.span == st.span), None)
            children = [
                lsp.DocumentSymbol(
                    s.name, _SYMBOL_KINDS[s.kind], r(s.span), r(s.name_span), detail=s.kind.replace("_", " ")
                )
                for s in mine
                if s is not head
            ]
            if head is not None:
                out.append(lsp.DocumentSymbol(head.name, _SYMBOL_KINDS[head.kind], r(st.span), r(head.name_span),
                                              detail=head.kind, children=children or None))
            elif children:
                title = {ast.ObserveStmt: lambda s: f"observe {s.group}", ast.RewardStmt: lambda s: "reward",
                         ast.TerminateStmt: lambda s: "terminate",
                         ast.MetricStmt: lambda s: "metric"}.get(type(st), lambda s: type(s).__name__)(st)
                first = st.span
                sel = type(first)(first.line, first.col, first.line, first.col + len(title.split()[0]))
                out.append(lsp.DocumentSymbol(title, lsp.SymbolKind.Namespace, r(st.span), r(sel), children=children))
        return out
