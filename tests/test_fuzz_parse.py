"""Fuzzing the parser: whatever the input, parse_source returns a Module or raises KsimError.

Inputs are random token soup and random mutations (deleting, duplicating,
swapping and inserting tokens or characters) of valid task files. Every
diagnostic must also point inside the file and format without error.
"""

from __future__ import annotations

import re
from pathlib import Path

from casefile import read_case_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ksimdsl.errors import KsimError, Source
from ksimdsl.frontend import ast
from ksimdsl.frontend.astdump import dump
from ksimdsl.frontend.grammar import STATEMENT_KEYWORDS
from ksimdsl.frontend.parse import parse_source

TESTS = Path(__file__).parent
VALID = [case.source + "\n" for case in read_case_file(TESTS / "golden" / "ast" / "cases.test").cases]
# Tokens, runs of whitespace and single other characters, so that joining gives back the text.
_TOKEN = re.compile(r'[A-Za-z_][A-Za-z0-9_]*|[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|"[^"\n]*"|#[^\n]*|\s+|.', re.S)

PIECES = [
    *STATEMENT_KEYWORDS,
    *"abc xyz 0 1 2.5 3e-4 10ms 3deg 1000 steps s ms".split(),
    *"( ) [ ] , . .. : = += *= -= ~ * + - / ^ < <= == != -> # @ ' \" and or not success bias delay history latency".split(),
    "gaussian(0.01)",
    "uniform(-1, 1)",
    '"*_knee*"',
    " ",
    "    ",
    "\n",
    "\n    ",
    "\n        ",
    "\t",
    "\r\n",
    "\x00",
    "\x0c",
    "é",
    "\u2028",
]

fuzz = settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_parses_or_reports(text: str) -> None:
    """The property under test: a Module, or a KsimError whose diagnostics point into the text."""
    source = Source("fuzz.ksim", text)
    try:
        module = parse_source(source)
    except KsimError as err:
        rendered = str(err)
        assert rendered.count("error:") >= 1
        n_lines = text.count("\n") + 1
        for diagnostic in err.diagnostics:
            if diagnostic.span is not None:
                assert 1 <= diagnostic.span.line <= n_lines, diagnostic.format()
                assert diagnostic.span.col >= 1, diagnostic.format()
        return
    assert isinstance(module, ast.Module)
    dump(module)  # every node the parser builds can be printed


@fuzz
@given(st.lists(st.sampled_from(PIECES), max_size=60).map("".join))
def test_token_soup(text: str) -> None:
    assert_parses_or_reports(text)


@st.composite
def token_mutations(draw: st.DrawFn) -> str:
    tokens = _TOKEN.findall(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(tokens) - 1))
        j = draw(st.integers(0, len(tokens) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "insert", "move"]))
        if op == "delete":
            del tokens[i]
        elif op == "duplicate":
            tokens.insert(i, tokens[i])
        elif op == "swap":
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif op == "insert":
            tokens.insert(i, draw(st.sampled_from(PIECES)))
        else:
            tokens.insert(j, tokens.pop(i))
        if not tokens:
            break
    return "".join(tokens)


@fuzz
@given(token_mutations())
def test_token_mutations_of_valid_files(text: str) -> None:
    assert_parses_or_reports(text)


@st.composite
def character_mutations(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(VALID))
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "insert"]))
        if op == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 8)) :]
        elif op == "duplicate":
            text = text[:i] + text[i : i + draw(st.integers(1, 20))] + text[i:]
        elif op == "swap" and i + 1 < len(text):
            text = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
        else:
            text = text[:i] + draw(st.characters(codec="utf-8")) + text[i:]
    return text


@fuzz
@given(character_mutations())
def test_character_mutations_of_valid_files(text: str) -> None:
    assert_parses_or_reports(text)


def test_mutation_inputs_are_not_all_trivially_broken() -> None:
    """The mutators start from files that parse, so fuzzing reaches deep into the grammar."""
    for text in VALID:
        parse_source(Source("valid.ksim", text))
