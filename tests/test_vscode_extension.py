"""The VS Code extension in editors/vscode: its TextMate grammar agrees with the language.

The node test (editors/vscode/test/grammar.test.js) tokenizes every shipped
task with vscode-textmate; it runs here when node and the extension's
node_modules (`npm install` in editors/vscode) are available.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend.grammar import STATEMENT_KEYWORDS, UNITS

EXT = Path(__file__).resolve().parents[1] / "editors" / "vscode"
GRAMMAR = json.loads((EXT / "syntaxes" / "ksim.tmLanguage.json").read_text())


def _alternatives(pattern: str) -> set[str]:
    m = re.search(r"\\b\(([a-z_0-9|]+)\)", pattern)
    assert m, pattern
    return set(m.group(1).split("|"))


def test_grammar_knows_every_builtin_and_keyword():
    repo = GRAMMAR["repository"]
    assert _alternatives(repo["builtin"]["match"]) == set(bi.QUANTITIES)
    calls = [p["match"] for p in repo["call"]["patterns"]]
    assert _alternatives(calls[0]) == {*bi.FUNCTIONS, "prev"}
    assert _alternatives(calls[1]) == set(bi.LOOKUPS)
    assert _alternatives(calls[2]) == set(bi.DISTRIBUTIONS)
    statement = repo["statement"]["patterns"][0]["match"]
    assert set(re.search(r"\^\(([a-z_|]+)\)", statement).group(1).split("|")) == set(STATEMENT_KEYWORDS)
    assert re.search(r"\(deg\|ms\|m\|s\|steps\)", repo["number"]["match"])
    assert set(UNITS) == {"deg", "ms", "m", "s", "steps"}


def test_package_json_wires_the_language_and_server():
    pkg = json.loads((EXT / "package.json").read_text())
    (lang,) = pkg["contributes"]["languages"]
    assert lang["extensions"] == [".ksim"] and lang["id"] == "ksim"
    assert pkg["contributes"]["grammars"][0]["scopeName"] == GRAMMAR["scopeName"]
    assert pkg["contributes"]["configuration"]["properties"]["ksimdsl.server.args"]["default"] == ["lsp"]
    assert "vscode-languageclient" in pkg["dependencies"]
    conf = json.loads((EXT / "language-configuration.json").read_text())
    assert conf["comments"]["lineComment"] == "#"


def test_textmate_grammar_tokenizes_shipped_tasks():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not all((EXT / "node_modules" / m).is_dir() for m in ("vscode-textmate", "vscode-oniguruma")):
        pytest.skip("editors/vscode/node_modules missing: run `npm install` in editors/vscode")
    proc = subprocess.run([node, "test/grammar.test.js"], cwd=EXT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok:")
