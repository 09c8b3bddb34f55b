"""Settings: every `key=value` of physics, train, policy, curriculum, actuators and
command statements is validated here, against the tables of `builtins`."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any, Iterable

from ksimdsl import abi
from ksimdsl.errors import InternalCompilerError, KsimError, Span, did_you_mean
from ksimdsl.frontend import ast
from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.check.context import Part, fmt_num


class Settings(Part):
    """Every `key=value` setting, validated against the tables of `builtins`."""

    def default_physics(self) -> t.Physics:
        dt = float(self.m.model.opt.timestep)
        ctrl_dt = float(abi.DEFAULT_PHYSICS["ctrl_dt"])
        return t.Physics(
            dt=dt,
            ctrl_dt=ctrl_dt,
            substeps=max(1, round(ctrl_dt / dt)),
            solver=str(abi.DEFAULT_PHYSICS["solver"]),
            iterations=int(abi.DEFAULT_PHYSICS["iterations"]),
            ls_iterations=int(abi.DEFAULT_PHYSICS["ls_iterations"]),
        )

    def validate(
        self, settings: Iterable[ast.Setting], table: dict[str, bi.Setting] | Any, where: str
    ) -> dict[str, tuple[Any, ast.Setting]]:
        """Validate `key=value` settings against `table`; returns {key: (value, setting)}."""
        out: dict[str, tuple[Any, ast.Setting]] = {}
        for s in settings:
            if s.key not in table:
                valid = ", ".join(table) if table else "none"
                self.cx.sink.error(
                    s.key_span,
                    f"unknown {where} setting '{s.key}'" + did_you_mean(s.key, table),
                    f"valid {where} settings: {valid}",
                )
                continue
            if s.key in out:
                self.cx.sink.error(s.key_span, f"duplicate {where} setting '{s.key}'")
                continue
            value = self.attempt(self.value, s, table[s.key], where)
            if value is not None:
                out[s.key] = (value, s)
        return out

    def value(self, s: ast.Setting, spec: bi.Setting, where: str) -> Any:
        v = s.value
        label = f"{where} setting '{s.key}'"
        if spec.kind in ("name", "bool"):
            choices = ("true", "false") if spec.kind == "bool" else spec.choices
            if isinstance(v, (ast.Name, ast.Str)):
                word = v.id if isinstance(v, ast.Name) else v.value
                if word in choices:
                    return word == "true" if spec.kind == "bool" else word
                self.fail(
                    v.span,
                    f"{label} must be one of {', '.join(choices)}, got '{word}'" + did_you_mean(word, choices),
                )
            self.fail(v.span, f"{label} must be one of {', '.join(choices)}")
        if spec.kind == "time":
            return self.cx.consts.duration_seconds(v, label)
        if spec.kind == "policy_dist":
            if isinstance(v, ast.Name) and v.id == "normal":
                return ("normal", 1)
            if isinstance(v, ast.Call) and v.func == "mixture" and len(v.args) == 1 and not v.kwargs:
                return ("mixture", self.cx.consts.const_int(v.args[0], "the number of mixture components", minimum=1))
            self.fail(v.span, f"{label} must be `normal` or `mixture(K)`")
        if spec.kind == "int_list":
            items = v.items if isinstance(v, ast.Vector) else (v,)
            if not items:
                self.fail(v.span, f"{label} needs at least one layer size")
            return [self.cx.consts.const_int(i, label, minimum=int(spec.minimum or 0)) for i in items]
        if spec.kind == "int":
            return self.cx.consts.const_int(v, label, minimum=None if spec.minimum is None else int(spec.minimum))
        if spec.kind == "float":
            x = self.cx.consts.const_float(v, label)
            if spec.minimum is not None and x < spec.minimum:
                self.fail(v.span, f"{label} must be at least {fmt_num(spec.minimum)}, got {fmt_num(x)}")
            return x
        raise InternalCompilerError(f"unknown setting kind {spec.kind!r}")

    def physics(self, stmt: ast.Statement | None) -> t.Physics:
        base = self.default_physics()
        if stmt is None:
            return base
        assert isinstance(stmt, ast.SettingsStmt)
        vals = self.validate(stmt.settings, bi.PHYSICS_SETTINGS, "physics")
        get = lambda k, d: vals[k][0] if k in vals else d  # noqa: E731
        dt, ctrl_dt = float(get("dt", base.dt)), float(get("ctrl_dt", base.ctrl_dt))
        for key in ("dt", "ctrl_dt"):
            if key in vals and vals[key][0] <= 0:
                self.fail(vals[key][1].value.span, f"physics {key} must be positive")
        substeps = round(ctrl_dt / dt)
        if substeps < 1 or abs(substeps * dt - ctrl_dt) > 1e-6 * ctrl_dt + 1e-12:
            span = (vals.get("ctrl_dt") or vals.get("dt") or (None, stmt))[1]
            self.fail(
                span.span,
                f"ctrl_dt ({fmt_num(ctrl_dt * 1000)}ms) must be a whole multiple of dt ({fmt_num(dt * 1000)}ms)",
            )
        return t.Physics(
            dt=dt,
            ctrl_dt=ctrl_dt,
            substeps=substeps,
            solver=str(get("solver", base.solver)),
            iterations=int(get("iterations", base.iterations)),
            ls_iterations=int(get("ls_iterations", base.ls_iterations)),
        )

    def override_physics(self, physics: t.Physics) -> t.Physics:
        """`physics` with command-line overrides (validated like the task's own settings)."""
        unknown = sorted(set(self.cx.physics_overrides) - {"dt", "ctrl_dt", "solver", "iterations", "ls_iterations"})
        if unknown:
            raise InternalCompilerError(f"unknown physics override(s) {unknown}")
        new = dataclasses.replace(physics, **self.cx.physics_overrides)
        if new.dt <= 0 or new.ctrl_dt <= 0:
            raise KsimError("physics dt and ctrl_dt must be positive")
        substeps = round(new.ctrl_dt / new.dt)
        if substeps < 1 or abs(substeps * new.dt - new.ctrl_dt) > 1e-6 * new.ctrl_dt + 1e-12:
            raise KsimError(
                f"ctrl_dt ({fmt_num(new.ctrl_dt * 1000)}ms) must be a whole multiple of dt ({fmt_num(new.dt * 1000)}ms)"
            )
        return dataclasses.replace(new, substeps=substeps)

    def choose(self, word: str, span: Span, choices: Iterable[str], what: str, plural: str) -> str:
        """`word` if it is one of `choices`, else an `unknown WHAT` error with a suggestion."""
        if word not in choices:
            self.fail(span, f"unknown {what} '{word}'" + did_you_mean(word, choices), f"{plural}: {', '.join(choices)}")
        return word

    def engine(self, stmt: ast.Statement | None) -> str:
        if stmt is None:
            return "auto"
        assert isinstance(stmt, ast.EngineStmt)
        return self.choose(stmt.engine, stmt.engine_span, bi.ENGINES, "engine", "engines")

    def episode(self, stmt: ast.Statement | None) -> int:
        if stmt is None:
            return round(20.0 / self.cx.ctrl_dt)
        assert isinstance(stmt, ast.EpisodeStmt)
        steps = self.cx.consts.duration_steps(stmt.length, "the episode length")
        if steps < 1:
            self.fail(stmt.length.span, "the episode must last at least one control step")
        return steps

    def curriculum(self, stmt: ast.Statement | None) -> Any:
        if stmt is None:
            return MappingProxyType({"kind": "constant", "value": 1.0})
        assert isinstance(stmt, ast.CurriculumStmt)
        self.choose(stmt.kind, stmt.kind_span, bi.CURRICULUM_KINDS, "curriculum", "curricula")
        table = bi.CURRICULUM_KINDS[stmt.kind]
        out: dict[str, Any] = {"kind": stmt.kind, **bi.CURRICULUM_DEFAULTS[stmt.kind]}
        if stmt.args:
            if stmt.kind != "constant" or len(stmt.args) > 1:
                self.fail(stmt.args[0].span, f"curriculum {stmt.kind} takes only key=value settings")
            out["value"] = self.cx.consts.const_float(stmt.args[0], "the constant curriculum level")
        for key, (value, _) in self.validate(stmt.settings, dict(table), f"curriculum {stmt.kind}").items():
            out[key] = value
        if stmt.kind == "constant" and not 0.0 <= out["value"] <= 1.0:
            self.fail(stmt.span, f"a curriculum level is in [0, 1], got {fmt_num(out['value'])}")
        return MappingProxyType(out)

    def policy(self, stmt: ast.Statement | None) -> Any:
        out = dict(abi.DEFAULT_POLICY)
        if stmt is None:
            return MappingProxyType(out)
        assert isinstance(stmt, ast.PolicyStmt)
        out["kind"] = self.choose(stmt.kind, stmt.kind_span, bi.POLICY_KINDS, "policy", "policies")
        if stmt.kind == "gru":
            out["hidden"] = [256]
        for key, (value, _) in self.validate(stmt.settings, dict(bi.POLICY_SETTINGS), "policy").items():
            if key == "dist":
                out["dist"], out["mixtures"] = value
            else:
                out[key] = value
        if out["min_std"] > out["max_std"]:
            self.fail(stmt.span, "policy min_std must not exceed max_std")
        return MappingProxyType(out)

    def train(self, stmt: ast.Statement | None) -> Any:
        out = dict(abi.DEFAULT_TRAIN)
        if stmt is not None:
            assert isinstance(stmt, ast.SettingsStmt)
            for key, (value, _) in self.validate(stmt.settings, dict(bi.TRAIN_SETTINGS), "train").items():
                out[key] = value
        return MappingProxyType(out)

    def command_zero_prob(self, s: ast.CommandStmt) -> float:
        """The `zero_prob=p` of a command statement (0 when not given)."""
        vals = self.validate(s.settings, dict(bi.COMMAND_SETTINGS), "command")
        zero_prob = float(vals["zero_prob"][0]) if "zero_prob" in vals else 0.0
        if zero_prob > 1.0:
            self.fail(vals["zero_prob"][1].value.span, "zero_prob is a probability in [0, 1]")
        return zero_prob

    def actuator_kind(self, stmt: ast.ActuatorsStmt | None) -> str:
        """`ctrl` (no statement), `position` or `torque`."""
        if stmt is None:
            return "ctrl"
        return self.choose(stmt.kind, stmt.kind_span, bi.ACTUATOR_KINDS, "actuator kind", "actuator kinds")

    def actuator_values(self, stmt: ast.ActuatorsStmt | None, kind: str) -> dict[str, float]:
        """The gains and scales of `actuators KIND key=value ...`, defaults filled in."""
        defaults = bi.ACTUATOR_KINDS[kind]
        values: dict[str, float] = {k: v for k, v in defaults.items() if v is not None}
        if stmt is not None:
            table = {k: bi.Setting("float", minimum=0.0) for k in defaults}
            for key, (value, _) in self.validate(stmt.settings, table, f"actuators {kind}").items():
                values[key] = value
        missing = [k for k, v in defaults.items() if v is None and k not in values]
        if missing:
            span = stmt.span if stmt is not None else None
            self.fail(span, f"actuators {kind} needs {', '.join(k + '=...' for k in missing)}")
        return values
