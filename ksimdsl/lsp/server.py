"""The pygls server: open documents, debounced checking, model reloads, request handlers.

Every handler is wrapped (`_guard`): an exception inside one is logged (to
stderr and the client's log) and answered as a JSON-RPC internal error, so
no input can stop the server.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import sys
import traceback
from typing import Any, Callable, Sequence

from lsprotocol import types as lsp
from pygls.exceptions import JsonRpcException, JsonRpcInternalError, JsonRpcInvalidParams, JsonRpcInvalidRequest
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.uris import to_fs_path

from ksimdsl import __version__
from ksimdsl.frontend import ast
from ksimdsl.frontend.model_info import ModelLoadError, resolve_model_path
from ksimdsl.lsp.analysis import analyze
from ksimdsl.lsp.features import Document, RenameRefused

__all__ = ["KsimLanguageServer", "build_server", "serve"]

logger = logging.getLogger("ksimdsl.lsp")

#: Characters after which editors ask for completions.
TRIGGER_CHARACTERS = ['"', ".", "[", "(", "=", " "]


class _Protocol(LanguageServerProtocol):
    """pygls's protocol, but a request whose params do not deserialize is answered with an error.

    (pygls logs such a request and drops it, leaving the client waiting.)
    """

    def structure_message(self, data: dict[str, Any]):
        try:
            return super().structure_message(data)
        except JsonRpcException as err:
            if isinstance(data, dict) and "id" in data and "method" in data:
                error = err.to_response_error()
                error.message = f"invalid request {data.get('method')!r}: {error.message or 'bad params'}"
                self._send_response(data["id"], error=error)
            raise


class KsimLanguageServer(LanguageServer):
    """Holds one `Document` (the latest analysis) per open file."""

    def __init__(self, debounce_s: float = 0.2, poll_s: float = 1.0):
        super().__init__("ksimdsl", __version__, text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental,
                         protocol_cls=_Protocol)
        self.debounce_s = debounce_s
        self.poll_s = poll_s
        self.docs: dict[str, Document] = {}
        self._pending: dict[str, asyncio.Task] = {}
        self._watcher: asyncio.Task | None = None

    @property
    def encoding(self) -> str:
        try:
            enc = self.workspace.position_encoding
        except RuntimeError:  # not initialized yet
            enc = None
        return str(getattr(enc, "value", enc) or "utf-16")

    # ----------------------------------------------------------------- documents

    def refresh(self, uri: str, publish: bool = True) -> Document:
        """Analyse the current text of `uri` now, store and (by default) publish its diagnostics."""
        text_doc = self.workspace.get_text_document(uri)
        path = to_fs_path(uri) or uri
        doc = Document.of(uri, analyze(path, text_doc.source, text_doc.version), self.encoding)
        self.docs[uri] = doc
        if publish:
            self.text_document_publish_diagnostics(
                lsp.PublishDiagnosticsParams(uri, doc.diagnostics(), version=text_doc.version)
            )
        return doc

    def current(self, uri: str) -> Document:
        """The analysis of the current text (checked now if an edit is still waiting for its debounce)."""
        doc = self.docs.get(uri)
        if uri not in self.workspace.text_documents:
            raise JsonRpcInvalidParams(f"document not open: {uri}")
        text_doc = self.workspace.get_text_document(uri)
        if doc is None or doc.analysis.version != text_doc.version or doc.analysis.text != text_doc.source:
            doc = self.refresh(uri)
        return doc

    def schedule(self, uri: str) -> None:
        """Check `uri` once edits have paused for `debounce_s`."""
        old = self._pending.pop(uri, None)
        if old is not None:
            old.cancel()
        self._pending[uri] = asyncio.get_running_loop().create_task(self._check_later(uri))

    async def _check_later(self, uri: str) -> None:
        try:
            await asyncio.sleep(self.debounce_s)
            self._pending.pop(uri, None)
            if uri in self.docs or uri in self.workspace.text_documents:
                _safely(self, "check", lambda: self.refresh(uri))
        except asyncio.CancelledError:
            pass

    def close(self, uri: str) -> None:
        task = self._pending.pop(uri, None)
        if task is not None:
            task.cancel()
        self.docs.pop(uri, None)
        self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri, []))

    # ----------------------------------------------------------------- model files

    def model_stale(self, doc: Document) -> bool:
        """True if the model file of `doc` changed on disk (or appeared, or went away) since its analysis."""
        an = doc.analysis
        stmt = next((s for s in an.module.statements if isinstance(s, ast.ModelStmt)), None) if an.module else None
        if stmt is None:
            return False
        try:
            resolved = resolve_model_path(stmt.path, os.path.dirname(os.path.abspath(an.path)))
            mtime = os.stat(resolved).st_mtime_ns
        except (ModelLoadError, OSError):
            resolved, mtime = None, None
        if an.model_path is None:
            return resolved is not None  # did not load before; the file is there now
        return (resolved, mtime) != (an.model_path, an.model_mtime_ns)

    def reload_models(self, changed: set[str] | None = None) -> None:
        """Re-check the open documents whose model changed (`changed`: file paths, None: look at every model)."""
        for uri, doc in list(self.docs.items()):
            hit = doc.analysis.model_path in changed if changed else False
            if hit or self.model_stale(doc):
                logger.info("model of %s changed; checking again", uri)
                _safely(self, "model reload", lambda uri=uri: self.refresh(uri))

    async def watch_models(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            _safely(self, "model watch", self.reload_models)


def _log_internal(ls: KsimLanguageServer, what: str, err: BaseException) -> str:
    text = f"ksimdsl lsp: internal error in {what}: {type(err).__name__}: {err}"
    logger.error("%s\n%s", text, "".join(traceback.format_exception(err)))
    try:
        ls.window_log_message(lsp.LogMessageParams(lsp.MessageType.Error, text))
    except Exception:  # noqa: BLE001 - the log is best effort
        pass
    return text


def _safely(ls: KsimLanguageServer, what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - a notification has nobody to answer; log and go on
        _log_internal(ls, what, err)
        return None


def _guard(method: str, fn: Callable) -> Callable:
    """Wrap a request handler: internal errors are logged and answered as JSON-RPC errors."""

    @functools.wraps(fn)
    def handler(ls: KsimLanguageServer, params: Any) -> Any:
        try:
            return fn(ls, params)
        except JsonRpcException:
            raise
        except RenameRefused as err:
            raise JsonRpcInvalidRequest(str(err)) from None
        except Exception as err:  # noqa: BLE001
            raise JsonRpcInternalError(_log_internal(ls, method, err)) from None

    return handler


def _notification(method: str, fn: Callable) -> Callable:
    """Wrap a notification handler: there is nobody to answer, so errors are logged."""

    @functools.wraps(fn)
    def handler(ls: KsimLanguageServer, params: Any) -> None:
        _safely(ls, method, lambda: fn(ls, params))

    return handler


def _initialized(ls: KsimLanguageServer, params: lsp.InitializedParams) -> None:
    if ls._watcher is None:
        ls._watcher = asyncio.get_running_loop().create_task(ls.watch_models())


def _watched_files(ls: KsimLanguageServer, params: lsp.DidChangeWatchedFilesParams) -> None:
    ls.reload_models({os.path.abspath(to_fs_path(c.uri) or c.uri) for c in params.changes})


def _completion(ls: KsimLanguageServer, params: lsp.CompletionParams) -> lsp.CompletionList:
    uri = params.text_document.uri
    doc = ls.docs.get(uri) if uri in ls.workspace.text_documents else None
    doc = doc or ls.current(uri)  # names from the last check; the line being typed from the live text
    lines = ls.workspace.get_text_document(uri).source.split("\n")
    return doc.completion([ln.rstrip("\r") for ln in lines], params.position)


def _doc(ls: KsimLanguageServer, params: Any) -> Document:
    return ls.current(params.text_document.uri)


_NOTIFICATIONS: dict[str, Callable] = {
    lsp.INITIALIZED: _initialized,
    lsp.TEXT_DOCUMENT_DID_OPEN: lambda ls, p: ls.refresh(p.text_document.uri),
    lsp.TEXT_DOCUMENT_DID_CHANGE: lambda ls, p: ls.schedule(p.text_document.uri),
    lsp.TEXT_DOCUMENT_DID_SAVE: lambda ls, p: ls.refresh(p.text_document.uri),
    lsp.TEXT_DOCUMENT_DID_CLOSE: lambda ls, p: ls.close(p.text_document.uri),
    lsp.WORKSPACE_DID_CHANGE_WATCHED_FILES: _watched_files,
}

#: method -> (options, handler)
_REQUESTS: dict[str, tuple[Any, Callable]] = {
    lsp.TEXT_DOCUMENT_HOVER: (None, lambda ls, p: _doc(ls, p).hover(p.position)),
    lsp.TEXT_DOCUMENT_COMPLETION: (lsp.CompletionOptions(trigger_characters=TRIGGER_CHARACTERS), _completion),
    lsp.TEXT_DOCUMENT_DEFINITION: (None, lambda ls, p: _doc(ls, p).definition(p.position)),
    lsp.TEXT_DOCUMENT_REFERENCES: (
        None,
        lambda ls, p: _doc(ls, p).references(p.position, p.context.include_declaration),
    ),
    lsp.TEXT_DOCUMENT_PREPARE_RENAME: (None, lambda ls, p: _doc(ls, p).prepare_rename(p.position)),
    lsp.TEXT_DOCUMENT_RENAME: (None, lambda ls, p: _doc(ls, p).rename(p.position, p.new_name)),
    lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL: (None, lambda ls, p: _doc(ls, p).symbols()),
    lsp.TEXT_DOCUMENT_CODE_ACTION: (
        lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix]),
        lambda ls, p: _doc(ls, p).code_actions(p.range),
    ),
}


def build_server(debounce_s: float = 0.2, poll_s: float = 1.0) -> KsimLanguageServer:
    """A server with every feature registered (not started)."""
    server = KsimLanguageServer(debounce_s, poll_s)
    for method, fn in _NOTIFICATIONS.items():
        server.feature(method)(_notification(method, fn))
    for method, (options, fn) in _REQUESTS.items():
        server.feature(method, options)(_guard(method, fn))
    return server


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ksimdsl lsp", description="Language server for .ksim files (stdio).")
    p.add_argument("--stdio", action="store_true", help="serve over stdio (the default and only transport)")
    p.add_argument("--debounce-ms", type=float, default=200.0, help="wait this long after an edit before checking")
    p.add_argument("--log-file", help="write the server log here (default: stderr)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every check")
    return p.parse_args(list(argv) if argv is not None else [])


def serve(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    handler: logging.Handler = (
        logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger("ksimdsl").addHandler(handler)
    logging.getLogger("ksimdsl").setLevel(logging.INFO if args.verbose else logging.WARNING)
    server = build_server(debounce_s=max(0.0, args.debounce_ms) / 1000.0)
    server.start_io()
    return 0
