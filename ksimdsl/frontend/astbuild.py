"""Lark tree -> `ksimdsl.frontend.ast`: chain balancing, the nesting bound and the AST builder.

The grammar reads `a + b + c` left-deep, so a sum of n terms is a tree n
levels deep, and every later stage (the checker, the lowering, sympy's
printers) walks expressions recursively. Before building the AST,
`balance_chains` rebuilds every chain of more than `LONG_CHAIN` operands of
one precedence level (`+ -`, `* /`, `and`, `or`) as a balanced tree, so that a
flat sum of thousands of terms is only a few levels deep; `check_nesting`
then rejects what is still deeper than `MAX_NESTING` (e.g. a thousand nested
parentheses) with a positioned error. Both walk the tree iteratively.

Balancing keeps the value: `t0 - t1 - t2 - t3` becomes `(t0 - t1) - (t2 + t3)`;
the operators of a right half that follows a `-` (or `/`) are flipped.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable

from lark import Token, Transformer, Tree, v_args
from lark.exceptions import VisitError
from lark.tree import Meta

from ksimdsl.errors import KsimError, Source, Span
from ksimdsl.frontend import ast

__all__ = ["MAX_NESTING", "LONG_CHAIN", "token_span", "balance_chains", "check_nesting", "build_statements"]

#: Deepest syntax tree accepted (after balancing). The AST builder and the later
#: stages walk expressions recursively; this keeps them far from Python's recursion limit.
MAX_NESTING = 100

#: Chains with more operands than this are rebuilt balanced; shorter ones keep the grammar's shape.
LONG_CHAIN = 16

_NUMBER_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)[ ]*([a-z]*)")

#: Operator token type -> (precedence group, the operator it becomes after a flip).
_CHAIN_OPS = {
    "PLUS": ("sum", "MINUS"),
    "MINUS": ("sum", "PLUS"),
    "STAR": ("product", "SLASH"),
    "SLASH": ("product", "STAR"),
    "AND": ("and", "AND"),
    "OR": ("or", "OR"),
}
_FLIP_TEXT = {"PLUS": "+", "MINUS": "-", "STAR": "*", "SLASH": "/"}


def token_span(token: Token) -> Span:
    return Span(token.line, token.column, token.end_line or token.line, token.end_column or token.column + 1)


def build_statements(tree: Tree, source: Source) -> list[ast.Statement]:
    """The statements of one parsed chunk."""
    balance_chains(tree)
    check_nesting(tree, source)
    try:
        return _AstBuilder(source).transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, KsimError):
            raise err.orig_exc from None
        raise


# --------------------------------------------------------------------------- chains


def _chain_group(node: object) -> str | None:
    """The precedence group of a `binary` node whose operator chains, else None."""
    if isinstance(node, Tree) and node.data == "binary" and len(node.children) == 3:
        op = node.children[1]
        if isinstance(op, Token) and op.type in _CHAIN_OPS:
            return _CHAIN_OPS[op.type][0]
    return None


def _flatten(node: Tree, group: str) -> tuple[list[object], list[Token]]:
    """Operands t0..tn and operators o1..on of the left-deep chain headed by `node`."""
    rights: list[object] = []
    ops: list[Token] = []
    while _chain_group(node) == group:
        left, op, right = node.children
        rights.append(right)
        ops.append(op)
        node = left  # type: ignore[assignment]
    return [node, *reversed(rights)], list(reversed(ops))


def _flip(op: Token) -> Token:
    kind = _CHAIN_OPS[op.type][1]
    return Token.new_borrow_pos(kind, _FLIP_TEXT.get(kind, str(op.value)), op)


def _meta_of(first: object, last: object) -> Meta:
    meta = Meta()
    a = first.meta if isinstance(first, Tree) else None
    b = last.meta if isinstance(last, Tree) else None
    if a is None or b is None or a.empty or b.empty:
        return meta
    meta.empty = False
    meta.line, meta.column, meta.start_pos = a.line, a.column, a.start_pos
    meta.end_line, meta.end_column, meta.end_pos = b.end_line, b.end_column, b.end_pos
    return meta


def _balanced(operands: list[object], ops: list[Token]) -> object:
    """`operands[0] ops[0] operands[1] ...` (left to right) as a balanced tree.

    Recursion depth is log2(len(operands)).
    """
    if len(operands) == 1:
        return operands[0]
    k = len(operands) // 2
    left = _balanced(operands[:k], ops[: k - 1])
    joint = ops[k - 1]
    rest = ops[k:]
    if joint.type in ("MINUS", "SLASH"):  # the right half's operators flip
        rest = [_flip(o) for o in rest]
    right = _balanced(operands[k:], rest)
    return Tree("binary", [left, joint, right], _meta_of(operands[0], operands[-1]))


def balance_chains(tree: Tree) -> None:
    """Rebuild, in place, every chain of more than `LONG_CHAIN` operands as a balanced tree."""
    stack = [tree]
    while stack:
        node = stack.pop()
        for i, child in enumerate(node.children):
            if not isinstance(child, Tree):
                continue
            group = _chain_group(child)
            if group is None:
                stack.append(child)
                continue
            operands, ops = _flatten(child, group)
            if len(operands) > LONG_CHAIN:  # else keep the grammar's shape
                child = node.children[i] = _balanced(operands, ops)
            stack.append(child)  # type: ignore[arg-type]


def check_nesting(tree: Tree, source: Source) -> None:
    """Reject trees deeper than `MAX_NESTING` (walked iteratively: no recursion here).

    The depth counts the few statement levels above an expression too.
    """
    stack: list[tuple[Tree, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            meta = node.meta
            span = Span.point(meta.line, meta.column) if not meta.empty else None
            raise KsimError.at(source, span, f"expression nested too deeply (more than {MAX_NESTING} levels)")
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))




def _span(meta) -> Span:
    return Span(meta.line, meta.column, meta.end_line, meta.end_column)


def _of_type(children: Iterable[object], kind: type) -> tuple:
    return tuple(child for child in children if isinstance(child, kind))


@dataclass(frozen=True)
class _ResetFrom:
    """A `from reference` line of a reset block (folded into `ast.ResetStmt.from_reference`)."""

    span: Span


class _JointGroup(tuple):
    """The assignments a `joints [...] key=value` line stands for (flattened into the actuators block)."""


@v_args(meta=True)
class _AstBuilder(Transformer):
    """Builds `ksimdsl.frontend.ast` nodes from the Lark tree, bottom up."""

    def __init__(self, source: Source):
        super().__init__(visit_tokens=False)
        self.source = source

    def _error(self, span: Span, message: str, *notes: str) -> KsimError:
        return KsimError.at(self.source, span, message, *notes)

    # ---------------------------------------------------------------- statements

    def start(self, meta, children):
        return list(children)

    def task(self, meta, children):
        name, doc = children
        return ast.TaskStmt(name.value, doc.value[1:-1] if doc is not None else None, _span(meta))

    def model(self, meta, children):
        path, *parts = children
        return ast.ModelStmt(path.value[1:-1], _span(meta), token_span(path), tuple(parts))

    def model_floor(self, meta, children):
        return ast.ModelFloor(_of_type(children, ast.Setting), _span(meta))

    def model_terrain(self, meta, children):
        return ast.ModelTerrain(_of_type(children, ast.Setting), _of_type(children, ast.TerrainTile), _span(meta))

    def terrain_tile(self, meta, children):
        kind, *settings = children
        return ast.TerrainTile(kind.value, tuple(settings), _span(meta), token_span(kind))

    def terrain_setting(self, meta, children):
        return self.setting(meta, children)

    def model_imu(self, meta, children):
        name, target = children
        return ast.ModelImu(name.value, target.value[1:-1], _span(meta), token_span(name), token_span(target))

    def model_pose(self, meta, children):
        return ast.ModelPose(_of_type(children, ast.Setting), _of_type(children, ast.PoseJoint), _span(meta))

    def pose_joint(self, meta, children):
        joint, value = children
        return ast.PoseJoint(joint.value[1:-1], value, _span(meta), token_span(joint))

    def model_collide(self, meta, children):
        geoms, *settings = children
        return ast.ModelCollide(geoms, tuple(settings), _span(meta))

    def engine(self, meta, children):
        (name,) = children
        return ast.EngineStmt(name.value, _span(meta), token_span(name))

    def episode(self, meta, children):
        (length,) = children
        return ast.EpisodeStmt(self._number(length), _span(meta))

    def settings(self, meta, children):
        keyword = children[0]
        return ast.SettingsStmt(keyword.value, _of_type(children, ast.Setting), _span(meta))

    def setting(self, meta, children):
        key, value = children
        return ast.Setting(key.value, value, _span(meta), token_span(key))

    def actuators(self, meta, children):
        kind = children[0]
        children = [c for child in children for c in (child if isinstance(child, _JointGroup) else (child,))]
        latency = self._at_most_one(children, ast.ActuatorLatency, "latency")
        zero_offset = self._at_most_one(children, ast.ActuatorZeroOffset, "zero_offset")
        return ast.ActuatorsStmt(
            kind=kind.value,
            kind_span=token_span(kind),
            settings=_of_type(children, ast.Setting),
            overrides=_of_type(children, ast.Assign),
            latency=latency,
            zero_offset=zero_offset,
            span=_span(meta),
        )

    def joint_group(self, meta, children):
        """`joints [globs] key=value ...` -> `key[glob] = value` per glob and setting, in order."""
        joints, *settings = children
        globs = joints.items if isinstance(joints, ast.Vector) else (joints,)
        return _JointGroup(
            ast.Assign(ast.Index(ast.Name(s.key, s.key_span), glob, glob.span), "=", s.value, s.span)
            for glob in globs
            for s in settings
        )

    def _at_most_one(self, children, kind: type, what: str):
        found = _of_type(children, kind)
        if len(found) > 1:
            raise self._error(found[1].span, f"'{what}' given twice in one actuators block")
        return found[0] if found else None

    def latency(self, meta, children):
        (value,) = children
        return ast.ActuatorLatency(value, _span(meta))

    def zero_offset(self, meta, children):
        (dist,) = children
        return ast.ActuatorZeroOffset(dist, _span(meta))

    def let(self, meta, children):
        name, value = children
        return ast.LetStmt(name.value, value, _span(meta), token_span(name))

    def state(self, meta, children):
        name, size, init, update = children
        return ast.StateStmt(name.value, size, init, update, _span(meta), token_span(name))

    def command(self, meta, children):
        name, every = children[0], children[1]
        return ast.CommandStmt(
            name=name.value,
            resample_every=every,
            settings=_of_type(children, ast.Setting),
            fields=_of_type(children, ast.CommandField),
            span=_span(meta),
            name_span=token_span(name),
        )

    def resample(self, meta, children):
        (every,) = children
        return every

    def command_field(self, meta, children):
        name, dist = children
        return ast.CommandField(name.value, dist, _span(meta), token_span(name))

    def observe(self, meta, children):
        group = children[0]
        items = tuple(child for child in children[1:] if isinstance(child, (ast.ObsItem, ast.ObsInclude)))
        return ast.ObserveStmt(group.value, items, _span(meta), token_span(group))

    def obs_item(self, meta, children):
        name, value, noise, bias, delay, history = children
        return ast.ObsItem(name.value, value, noise, bias, delay, _span(meta), token_span(name), history)

    def obs_include(self, meta, children):
        (group,) = children
        return ast.ObsInclude(group.value, _span(meta))

    def noise(self, meta, children):
        dist, star = children
        return ast.Noise(dist, star is not None, _span(meta))

    def bias(self, meta, children):
        (dist,) = children
        return dist

    def delay(self, meta, children):
        (value,) = children
        return value

    def history(self, meta, children):
        (value,) = children
        return value

    def reward(self, meta, children):
        return ast.RewardStmt(_of_type(children, ast.RewardTerm), _span(meta))

    def reward_term(self, meta, children):
        name, weight, value = children
        return ast.RewardTerm(name.value, weight, value, _span(meta), token_span(name))

    def terminate(self, meta, children):
        return ast.TerminateStmt(_of_type(children, ast.TerminationTerm), _span(meta))

    def terminate_term(self, meta, children):
        name, cond, success = children
        return ast.TerminationTerm(name.value, cond, success is not None, _span(meta), token_span(name))

    def metric(self, meta, children):
        return ast.MetricStmt(_of_type(children, ast.MetricItem), _span(meta))

    def metric_item(self, meta, children):
        name, value = children
        return ast.MetricItem(name.value, value, _span(meta), token_span(name))

    def randomize(self, meta, children):
        return ast.RandomizeStmt(_of_type(children, ast.Assign), _span(meta))

    def reset(self, meta, children):
        froms = [(k, c) for k, c in enumerate(children) if isinstance(c, _ResetFrom)]
        if len(froms) > 1:
            raise self._error(froms[1][1].span, "`from reference` given twice in one reset block")
        if froms and froms[0][0] != 0:
            raise self._error(
                froms[0][1].span,
                "`from reference` must be the first line of the reset block (the writes below it change the "
                "reference's frame)",
            )
        start = froms[0][1].span if froms else None
        return ast.ResetStmt(_of_type(children, ast.Assign), _span(meta), start)

    def reset_from(self, meta, children):
        (name,) = children
        if name.value != "reference":
            raise self._error(
                token_span(name), f"unknown reset start '{name.value}'; write `from reference` (the reference motion)"
            )
        return _ResetFrom(_span(meta))

    def reference(self, meta, children):
        path, *options = children
        names = tuple(ast.Name(o.value, token_span(o)) for o in options)
        return ast.ReferenceStmt(path.value[1:-1], _span(meta), token_span(path), names)

    def event(self, meta, children):
        name, every = children[0], children[1]
        return ast.EventStmt(name.value, every, _of_type(children[2:], ast.Assign), _span(meta), token_span(name))

    def curriculum(self, meta, children):
        kind, value = children[0], children[1]
        args = (value,) if value is not None else ()
        return ast.CurriculumStmt(kind.value, token_span(kind), args, _of_type(children, ast.Setting), _span(meta))

    def policy(self, meta, children):
        kind = children[0]
        return ast.PolicyStmt(kind.value, token_span(kind), _of_type(children, ast.Setting), _span(meta))

    def amp(self, meta, children):
        span = _span(meta)
        keyword = Span.point(span.line, span.col, 3)
        return ast.AmpStmt(_of_type(children, ast.Setting), span, keyword)

    def assign(self, meta, children):
        target, op, value = children
        return ast.Assign(target, op, value, _span(meta))

    def assign_op(self, meta, children):
        (op,) = children
        return str(op.value)

    def range(self, meta, children):
        lo, hi = children
        return ast.Range(lo, hi, _span(meta))

    # ---------------------------------------------------------------- expressions

    def binary(self, meta, children):
        left, op, right = children
        return ast.Binary(str(op.value), left, right, _span(meta))

    def unary(self, meta, children):
        op, operand = children
        return ast.Unary(str(op.value), operand, _span(meta))

    def attr(self, meta, children):
        base, name = children
        return ast.Attr(base, name.value, _span(meta), token_span(name))

    def method(self, meta, children):
        """`NAME.f(args)`: a call named "NAME.f" (only `ref.body_pos(...)` is one today)."""
        base, name, *args = children
        if not isinstance(base, ast.Name):
            raise self._error(
                token_span(name), f"'.{name.value}(...)' can only follow a name, as in ref.body_pos(\"torso\")"
            )
        func = Token.new_borrow_pos("NAME", f"{base.id}.{name.value}", name)
        call = self.call(meta, [func, *args])
        return ast.Call(call.func, call.args, call.kwargs, call.span, base.span.merge(token_span(name)))

    def index(self, meta, children):
        base, index = children
        return ast.Index(base, index, _span(meta))

    def slice(self, meta, children):
        lo, hi = children
        return ast.Slice(lo, hi, _span(meta))

    def number(self, meta, children):
        (token,) = children
        return self._number(token)

    def _number(self, token: Token) -> ast.Num:
        match = _NUMBER_RE.fullmatch(token.value)
        if match is None:  # the NUMBER terminal and _NUMBER_RE disagree: a bug
            raise AssertionError(f"malformed NUMBER token {token.value!r}")
        digits, unit = match.groups()
        value = float(digits)
        if not math.isfinite(value):
            raise self._error(token_span(token), f"number {digits} is too large")
        is_int = not any(c in digits for c in ".eE")
        return ast.Num(value, unit or None, token_span(token), is_int)

    def string(self, meta, children):
        (token,) = children
        return ast.Str(token.value[1:-1], token_span(token))

    def name(self, meta, children):
        (token,) = children
        return ast.Name(token.value, token_span(token))

    def vector(self, meta, children):
        return ast.Vector(tuple(child for child in children if child is not None), _span(meta))

    def call(self, meta, children):
        func, args = children[0], [child for child in children[1:] if child is not None]
        positional: list[ast.Expr] = []
        keywords: list[ast.Keyword] = []
        for arg in args:
            if isinstance(arg, ast.Keyword):
                if any(k.name == arg.name for k in keywords):
                    raise self._error(arg.span, f"keyword argument '{arg.name}' given twice")
                keywords.append(arg)
            elif keywords:
                raise self._error(arg.span, "positional argument after a keyword argument")
            else:
                positional.append(arg)
        return ast.Call(func.value, tuple(positional), tuple(keywords), _span(meta), token_span(func))

    def keyword(self, meta, children):
        name, value = children
        return ast.Keyword(name.value, value, _span(meta))
