"""Positions: `ksimdsl.errors.Span` (1-based lines, 1-based code-point columns) <-> LSP (0-based, client code units)."""

from __future__ import annotations

from dataclasses import dataclass

from lsprotocol import types as lsp

from ksimdsl.errors import Span

__all__ = ["Codec"]


def _units(text: str, encoding: str) -> int:
    if encoding == "utf-8":
        return len(text.encode("utf-8", "surrogatepass"))
    if encoding == "utf-32":
        return len(text)
    return sum(2 if ord(c) > 0xFFFF else 1 for c in text)


@dataclass(frozen=True)
class Codec:
    """Converts positions of one document text for a client's position encoding."""

    lines: list[str]
    encoding: str = "utf-16"

    def _line(self, line0: int) -> str:
        return self.lines[line0] if 0 <= line0 < len(self.lines) else ""

    def to_client(self, line0: int, col0: int) -> lsp.Position:
        text = self._line(line0)
        if text.isascii():
            return lsp.Position(line0, max(0, col0))
        return lsp.Position(line0, _units(text[: max(0, col0)], self.encoding))

    def from_client(self, pos: lsp.Position) -> tuple[int, int]:
        """0-based (line, code-point column)."""
        text = self._line(pos.line)
        if text.isascii():
            return pos.line, pos.character
        n = 0
        for i, c in enumerate(text):
            if n >= pos.character:
                return pos.line, i
            n += _units(c, self.encoding)
        return pos.line, len(text)

    def range(self, span: Span | None) -> lsp.Range:
        if span is None:
            return lsp.Range(lsp.Position(0, 0), lsp.Position(0, len(self._line(0))))
        start = self.to_client(span.line - 1, span.col - 1)
        return lsp.Range(start, self.to_client(span.end_line - 1, span.end_col - 1))
