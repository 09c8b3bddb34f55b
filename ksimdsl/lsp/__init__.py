"""`ksimdsl lsp`: a Language Server Protocol server for `.ksim` task files.

A tool on top of the front end: it reuses the parser and the checker
(`ksimdsl.frontend`) for diagnostics, types, units and MJCF names, and never
imports the runtime. `main()` serves over stdio (pygls).
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Serve LSP over stdio until the client says exit; returns the exit status."""
    from ksimdsl.lsp.server import serve

    return serve(argv)
