"""Latency of `ksimdsl lsp` hover and completion on tasks/walk.ksim, after the first check.

Two views: the request handlers in-process (what the server spends), and a full
JSON-RPC round trip over the server's stdio pipes (what an editor waits for).
Goal (issue 15): under 100 ms. No timed assertions.

    pytest benchmarks/test_lsp.py --benchmark-only
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("pygls")

from lsprotocol import types as lsp  # noqa: E402

from ksimdsl.lsp.analysis import analyze  # noqa: E402
from ksimdsl.lsp.features import Document  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WALK = ROOT / "tasks" / "walk.ksim"
sys.path.insert(0, str(ROOT / "tests"))
from lsp_client import LspClient  # noqa: E402


def _where(text: str, needle: str, offset: int = 0) -> lsp.Position:
    at = text.index(needle)
    return lsp.Position(text.count("\n", 0, at), at - (text.rfind("\n", 0, at) + 1) + offset)


TEXT = WALK.read_text()
HOVER_AT = _where(TEXT, "exp_kernel(local_lin_vel.xy - cmd.vel.xy", 14)  # inside local_lin_vel
COMPLETE_AT = _where(TEXT, '"foot_left", "foot_right"', 1)  # a geom/body name in contact([...])
EXPR_AT = _where(TEXT, "norm2(action - prev(action))", 3)  # an expression position: all built-ins


@pytest.fixture(scope="module")
def document() -> Document:
    return Document.of(WALK.as_uri(), analyze(str(WALK), TEXT, 1))


def test_check_walk(benchmark):
    benchmark.pedantic(analyze, args=(str(WALK), TEXT, 1), rounds=5, iterations=1, warmup_rounds=1)


def test_hover_inprocess(benchmark, document):
    h = benchmark(document.hover, HOVER_AT)
    assert h is not None and "vector[3] m/s" in h.contents.value


def test_completion_joint_names_inprocess(benchmark, document):
    lines = TEXT.split("\n")
    result = benchmark(document.completion, lines, COMPLETE_AT)
    assert "floor" in [i.label for i in result.items]


def test_completion_expression_inprocess(benchmark, document):
    lines = TEXT.split("\n")
    result = benchmark(document.completion, lines, EXPR_AT)
    assert "exp_kernel" in [i.label for i in result.items]


@pytest.fixture(scope="module")
def client():
    c = LspClient()
    c.initialize()
    uri = c.open(WALK)
    assert c.diagnostics(uri, 1) == []
    c.uri = uri  # type: ignore[attr-defined]
    yield c
    c.close()


def _pos(p: lsp.Position) -> dict:
    return {"line": p.line, "character": p.character}


def test_hover_roundtrip(benchmark, client):
    params = {"textDocument": {"uri": client.uri}, "position": _pos(HOVER_AT)}
    h = benchmark(client.request, "textDocument/hover", params)
    assert "vector[3] m/s" in h["contents"]["value"]


def test_completion_roundtrip(benchmark, client):
    params = {"textDocument": {"uri": client.uri}, "position": _pos(EXPR_AT)}
    result = benchmark(client.request, "textDocument/completion", params)
    assert len(result["items"]) > 40
