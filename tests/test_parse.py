"""The grammar and the parser front end (ksimdsl.frontend.parse).

Golden AST dumps live in tests/golden/ast/cases.test (`[case]` + source +
`[out]`); `pytest tests/test_parse.py --update-goldens` rewrites them.
"""

from __future__ import annotations

import tomllib
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
from casefile import DataCase, read_case_file, update_section

from ksimdsl.errors import MAX_ERRORS, KsimError, Source, Span
from ksimdsl.frontend import ast
from ksimdsl.frontend.astdump import dump, dump_expr
from ksimdsl.frontend.grammar import STATEMENT_KEYWORDS, grammar_path
from ksimdsl.frontend.parse import MAX_NESTING, parse_file, parse_source

TESTS = Path(__file__).parent
REPO = TESTS.parent
GOLDEN = TESTS / "golden" / "ast" / "cases.test"
SPEC_EXAMPLE = TESTS / "data" / "spec_example.ksim"
CASES = read_case_file(GOLDEN).cases


def parse(text: str, path: str = "main.ksim") -> ast.Module:
    return parse_source(Source(path, text))


def expr(text: str) -> str:
    """The S-expression of one expression, parsed as the value of a `let`."""
    (stmt,) = parse(f"let x = {text}\n").statements
    assert isinstance(stmt, ast.LetStmt)
    return dump_expr(stmt.value)


def error(text: str) -> KsimError:
    with pytest.raises(KsimError) as info:
        parse(text)
    return info.value


# --------------------------------------------------------------------------- golden dumps


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_ast(case: DataCase, update_goldens: bool) -> None:
    actual = dump(parse(case.source + "\n"))
    if update_goldens:
        update_section(GOLDEN, case.name, "out", actual)
        return
    expected = case.section("out")
    assert expected is not None, f"{GOLDEN}:{case.line}: case {case.name} has no [out] section"
    assert actual == expected, f"{GOLDEN}:{case.line}: AST dump of case {case.name} differs"


def test_spec_example_case_is_the_data_file() -> None:
    """tests/data/spec_example.ksim (used by other tests) is the golden spec example."""
    (case,) = [c for c in CASES if c.name == "spec_example"]
    assert SPEC_EXAMPLE.read_text().rstrip() == case.source


def test_spec_example_statements() -> None:
    module = parse_file(SPEC_EXAMPLE)
    kinds = [type(s).__name__ for s in module.statements]
    assert kinds == [
        "TaskStmt", "ModelStmt", "SettingsStmt", "EngineStmt", "EpisodeStmt", "ActuatorsStmt",
        "LetStmt", "LetStmt", "StateStmt", "CommandStmt", "ObserveStmt", "ObserveStmt",
        "RewardStmt", "TerminateStmt", "RandomizeStmt", "ResetStmt", "EventStmt",
        "CurriculumStmt", "PolicyStmt", "SettingsStmt",
    ]  # fmt: skip
    assert module.path == str(SPEC_EXAMPLE)
    train = module.statements[-1]
    assert isinstance(train, ast.SettingsStmt) and train.keyword == "train"
    assert [s.key for s in train.settings] == [
        "num_envs", "rollout", "epochs", "minibatches", "lr", "gamma",
        "lambda", "clip", "entropy", "value_coef", "max_grad_norm", "steps", "seed",
    ]  # fmt: skip
    rewards = next(s for s in module.statements if isinstance(s, ast.RewardStmt))
    assert [t.name for t in rewards.terms] == ["alive", "track_vel", "height", "ang_vel_xy", "action_rate", "air_time"]
    assert dump_expr(rewards.terms[-1].weight) == "(* 0.2 level)"
    terminate = next(s for s in module.statements if isinstance(s, ast.TerminateStmt))
    assert [(t.name, t.success) for t in terminate.terms] == [("fell", False), ("tilted", False), ("escaped", True)]
    critic = [s for s in module.statements if isinstance(s, ast.ObserveStmt)][1]
    assert critic.group == "critic" and critic.items[0] == ast.ObsInclude("actor", Span(36, 5, 36, 10))


# --------------------------------------------------------------------------- spans


def _nodes(node: object, parent: object | None = None):
    """Every AST node under `node` with its parent, depth first."""
    yield node, parent
    if isinstance(node, tuple):
        for item in node:
            yield from _nodes(item, parent)
    elif is_dataclass(node):
        for f in fields(node):
            value = getattr(node, f.name)
            if isinstance(value, tuple) or (is_dataclass(value) and not isinstance(value, Span)):
                yield from _nodes(value, node)


def _text(source: str, span: Span) -> str:
    lines = source.split("\n")
    if span.line == span.end_line:
        return lines[span.line - 1][span.col - 1 : span.end_col - 1]
    first = lines[span.line - 1][span.col - 1 :]
    middle = lines[span.line : span.end_line - 1]
    return "\n".join([first, *middle, lines[span.end_line - 1][: span.end_col - 1]])


def _inside(inner: Span, outer: Span) -> bool:
    return (outer.line, outer.col) <= (inner.line, inner.col) and (inner.end_line, inner.end_col) <= (
        outer.end_line,
        outer.end_col,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_spans_cover_their_text(case: DataCase) -> None:
    """Every span selects the text of its node, inside its parent's span."""
    source = case.source + "\n"
    module = parse(source)
    for node, parent in _nodes(module.statements):
        if not is_dataclass(node) or isinstance(node, Span):
            continue
        text = _text(source, node.span)
        assert text == text.strip() and text, f"{type(node).__name__} span {node.span} selects {text!r}"
        if parent is not None and hasattr(parent, "span"):
            assert _inside(node.span, parent.span), f"{node} outside {parent}"
        if isinstance(node, ast.Name):
            assert text == node.id
        elif isinstance(node, ast.Str):
            assert text == f'"{node.value}"'
        elif isinstance(node, ast.Num):
            assert text.replace(" ", "").endswith(node.unit or "") and text[0].isdigit()
        elif isinstance(node, ast.Call):
            assert _text(source, node.func_span) == node.func and text.endswith(")")
        elif isinstance(node, ast.Attr):
            assert _text(source, node.name_span) == node.name
        elif isinstance(node, ast.Vector):
            assert text.startswith("[") and text.endswith("]")
        elif isinstance(node, (ast.Index,)):
            assert text.endswith("]")
        for name in ("name", "key", "kind", "group", "engine"):
            own = getattr(node, f"{name}_span", None)
            if own is not None:
                assert _text(source, own) == getattr(node, name)
        if isinstance(node, ast.ModelStmt):
            assert _text(source, node.path_span) == f'"{node.path}"'


def test_statement_span_ends_at_last_visible_character() -> None:
    module = parse("reward\n    alive 1.0 : 1   # comment\n\n    track 2 : x\n\n# trailing\n")
    (stmt,) = module.statements
    assert stmt.span == Span(1, 1, 4, 16)
    assert [t.span for t in stmt.terms] == [Span(2, 5, 2, 18), Span(4, 5, 4, 16)]


# --------------------------------------------------------------------------- expressions


@pytest.mark.parametrize(
    ("text", "sexpr"),
    [
        ("1 + 2 * 3", "(+ 1 (* 2 3))"),
        ("1 - 2 - 3", "(- (- 1 2) 3)"),
        ("8 / 4 * 2", "(* (/ 8 4) 2)"),
        ("2 ^ 3 ^ 2", "(^ 2 (^ 3 2))"),
        ("-x ^ 2", "(- (^ x 2))"),
        ("2 ^ -x", "(^ 2 (- x))"),
        ("-a * b", "(* (- a) b)"),
        ("a + b < c * d", "(< (+ a b) (* c d))"),
        ("not a < b", "(not (< a b))"),
        ("not a and b or c", "(or (and (not a) b) c)"),
        ("a or b and c", "(or a (and b c))"),
        ("a == b or c != d", "(or (== a b) (!= c d))"),
        ("x.y ^ 2", "(^ (. x y) 2)"),
        ("f(x)[0].y", "(. ([] (f x) 0) y)"),
        ("(a + b) * c", "(* (+ a b) c)"),
        ("a - -b", "(- a (- b))"),
    ],
)
def test_precedence(text: str, sexpr: str) -> None:
    assert expr(text) == sexpr


@pytest.mark.parametrize(
    ("text", "value", "unit", "is_int"),
    [
        ("10ms", 10.0, "ms", True),
        ("10 ms", 10.0, "ms", True),
        ("3deg", 3.0, "deg", True),
        ("1000 steps", 1000.0, "steps", True),
        ("5steps", 5.0, "steps", True),
        ("0.5s", 0.5, "s", False),
        ("3e-4", 3e-4, None, False),
        ("2.5E2", 250.0, None, False),
        ("7", 7.0, None, True),
    ],
)
def test_numbers_and_units(text: str, value: float, unit: str | None, is_int: bool) -> None:
    (stmt,) = parse(f"let x = {text}\n").statements
    num = stmt.value
    assert isinstance(num, ast.Num)
    assert (num.value, num.unit, num.is_int) == (value, unit, is_int)


def test_range_does_not_swallow_dots() -> None:
    (stmt,) = parse("actuators position\n    latency 0..10ms\n").statements
    latency = stmt.latency.range
    assert (latency.lo.value, latency.lo.unit, latency.hi.value, latency.hi.unit) == (0.0, None, 10.0, "ms")
    (stmt,) = parse("observe actor\n    a = x delay 0.5..1.5\n").statements
    assert dump_expr(stmt.items[0].delay) == "(.. 0.5 1.5)"


def test_setting_named_like_a_unit_is_not_a_unit() -> None:
    (stmt,) = parse("train rollout=24 steps=1000 s=2 ms=3\n").statements
    assert [(s.key, dump_expr(s.value)) for s in stmt.settings] == [
        ("rollout", "24"),
        ("steps", "1000"),
        ("s", "2"),
        ("ms", "3"),
    ]


def test_slices_on_both_sides_of_assignments() -> None:
    (stmt,) = parse("reset\n    qpos[1:4] = qvel[:3]\n    qvel[2:] += qpos[:]\n").statements
    first, second = stmt.assigns
    assert dump_expr(first.target) == "([] qpos (: 1 4))" and dump_expr(first.value) == "([] qvel (: _ 3))"
    assert dump_expr(second.target) == "([] qvel (: 2 _))" and dump_expr(second.value) == "([] qpos (: _ _))"


def test_keyword_arguments() -> None:
    (stmt,) = parse("let x = tolerance(h, lo=1.2, hi=2, sigmoid=long_tail)\n").statements
    call = stmt.value
    assert call.func == "tolerance" and dump_expr(call.args[0]) == "h"
    assert [(k.name, dump_expr(k.value)) for k in call.kwargs] == [("lo", "1.2"), ("hi", "2"), ("sigmoid", "long_tail")]


def test_multiplicative_noise_is_not_multiplication() -> None:
    (stmt,) = parse("observe actor\n    a = x * 2 ~ gaussian(0.1) * bias gaussian(0.2) delay 0..2\n").statements
    (item,) = stmt.items
    assert dump_expr(item.value) == "(* x 2)"
    assert item.noise.multiplicative and dump_expr(item.noise.dist) == "(gaussian 0.1)"
    assert dump_expr(item.bias) == "(gaussian 0.2)" and dump_expr(item.delay) == "(.. 0 2)"


# --------------------------------------------------------------------------- keywords as names


def test_keywords_are_names_where_a_name_is_expected() -> None:
    module = parse(
        "observe actor\n"
        "    command = cmd.vel\n"
        "    reward = reward\n"
        "observe critic\n"
        "    actor\n"
        "    feet = feet\n"
        "reward\n"
        "    height 0.5 : height\n"
        "    success 1 : success\n"
        "terminate\n"
        "    success : success success\n"
        "let model = task + observe\n"
        "curriculum linear step=0.01 every=100\n"
    )
    actor, critic, reward, terminate, let, curriculum = module.statements
    assert [(i.name, dump_expr(i.value)) for i in actor.items] == [("command", "(. cmd vel)"), ("reward", "reward")]
    assert isinstance(critic.items[0], ast.ObsInclude) and critic.items[1].name == "feet"
    assert [(t.name, dump_expr(t.value)) for t in reward.terms] == [("height", "height"), ("success", "success")]
    (term,) = terminate.terms
    assert (term.name, dump_expr(term.cond), term.success) == ("success", "success", True)
    assert (let.name, dump_expr(let.value)) == ("model", "(+ task observe)")
    assert [s.key for s in curriculum.settings] == ["step", "every"]


# --------------------------------------------------------------------------- layout


def test_blank_lines_comments_and_missing_final_newline() -> None:
    text = "\n\n# c\ntask walk # c\n\nreward\n\n    # c\n    a 1 : 1\n\n        # deeper comment\n    b 1 : 2 # c"
    task, reward = parse(text).statements
    assert task.name == "walk" and [t.name for t in reward.terms] == ["a", "b"]


def test_crlf_line_endings() -> None:
    module = parse("task walk\r\nreward\r\n    a 1 : 1\r\n    b 2 : 2\r\n")
    assert dump(module) == dump(parse("task walk\nreward\n    a 1 : 1\n    b 2 : 2\n"))


def test_byte_order_mark_is_ignored() -> None:
    (task,) = parse("\ufefftask walk\n").statements
    assert task.name == "walk" and task.span == Span(1, 1, 1, 10)


def test_brackets_may_span_lines_even_at_column_zero() -> None:
    (stmt,) = parse("let v = [1,\n2,\n    3]\n").statements
    assert dump_expr(stmt.value) == "[1 2 3]"


def test_comments_only_file_is_an_empty_module() -> None:
    assert parse("# nothing here\n").statements == ()


# --------------------------------------------------------------------------- errors


def test_several_unknown_statements_are_all_reported() -> None:
    err = error("task walk\nrewrad\n    a 1 : 1\nterminat\n    x : 1\nmodel \"m.xml\"\nobserv actor\n")
    messages = [(d.span.line, d.message) for d in err.diagnostics]
    assert messages == [
        (2, "unknown statement 'rewrad' (did you mean 'reward'?)"),
        (4, "unknown statement 'terminat' (did you mean 'terminate'?)"),
        (7, "unknown statement 'observ' (did you mean 'observe'?)"),
    ]


def test_independent_errors_in_one_file() -> None:
    err = error("let a = (1 +\nlet b = 2\nreward\n    x 1 1\nlet c = 10degs\n")
    assert [(d.span.line, d.message) for d in err.diagnostics] == [
        (1, "'(' was never closed"),
        (4, "expected ':' after reward weight, found number '1'"),
        (5, "unknown unit 'degs' (did you mean 'deg'?)"),
    ]


def test_error_count_is_capped() -> None:
    err = error("".join(f"bad{i} statement\n" for i in range(MAX_ERRORS + 10)))
    assert len(err.diagnostics) == MAX_ERRORS + 1
    assert err.diagnostics[-1].severity == "note" and "too many errors" in err.diagnostics[-1].message


def test_too_deep_nesting_is_an_error() -> None:
    err = error("let x = " + "-" * (MAX_NESTING + 10) + "1\n")
    assert "nested too deeply" in err.first.message
    assert expr("-" * (MAX_NESTING // 2) + "1").startswith("(- (- ")


def test_empty_source_is_an_error() -> None:
    err = error("  \n\n")
    assert err.first.message.startswith("empty task file") and err.first.span is None


def test_parse_file_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.ksim"
    path.write_bytes(b"")
    with pytest.raises(KsimError) as info:
        parse_file(path)
    assert str(info.value).startswith(f"{path}: error: empty task file")


def test_parse_file_binary(tmp_path: Path) -> None:
    path = tmp_path / "bin.ksim"
    path.write_bytes(b"task walk\nmodel \x00\x01\x02")
    with pytest.raises(KsimError) as info:
        parse_file(path)
    assert info.value.first.message == "binary file: NUL byte in a task file"
    assert info.value.first.span == Span(2, 7, 2, 8)
    assert str(info.value).startswith(f"{path}:2:7: error: binary file")


def test_parse_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.ksim"
    path.write_bytes("task walk\nlet x = \"é\" # ü\n".encode("latin-1"))
    with pytest.raises(KsimError) as info:
        parse_file(path)
    assert info.value.first.message == "invalid UTF-8 byte 0xe9; task files must be UTF-8 text"
    assert info.value.first.span == Span(2, 10, 2, 11)


def test_parse_file_missing(tmp_path: Path) -> None:
    with pytest.raises(KsimError) as info:
        parse_file(tmp_path / "missing.ksim")
    assert str(info.value) == f"{tmp_path / 'missing.ksim'}: error: no such file"
    with pytest.raises(KsimError) as info:
        parse_file(tmp_path)
    assert str(info.value) == f"{tmp_path}: error: is a directory, not a task file"


def test_parse_file_reads_utf8(tmp_path: Path) -> None:
    path = tmp_path / "ok.ksim"
    path.write_text('task walk "läuft vorwärts"\n', encoding="utf-8")
    (task,) = parse_file(path).statements
    assert task.doc == "läuft vorwärts"


def test_tab_in_indentation_points_at_the_tab() -> None:
    err = error("reward\n  \talive 1 : 1\n\ttrack 1 : 1\n")
    assert [(d.span, d.message) for d in err.diagnostics] == [
        (Span(2, 3, 2, 4), "tab in indentation; indent with spaces"),
        (Span(3, 1, 3, 2), "tab in indentation; indent with spaces"),
    ]


@pytest.mark.parametrize("char", ["\x0c", "\x1b", "\r", "\u2028", "\x85"])
def test_control_characters_are_errors(char: str) -> None:
    err = error(f"task walk\nlet x = 1 {char}+ 2\n")
    assert err.first.span == Span(2, 11, 2, 12)
    assert err.first.message == f"unexpected control character U+{ord(char):04X} in a task file"


def test_tabs_between_tokens_are_whitespace() -> None:
    (stmt,) = parse("let\tx =\t1\n").statements
    assert stmt.name == "x"


# --------------------------------------------------------------------------- grammar file


def test_grammar_is_the_repository_file_in_an_editable_install() -> None:
    path = grammar_path()
    assert path.name == "ksim.lark"
    assert path.read_text() == (REPO / "grammar" / "ksim.lark").read_text()


def test_wheel_ships_the_grammar_where_the_loader_looks() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert include["grammar/ksim.lark"] == "ksimdsl/_grammar/ksim.lark"


def test_every_statement_keyword_starts_a_statement() -> None:
    grammar = (REPO / "grammar" / "ksim.lark").read_text()
    for keyword in STATEMENT_KEYWORDS:
        assert f'"{keyword}"' in grammar, keyword


# --------------------------------------------------------------------------- long chains and large files (issue 18)


def _depth(e: ast.Expr) -> int:
    """Depth of an expression tree (iterative)."""
    deepest, stack = 0, [(e, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if isinstance(node, ast.Binary):
            stack += [(node.left, d + 1), (node.right, d + 1)]
        elif isinstance(node, ast.Unary):
            stack.append((node.operand, d + 1))
    return deepest


def _leaves(e: ast.Expr) -> list[str]:
    """The operands of a chain, left to right, as written."""
    out, stack = [], [e]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Binary):
            stack += [node.right, node.left]
        else:
            out.append(dump_expr(node))
    return out


def _evaluate(e: ast.Expr) -> float:
    if isinstance(e, ast.Num):
        return e.value
    assert isinstance(e, ast.Binary)
    a, b = _evaluate(e.left), _evaluate(e.right)
    ops = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b}
    return ops[e.op]()


@pytest.mark.parametrize("ops", ["+", "+-", "*", "*/"])
def test_long_flat_chains_are_balanced_with_their_value(ops: str) -> None:
    n = 999
    terms = [str(i % 3 * 0.5 + 0.5) for i in range(n)]  # products stay within float range
    text = terms[0] + "".join(f" {ops[i % len(ops)]} {t}" for i, t in enumerate(terms[1:]))
    (stmt,) = parse(f"let x = {text}\n").statements
    value = stmt.value  # type: ignore[attr-defined]
    assert _depth(value) <= 12  # log2(999) + 1, not 999
    assert _leaves(value) == terms
    assert _evaluate(value) == pytest.approx(eval(text))  # noqa: S307 - our own arithmetic
    assert value.span == Span(1, 9, 1, 9 + len(text))


def test_short_chains_keep_the_grammar_shape() -> None:
    assert expr("a - b - c + d") == expr("((a - b) - c) + d")
    assert _depth(parse("let x = " + " and ".join(["a"] * 16) + "\n").statements[0].value) == 16  # type: ignore[attr-defined]




def test_line_numbers_of_a_late_error() -> None:
    err = error("".join(f"let a{i} = {i}\n" for i in range(3000)) + "let bad = 1 +\n")
    assert err.first.span is not None and err.first.span.line == 3001
    module = parse("".join(f"let a{i} = {i}\n" for i in range(3000)) + "reward\n    r 1 : (1 +\n        2)\n")
    assert module.statements[-2].value.span == Span(3000, 13, 3000, 17)  # type: ignore[attr-defined]
    value = module.statements[-1].terms[0].value  # type: ignore[attr-defined]
    assert (value.span.line, value.span.end_line, value.right.span) == (3002, 3003, Span(3003, 9, 3003, 10))
