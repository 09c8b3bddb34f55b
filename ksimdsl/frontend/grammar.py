"""Loading the `.ksim` Lark grammar and building its LALR parser.

The grammar lives in one file, `grammar/ksim.lark` at the repository root. The
wheel ships it as `ksimdsl/_grammar/ksim.lark` (pyproject force-includes it);
an editable install reads it from the repository.

The parser is Lark's LALR(1) with the contextual lexer and `KsimIndenter`, a
post-lexer that turns indentation into `_INDENT`/`_DEDENT` tokens and ignores
line breaks inside brackets. Positions are propagated onto every tree node,
leaving out the layout tokens so that a statement's span ends at its last
visible character.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Iterator

from lark import Lark, Token
from lark.lark import PostLex

from ksimdsl.errors import InternalCompilerError, Span

__all__ = [
    "NL",
    "INDENT",
    "DEDENT",
    "LAYOUT_TOKENS",
    "STATEMENT_KEYWORDS",
    "UNITS",
    "DedentMismatch",
    "KsimIndenter",
    "grammar_path",
    "grammar_text",
    "get_parser",
    "terminal_display",
]

NL = "_NL"
INDENT = "_INDENT"
DEDENT = "_DEDENT"
LAYOUT_TOKENS = frozenset({NL, INDENT, DEDENT})

OPEN_BRACKETS = {"LPAR": "RPAR", "LSQB": "RSQB"}
CLOSE_BRACKETS = frozenset(OPEN_BRACKETS.values())

#: Words that start a top-level statement, in the order of the language spec.
STATEMENT_KEYWORDS: tuple[str, ...] = (
    "task",
    "model",
    "physics",
    "engine",
    "episode",
    "actuators",
    "let",
    "state",
    "command",
    "observe",
    "reward",
    "terminate",
    "metric",
    "randomize",
    "reset",
    "event",
    "reference",
    "curriculum",
    "policy",
    "train",
    "amp",
)

#: Unit suffixes a number may carry.
UNITS: tuple[str, ...] = ("deg", "ms", "m", "s", "steps")

_PACKAGE_GRAMMAR = ("_grammar", "ksim.lark")
_REPO_GRAMMAR = Path(__file__).resolve().parents[2] / "grammar" / "ksim.lark"


def grammar_path() -> Path:
    """The grammar file: the copy installed with the package, else the repository's."""
    packaged = resources.files("ksimdsl").joinpath(*_PACKAGE_GRAMMAR)
    if packaged.is_file():
        return Path(str(packaged))
    if _REPO_GRAMMAR.is_file():
        return _REPO_GRAMMAR
    raise InternalCompilerError(
        f"grammar file not found (looked for ksimdsl/{'/'.join(_PACKAGE_GRAMMAR)} and {_REPO_GRAMMAR})"
    )


def grammar_text() -> str:
    """The text of the grammar file."""
    return grammar_path().read_text(encoding="utf-8")


class DedentMismatch(Exception):
    """A line is dedented to a column that no enclosing block uses."""

    def __init__(self, span: Span, open_indents: tuple[int, ...]):
        super().__init__(f"dedent to column {span.end_col} at line {span.line}")
        self.span = span
        self.open_indents = open_indents  # indentation of every enclosing block, outermost first


class KsimIndenter(PostLex):
    """Turns `_NL` tokens into `_NL` + `_INDENT`/`_DEDENT` and drops `_NL` inside brackets.

    Unlike Lark's stock `Indenter`, all state lives in the generator of one
    `process` call (so a parser can be reused), a closing bracket with no
    opener is left for the parser to report, and an inconsistent dedent
    raises `DedentMismatch`. Tabs in indentation are rejected before lexing.
    """

    always_accept = (NL,)

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        indents = [0]
        depth = 0
        last: Token | None = None
        for token in stream:
            last = token
            if token.type == NL:
                if depth > 0:
                    continue
                yield token
                indent = len(token.value.rsplit("\n", 1)[1])
                line = token.end_line
                if indent > indents[-1]:
                    indents.append(indent)
                    yield _layout(INDENT, token, line, indent)
                    continue
                if indent not in indents:
                    raise DedentMismatch(Span(line, 1, line, indent + 1), tuple(indents))
                while indent < indents[-1]:
                    indents.pop()
                    yield _layout(DEDENT, token, line, indent)
                continue
            if token.type in OPEN_BRACKETS:
                depth += 1
            elif token.type in CLOSE_BRACKETS and depth > 0:
                depth -= 1
            yield token
        while len(indents) > 1:
            indents.pop()
            if last is None:
                yield Token(DEDENT, "", 0, 1, 1, 1, 1, 0)
            else:
                yield Token.new_borrow_pos(DEDENT, "", last)


def _layout(kind: str, nl: Token, line: int, indent: int) -> Token:
    """An `_INDENT`/`_DEDENT` token spanning the indentation of `line`."""
    start = (nl.end_pos or 0) - indent
    return Token(kind, " " * indent, start, line, 1, line, indent + 1, nl.end_pos)


def _is_layout(child: object) -> bool:
    return isinstance(child, Token) and child.type in LAYOUT_TOKENS


@functools.lru_cache(maxsize=1)
def get_parser() -> Lark:
    """The LALR parser for `.ksim` files (built once per process).

    Parse with `get_parser().parse_interactive(text)`: `ksimdsl.frontend.parse`
    drives it token by token so that syntax errors can be explained.
    """
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer="contextual",
        postlex=KsimIndenter(),
        propagate_positions=lambda child: not _is_layout(child),
        maybe_placeholders=True,
        start="start",
    )


@functools.lru_cache(maxsize=None)
def terminal_display(name: str) -> str:
    """How an expected terminal is named in a message: `':'`, `a name`, `end of line`, ..."""
    special = {
        "NAME": "a name",
        "NUMBER": "a number",
        "STRING": "a string",
        "COMPARE": "a comparison",
        NL: "end of line",
        INDENT: "an indented block",
        DEDENT: "end of block",
        "$END": "end of file",
    }
    if name in special:
        return special[name]
    try:
        pattern = get_parser().get_terminal(name).pattern
    except KeyError:
        return name
    if pattern.type == "str":
        return f"'{pattern.value}'"
    return name
