"""Declarations: `let`, `state` and `command` names, their definitions and uniqueness."""

from __future__ import annotations

from typing import Iterable

from ksimdsl.errors import Span
from ksimdsl.frontend import ast
from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.check.context import Ctx, LetEntry, Part, Reported, StateEntry


class Declarations(Part):
    """Let, state and command declarations: names first, then definitions."""

    def declare_names(self, stmts: tuple[ast.Statement, ...]) -> None:
        """Register let, state and command names (with their spans) before typing anything."""
        reserved = set(bi.QUANTITIES) | set(bi.FUNCTIONS) | set(bi.LOOKUPS) | set(bi.DISTRIBUTIONS) | {"cmd", "prev", "ref"}
        seen: dict[str, Span] = {}
        for s in stmts:
            if not isinstance(s, (ast.LetStmt, ast.StateStmt)):
                continue
            if s.name in reserved:
                self.cx.sink.error(s.name_span, f"'{s.name}' is a built-in name; choose another name")
                continue
            if s.name in seen:
                self.cx.sink.error(
                    s.name_span, f"'{s.name}' is already defined", f"first defined at line {seen[s.name].line}"
                )
                continue
            seen[s.name] = s.name_span
            if isinstance(s, ast.LetStmt):
                self.cx.lets[s.name] = LetEntry(s.name_span)
            else:
                size = self.attempt(self.state_size, s)
                if size is None:
                    self.cx.lets[s.name] = LetEntry(s.name_span, failed=True)  # silence later uses
                    continue
                shape = () if size == 0 else (size,)
                self.cx.states[s.name] = StateEntry(t.Type("float", shape), s.name_span)
        for s in stmts:
            if isinstance(s, ast.CommandStmt):
                if s.name in self.cx.commands:
                    self.cx.sink.error(s.name_span, f"command '{s.name}' is already defined")
                    continue
                self.cx.commands[s.name] = tuple(f.name for f in s.fields)

    def state_size(self, s: ast.StateStmt) -> int:
        if s.size is None:
            return 0
        return self.cx.consts.const_int(s.size, f"the size of state '{s.name}'", minimum=1)

    def let(self, s: ast.LetStmt) -> None:
        entry = self.cx.lets.get(s.name)
        if entry is None or entry.span != s.name_span:
            return  # a duplicate or a reserved name, already reported
        try:
            value = self.cx.exprs.expr(s.value, Ctx(f"let '{s.name}'"))
        except Reported:
            entry.failed = True
            return
        entry.value = value
        self.cx.units.define_let(s.name, s.value)
        self.cx.let_defs.append(t.LetDef(s.name, value, s.span))

    def state(self, s: ast.StateStmt) -> t.StateDef | None:
        entry = self.cx.states.get(s.name)
        if entry is None or entry.span != s.name_span:
            return None
        shape = entry.type.shape
        init = self.attempt(self.state_init, s, shape)
        update = self.attempt(self.state_update, s, entry.type)
        if init is None or update is None:
            return None
        return t.StateDef(s.name, entry.type, init, update, s.span)

    def state_init(self, s: ast.StateStmt, shape: tuple[int, ...]) -> t.Expr:
        what = f"the initial value of state '{s.name}'"
        init = self.cx.exprs.float_expr(s.init, Ctx(what, allow_dist=True))
        self.cx.shapes.require_static(init, what)
        return self.cx.shapes.fit_shape(init, shape, s.init.span, what)

    def state_update(self, s: ast.StateStmt, typ: t.Type) -> t.Expr:
        what = f"the update of state '{s.name}'"
        update = self.cx.exprs.float_expr(s.update, Ctx(what, state_update=True))
        if update.type.shape != typ.shape:
            self.fail(s.update.span, f"state '{s.name}' is {typ} but its update is {update.type}")
        return update

    def command(self, s: ast.CommandStmt) -> t.CommandDef:
        if not s.fields:
            self.fail(s.name_span, f"command '{s.name}' needs at least one field")
        resample = None
        if s.resample_every is not None:
            resample = self.cx.consts.duration_steps(s.resample_every, "resample every")
            if resample < 1:
                self.fail(s.resample_every.span, "resample every must be at least one control step")
        zero_prob = self.cx.settings.command_zero_prob(s)
        fields = []
        self.check_unique([(f.name, f.name_span) for f in s.fields], f"field of command '{s.name}'")
        for f in s.fields:
            what = f"command field '{s.name}.{f.name}'"
            value = self.attempt(self.command_field, f, what)
            if value is not None:
                fields.append(t.CommandFieldDef(f.name, value, f.span))
        if len(fields) != len(s.fields):
            raise Reported
        return t.CommandDef(s.name, tuple(fields), resample, zero_prob, s.span)

    def command_field(self, f: ast.CommandField, what: str) -> t.Expr:
        value = self.cx.exprs.float_expr(f.dist, Ctx(what, allow_dist=True))
        self.cx.shapes.require_static(value, what)
        if not value.type.is_scalar:
            self.fail(f.dist.span, f"{what} must be a scalar, got {value.type}")
        return value

    def check_unique(self, items: Iterable[tuple[str, Span | None]], what: str) -> None:
        seen: dict[str, Span | None] = {}
        for name, span in items:
            if name in seen:
                first = seen[name]
                self.cx.sink.error(span, f"duplicate {what} '{name}'", *([f"first at line {first.line}"] if first else []))
            else:
                seen[name] = span
