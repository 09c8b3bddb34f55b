"""The parser front end: `.ksim` text -> `ksimdsl.frontend.ast.Module`.

    module = parse_file("tasks/walk.ksim")
    module = parse_source(Source("walk.ksim", text))

Both raise `KsimError` -- and nothing else -- for any bad input, with every
diagnostic formatted as `FILE:LINE:COL: error: MESSAGE`, the line and a caret.

How it works:

1. The text is screened for characters the grammar never accepts in any
   position that could confuse the line structure (NUL, control characters,
   tabs in indentation).
2. It is cut into top-level statements: a statement starts at every line that
   begins in column 0 outside brackets, and runs over the indented (or
   bracketed) lines that follow it. Each statement is parsed on its own with
   the LALR parser of `ksimdsl.frontend.grammar`, so one file reports one
   syntax error per broken statement (up to `errors.MAX_ERRORS`) and the other
   statements still parse.
3. Lark's errors are turned into messages a user can act on (`unknown
   statement 'rewrad' (did you mean 'reward'?)`, `expected ':' after reward
   weight`, `'(' was never closed`, ...).
4. `ksimdsl.frontend.astbuild` balances long chains of `+`/`*`/`and`/`or`,
   bounds the nesting depth and turns each Lark tree into the frozen AST dataclasses, with
   1-based spans whose end column is exclusive.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from ksimdsl.errors import Diagnostic, DiagnosticSink, KsimError, Source, Span, did_you_mean
from ksimdsl.frontend import ast
from ksimdsl.frontend.astbuild import MAX_NESTING, build_statements, token_span
from ksimdsl.frontend.grammar import (
    DEDENT,
    INDENT,
    LAYOUT_TOKENS,
    NL,
    STATEMENT_KEYWORDS,
    UNITS,
    DedentMismatch,
    get_parser,
    terminal_display,
)

__all__ = ["parse_source", "parse_file", "read_source", "MAX_NESTING"]

_EXPRESSION_STARTS = frozenset({"NAME", "NUMBER", "STRING", "LPAR", "LSQB", "MINUS", "NOT"})
_OPERATORS = frozenset({"OR", "AND", "COMPARE", "PLUS", "MINUS", "STAR", "SLASH", "POW", "DOT", "LSQB", "LPAR"})
_OPENERS = {"LPAR": "RPAR", "LSQB": "RSQB"}
_CLOSERS = {"RPAR": "LPAR", "RSQB": "LSQB"}
#: Control characters (but tab, line feed and the CR of CRLF) and the Unicode line
#: separators: never valid, and `str.splitlines` would count some as line breaks.
_BAD_CHARACTER = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]|\r(?!\n)")


# --------------------------------------------------------------------------- public API


def read_source(path: str | os.PathLike[str]) -> Source:
    """A task file's text; a KsimError if it is missing, a directory, binary or not UTF-8."""
    name = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise _file_error(name, "no such file") from None
    except IsADirectoryError:
        raise _file_error(name, "is a directory, not a task file") from None
    except OSError as exc:
        raise _file_error(name, f"cannot read file ({exc.strerror or exc})") from None
    return Source(name, _decode(name, data))


def parse_file(path: str | os.PathLike[str]) -> ast.Module:
    """Read and parse a task file. The file must be UTF-8 text."""
    return parse_source(read_source(path))


def parse_source(source: Source) -> ast.Module:
    """Parse the text of one task file into its `Module`.

    Raises `KsimError` with one diagnostic per broken statement (at most
    `errors.MAX_ERRORS`).
    """
    text = source.text
    if text.startswith("\ufeff"):
        text = text[1:]
        source = Source(source.path, text)
    if not text.strip():
        raise _file_error(source.path, _EMPTY_FILE)
    _screen_characters(source)

    sink = DiagnosticSink(source)
    statements: list[ast.Statement] = []
    for chunk in _split_statements(text.replace("\r\n", "\n")):
        try:
            statements.extend(_parse_chunk(chunk, source))
        except KsimError as err:
            sink.extend(err)
    sink.raise_if_any()
    return ast.Module(tuple(statements), source.path)


# --------------------------------------------------------------------------- decoding and screening


_EMPTY_FILE = "empty task file (expected at least 'task' and 'model' statements)"


def _file_error(name: str, message: str) -> KsimError:
    """`NAME: error: MESSAGE`, for a problem with the file as a whole."""
    return KsimError(Diagnostic(message, None, Source(name, "")))


def _decode(name: str, data: bytes) -> str:
    """UTF-8 text of a task file, or a `KsimError` for a binary or mis-encoded file."""
    if not data.strip():
        raise _file_error(name, _EMPTY_FILE)
    nul = data.find(b"\x00")
    if nul >= 0:
        shown = Source(name, data.decode("utf-8", errors="replace").replace("\x00", " "))
        raise KsimError.at(shown, _span_at(data, nul), "binary file: NUL byte in a task file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        shown = Source(name, data.decode("utf-8", errors="replace"))
        bad = data[exc.start : exc.end]
        raise KsimError.at(
            shown,
            _span_at(data, exc.start),
            f"invalid UTF-8 byte 0x{bad[0]:02x}; task files must be UTF-8 text",
        ) from None


def _span_at(data: bytes, offset: int) -> Span:
    """The span of the character at byte `offset` of `data`."""
    before = data[:offset]
    line = before.count(b"\n") + 1
    line_start = before.rfind(b"\n") + 1
    col = len(before[line_start:].decode("utf-8", errors="replace")) + 1
    return Span.point(line, col)


def _screen_characters(source: Source) -> None:
    """Reject control characters and tabs in indentation, with their positions."""
    bad = _BAD_CHARACTER.search(source.text)
    if bad is not None:
        char = bad.group()
        line = source.text.count("\n", 0, bad.start()) + 1
        col = bad.start() - (source.text.rfind("\n", 0, bad.start()) + 1) + 1
        what = "NUL byte" if char == "\0" else f"control character U+{ord(char):04X}"
        # Show the line with the character blanked out: it could garble the display.
        shown = Source(source.path, source.text.replace(char, " "))
        raise KsimError.at(shown, Span.point(line, col), f"unexpected {what} in a task file")
    sink = DiagnosticSink(source)
    for lineno, line in enumerate(source.text.split("\n"), start=1):
        code = line.lstrip(" \t")
        if "\t" in line[: len(line) - len(code)] and code.strip() and not code.startswith("#"):
            sink.error(Span.point(lineno, line.index("\t") + 1), "tab in indentation; indent with spaces")
    sink.raise_if_any()


# --------------------------------------------------------------------------- statements


@dataclass(frozen=True)
class _Chunk:
    """One top-level statement: its first line (1-based) and its lines."""

    first_line: int
    lines: tuple[str, ...]

    @property
    def indent(self) -> int:
        first = self.lines[0]
        return len(first) - len(first.lstrip(" "))

    def text(self) -> str:
        """The statement's text; Lark numbers its lines from 1 (`first_line - 1` less than the file's)."""
        return "\n".join(self.lines) + "\n"


#: A line that can only be a statement: a statement keyword followed by a name
#: or string. Two operands side by side are never an expression, so such a line
#: starts a new statement even inside an unclosed bracket.
_STATEMENT_LINE = re.compile(r"(?:%s) +(?!(?:and|or|not)\b)[A-Za-z_\"]" % "|".join(STATEMENT_KEYWORDS))


def _split_statements(text: str) -> list[_Chunk]:
    """Cut the file at every line that starts in column 0 outside brackets.

    A line that starts like a statement (`let x`, `model "..."`) also cuts
    inside brackets, so that an unclosed bracket costs one statement, not the
    rest of the file.
    """
    chunks: list[_Chunk] = []
    current: list[str] = []
    first_line = 0
    depth = 0
    for lineno, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        content = bool(stripped) and not stripped.startswith("#")
        if depth > 0 and _STATEMENT_LINE.match(line):
            depth = 0
        if content and depth == 0 and (not line[0].isspace() or not current):
            if current:
                chunks.append(_Chunk(first_line, tuple(current)))
            current, first_line = [], lineno
        if current or content:
            current.append(line)
        depth = _bracket_depth(line, depth)
    if current:
        chunks.append(_Chunk(first_line, tuple(current)))
    return chunks


def _bracket_depth(line: str, depth: int) -> int:
    """Bracket nesting after `line`, ignoring strings and comments (never below 0)."""
    in_string = False
    for char in line:
        if in_string:
            in_string = char != '"'
        elif char == '"':
            in_string = True
        elif char == "#":
            break
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth = max(0, depth - 1)
    return depth


def _parse_chunk(chunk: _Chunk, source: Source) -> list[ast.Statement]:
    if chunk.indent:
        span = Span(chunk.first_line, 1, chunk.first_line, chunk.indent + 1)
        raise KsimError.at(source, span, "unexpected indent")
    parser = get_parser().parse_interactive(chunk.text())
    offset = chunk.first_line - 1
    history: list[Token] = []
    try:
        for token in parser.iter_parse():
            history.append(token)
        tree = parser.feed_eof(history[-1] if history else None)
    except UnexpectedToken as err:
        _shift_tokens([*history, err.token], offset)
        raise KsimError(_explain_token(err, parser.accepts(), history, source)) from None
    except UnexpectedCharacters as err:
        err.line += offset
        raise KsimError(_explain_character(err, source)) from None
    except UnexpectedInput as err:  # pragma: no cover - LALR raises only the two above
        span = Span.point(max(1, err.line + offset), max(1, err.column))
        raise KsimError.at(source, span, "syntax error") from None
    except DedentMismatch as err:
        line = err.span.line + offset
        raise KsimError.at(
            source,
            Span(line, err.span.col, line, err.span.end_col),
            "unindent does not match any outer indentation level",
            "the enclosing blocks are indented by " + _join([str(n) for n in err.open_indents]) + " spaces",
        ) from None
    _shift_tree(tree, offset)
    return build_statements(tree, source)


def _shift_tokens(tokens: Iterable[Token], offset: int) -> None:
    """Renumber tokens from chunk lines to file lines (each token once)."""
    seen: set[int] = set()
    for token in tokens:
        if id(token) in seen or not offset:
            continue
        seen.add(id(token))
        if token.line is not None:
            token.line += offset
        if token.end_line is not None:
            token.end_line += offset


def _shift_tree(tree: Tree, offset: int) -> None:
    """Renumber a parsed chunk's positions (node metas and tokens) from chunk lines to file lines."""
    if not offset:
        return
    stack = [tree]
    tokens: list[Token] = []
    while stack:
        node = stack.pop()
        meta = node.meta
        if not meta.empty:
            meta.line += offset
            meta.end_line += offset
        for child in node.children:
            if isinstance(child, Tree):
                stack.append(child)
            elif isinstance(child, Token):
                tokens.append(child)
    _shift_tokens(tokens, offset)


# --------------------------------------------------------------------------- error messages


def _describe(token: Token) -> str:
    """How the offending token is named in a message."""
    if token.type == "$END":
        return "end of file"
    if token.type == NL:
        return "end of line"
    if token.type == DEDENT:
        return "end of block"
    if token.type == INDENT:
        return "indent"
    if token.type == "NAME":
        return f"name '{token.value}'"
    if token.type == "NUMBER":
        return f"number '{token.value}'"
    if token.type == "STRING":
        return f"string {token.value}"
    return f"'{token.value}'"


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _describe_expected(expected: Iterable[str]) -> str:
    """`':', end of line or an operator`: what the parser would have accepted."""
    names = set(expected)
    if len(names) > 1:
        names.discard(DEDENT)
    tail: list[str] = []
    if {"NAME", "NUMBER", "STRING"} <= names:
        names -= _EXPRESSION_STARTS
        head_extra = ["an expression"]
    else:
        head_extra = []
    if len(names & _OPERATORS) >= 2:
        names -= _OPERATORS
        tail.append("an operator")
    if NL in names:
        names.discard(NL)
        tail.insert(0, "end of line")
    shown = sorted({terminal_display(name) for name in names})
    return _join(shown + head_extra + tail) if shown or head_extra or tail else "something else"


@dataclass(frozen=True)
class _Stuck:
    """Where the parser stopped: the offending token and what came before it."""

    token: Token
    expected: frozenset[str]  # terminals the parser would have accepted
    before: tuple[Token, ...]  # every token read before `token`, layout included
    source: Source

    @property
    def visible(self) -> tuple[Token, ...]:
        return tuple(t for t in self.before if t.type not in LAYOUT_TOKENS)

    @property
    def line(self) -> tuple[Token, ...]:
        """The visible tokens of the current line, before `token`."""
        line: list[Token] = []
        for t in self.before:
            line = [] if t.type in LAYOUT_TOKENS else [*line, t]
        return tuple(line)

    @property
    def keyword(self) -> str:
        """The statement keyword (`reward`, `let`, ...)."""
        return self.visible[0].value

    @property
    def in_block(self) -> bool:
        return sum(t.type == INDENT for t in self.before) > sum(t.type == DEDENT for t in self.before)

    @property
    def found(self) -> str:
        return _describe(self.token)

    @property
    def span(self) -> Span:
        """The token's span; for a line break or end of file, just after the last visible token."""
        visible = self.visible
        if self.token.type in ("$END", NL, DEDENT) and visible:
            last = visible[-1]
            return Span.point(last.end_line or last.line, last.end_column or last.column + 1)
        return token_span(self.token)

    def error(self, message: str, span: Span | None = None, *notes: str) -> Diagnostic:
        return Diagnostic(message, span or self.span, self.source, notes=tuple(notes))


def _explain_token(err: UnexpectedToken, expected: set[str], history: list[Token], source: Source) -> Diagnostic:
    """Turn Lark's `UnexpectedToken` into a message about the task file.

    `expected` holds the terminals the parser accepts where it stopped;
    `history` the tokens it had read. The first explanation that applies wins.
    """
    stuck = _Stuck(err.token, frozenset(expected), tuple(t for t in history if t is not err.token), source)
    if stuck.token.type == INDENT:
        return stuck.error("unexpected indent")
    if not stuck.visible:
        return _explain_statement_start(stuck)
    for explain in (_explain_brackets, _explain_unit, _explain_in_context):
        diagnostic = explain(stuck)
        if diagnostic is not None:
            return diagnostic
    if stuck.token.type in (NL, "$END", DEDENT) and {"NAME", "NUMBER", "STRING"} <= stuck.expected:
        return stuck.error(f"expected an expression, found {stuck.found}")
    return stuck.error(f"unexpected {stuck.found}; expected {_describe_expected(stuck.expected)}")


def _explain_statement_start(stuck: _Stuck) -> Diagnostic:
    value = str(stuck.token.value)
    if stuck.token.type == "NAME" or value.isidentifier():
        return stuck.error(
            f"unknown statement '{value}'{did_you_mean(value, STATEMENT_KEYWORDS)}",
            None,
            "a statement starts with one of: " + ", ".join(STATEMENT_KEYWORDS),
        )
    return stuck.error(f"expected a statement, found {stuck.found}")


def _explain_brackets(stuck: _Stuck) -> Diagnostic | None:
    """A bracket never closed, closed by the wrong kind, or closing nothing."""
    token = stuck.token
    open_stack: list[Token] = []
    for t in stuck.before:
        if t.type in _OPENERS:
            open_stack.append(t)
        elif t.type in _CLOSERS and open_stack:
            open_stack.pop()
    if open_stack and (token.type in ("$END", DEDENT) or (token.column == 1 and token.line > open_stack[-1].line)):
        opener = open_stack[-1]
        return stuck.error(f"'{opener.value}' was never closed", token_span(opener))
    if token.type in _CLOSERS:
        if not open_stack:
            return stuck.error(f"unmatched '{token.value}'")
        opener = open_stack[-1]
        if _OPENERS[opener.type] != token.type:
            return stuck.error(
                f"closing '{token.value}' does not match '{opener.value}' "
                f"opened at line {opener.line} column {opener.column}"
            )
    return None


def _explain_unit(stuck: _Stuck) -> Diagnostic | None:
    """A name glued to a number (`20km`) is a misspelt unit, even when the
    parser only notices later (`dt=4msec` reads `msec` as the next setting)."""
    visible = stuck.visible
    pairs = [(stuck.token, visible[-1])]
    if len(visible) > 1:
        pairs.append((visible[-1], visible[-2]))
    for name, number in pairs:
        if (
            number.type == "NUMBER"
            and name.type == "NAME"
            and (name.line, name.column) == (number.end_line, number.end_column)
        ):
            return stuck.error(
                f"unknown unit '{name.value}'{did_you_mean(name.value, UNITS)}",
                token_span(name),
                "units are " + ", ".join(UNITS),
            )
    return None


def _explain_in_context(stuck: _Stuck) -> Diagnostic | None:
    """Messages that depend on the statement and on the tokens of the line so far."""
    token, expected, found, keyword = stuck.token, stuck.expected, stuck.found, stuck.keyword
    previous = stuck.visible[-1]
    line = stuck.line
    if token.type == "COMPARE" and "COMPARE" not in expected and previous.type != "COMPARE":
        return stuck.error("comparisons do not chain; write `a < b and b < c`")
    if expected == {INDENT}:
        return stuck.error(f"expected an indented block after '{keyword}'")
    if keyword == "model" and expected == {"STRING"}:
        return stuck.error(f"expected the model path as a quoted string, found {found}")
    if keyword == "reference" and expected == {"STRING"}:
        return stuck.error(f"expected the clip path as a quoted string (reference \"clips/walk.npz\"), found {found}")
    if "PLUS_EQUAL" in expected and token.value in ("-", "/"):
        if stuck.source.line_text(token.line)[token.column : token.column + 1] == "=":
            return stuck.error(
                f"unknown assignment operator '{token.value}='; use '=', '+=' or '*='",
                Span.point(token.line, token.column, 2),
            )
    if previous.type in ("TILDE", "BIAS", "ZERO_OFFSET") and "NAME" in expected:
        return stuck.error(
            f"expected a distribution call such as gaussian(0.01) after '{previous.value}', found {found}"
        )
    if keyword == "command" and not stuck.in_block and previous.type == "NAME" and previous.value == "every":
        return stuck.error(
            "expected 'resample every INTERVAL' (for example `resample every 5s`)", token_span(previous)
        )
    if stuck.in_block and keyword == "reward":
        if len(line) == 1 and token.type == "COLON":
            return stuck.error(f"reward term '{line[0].value}' has no weight (write `{line[0].value} WEIGHT : EXPR`)")
        if len(line) >= 2 and "COLON" in expected:
            return stuck.error(f"expected ':' after reward weight, found {found}")
    if stuck.in_block and keyword == "terminate" and len(line) == 1 and "COLON" in expected:
        return stuck.error(f"expected ':' after termination name '{line[0].value}', found {found}")
    if stuck.in_block and keyword == "observe" and len(line) == 1 and "EQUAL" in expected:
        return stuck.error(f"expected '=' after observation name '{line[0].value}', found {found}")
    if stuck.in_block and keyword == "metric" and len(line) == 1 and "EQUAL" in expected:
        return stuck.error(f"expected '=' after metric name '{line[0].value}', found {found}")
    if expected == {"EQUAL"} and previous.type == "NAME":
        return stuck.error(f"expected '=' after '{previous.value}', found {found}")
    ranged = [t.value for t in line if t.type in ("LATENCY", "DELAY")]
    if "RANGE" in expected and ranged:
        return stuck.error(f"expected a range such as 0..10ms after '{ranged[-1]}', found {found}")
    return None


def _explain_character(err: UnexpectedCharacters, source: Source) -> Diagnostic:
    """A character that starts no token at all."""
    char = err.char
    line, col = err.line, err.column
    if char == '"':
        width = len(source.line_text(line)) - col + 1
        message = "unterminated string (a string must end on the line it starts)"
        return Diagnostic(message, Span.point(line, col, width), source)
    if char == "'":
        message = "unexpected character \"'\"; strings use double quotes"
    elif not char.isascii():
        message = f"unexpected character '{char}' (U+{ord(char):04X}); names and operators are ASCII"
    else:
        message = f"unexpected character '{char}'"
    return Diagnostic(message, Span.point(line, col), source)
