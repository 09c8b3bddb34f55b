"""A minimal LSP client over a server's stdio pipes (JSON-RPC framing by hand), for tests and benchmarks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]


class LspError(Exception):
    def __init__(self, error: dict):
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.error = error


class LspClient:
    """Starts `python -m ksimdsl.cli lsp` and speaks JSON-RPC to it."""

    def __init__(self, *args: str, timeout: float = 30.0):
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ksimdsl.cli", "lsp", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=str(ROOT),
            env=env,
        )
        self.timeout = timeout
        self._next_id = 0
        self._responses: dict[int, dict] = {}
        self.notifications: list[dict] = []
        self.server_requests: list[dict] = []
        self._cv = threading.Condition()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        self.stderr_lines: list[str] = []
        threading.Thread(target=self._read_stderr, daemon=True).start()

    # ----------------------------------------------------------------- wire

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self.stderr_lines.append(line.decode("utf-8", "replace"))

    def _read_loop(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            headers: dict[str, str] = {}
            while True:
                line = out.readline()
                if not line:
                    with self._cv:
                        self._cv.notify_all()
                    return
                line = line.strip()
                if not line:
                    break
                k, _, v = line.decode("ascii").partition(":")
                headers[k.strip().lower()] = v.strip()
            body = out.read(int(headers["content-length"]))
            msg = json.loads(body)
            with self._cv:
                if "id" in msg and ("result" in msg or "error" in msg) and "method" not in msg:
                    self._responses[msg["id"]] = msg
                elif "id" in msg:
                    self.server_requests.append(msg)
                    self._send({"jsonrpc": "2.0", "id": msg["id"], "result": None})
                else:
                    self.notifications.append(msg)
                self._cv.notify_all()

    def _send(self, msg: dict) -> None:
        data = json.dumps(msg).encode("utf-8")
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(data) + data)
        self.proc.stdin.flush()

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    # ----------------------------------------------------------------- API

    def request(self, method: str, params: Any = None, timeout: float | None = None) -> Any:
        with self._cv:
            self._next_id += 1
            rid = self._next_id
            self._send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
            deadline = time.monotonic() + (timeout or self.timeout)
            while rid not in self._responses:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError(f"no answer to {method} (server alive: {self.proc.poll() is None})")
                self._cv.wait(left)
            msg = self._responses.pop(rid)
        if "error" in msg:
            raise LspError(msg["error"])
        return msg.get("result")

    def notify(self, method: str, params: Any = None) -> None:
        with self._cv:
            self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def wait_for(self, pred: Callable[[dict], bool], timeout: float | None = None) -> dict:
        """The first notification (received so far or later) matching `pred`; it is consumed."""
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cv:
            while True:
                for i, n in enumerate(self.notifications):
                    if pred(n):
                        return self.notifications.pop(i)
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError("notification not received")
                self._cv.wait(left)

    def diagnostics(self, uri: str, version: int | None = None, timeout: float | None = None) -> list[dict]:
        def pred(n: dict) -> bool:
            if n.get("method") != "textDocument/publishDiagnostics" or n["params"]["uri"] != uri:
                return False
            return version is None or n["params"].get("version") == version

        return self.wait_for(pred, timeout)["params"]["diagnostics"]

    def initialize(self, root: Path = ROOT) -> dict:
        result = self.request(
            "initialize",
            {"processId": os.getpid(), "rootUri": root.as_uri(),
             "capabilities": {"textDocument": {"rename": {"prepareSupport": True}}}},
            timeout=60,
        )
        self.notify("initialized", {})
        return result

    def open(self, path: Path, text: str | None = None, version: int = 1) -> str:
        uri = path.resolve().as_uri()
        self.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": "ksim", "version": version,
                              "text": path.read_text() if text is None else text}},
        )
        return uri

    def change(self, uri: str, version: int, text: str) -> None:
        self.notify("textDocument/didChange",
                    {"textDocument": {"uri": uri, "version": version}, "contentChanges": [{"text": text}]})

    def edit(self, uri: str, version: int, rng: dict, text: str) -> None:
        change = {"range": rng, "text": text}
        self.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version}, "contentChanges": [change]})

    def at(self, uri: str, line: int, character: int, **extra: Any) -> dict:
        return {"textDocument": {"uri": uri}, "position": {"line": line, "character": character}, **extra}

    def close(self) -> int:
        try:
            if self.proc.poll() is None:
                self.request("shutdown", None, timeout=10)
                self.notify("exit")
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
