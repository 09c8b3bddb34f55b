"""Settings: every `key=value` of physics, train, policy, curriculum, actuators and
command statements is validated here, against the tables of `builtins`."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

from ksimdsl import abi
from ksimdsl import settings as S
from ksimdsl.errors import InternalCompilerError, KsimError, Span, did_you_mean
from ksimdsl.frontend import ast
from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.check.compose import ACTUATOR_COMPOSE_KEYS
from ksimdsl.frontend.check.context import Part, Reported, fmt_num
from ksimdsl.settings.warp import warp_field_problem


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
            impl=str(abi.DEFAULT_PHYSICS["impl"]),
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
        """The value of one `key=value`, parsed by the setting's kind and checked against its bounds."""
        v = s.value
        label = f"{where} setting '{s.key}'"
        if spec.kind in ("name", "bool"):
            choices = ("true", "false") if spec.kind == "bool" else spec.accepted
            if isinstance(v, (ast.Name, ast.Str)):
                word = v.id if isinstance(v, ast.Name) else v.value
                if word in choices:
                    return word == "true" if spec.kind == "bool" else spec.canonical(word)
                self.fail(
                    v.span,
                    f"{label} must be one of {', '.join(choices)}, got '{word}'" + did_you_mean(word, choices),
                )
            self.fail(v.span, f"{label} must be one of {', '.join(choices)}")
        if spec.kind == "policy_dist":
            if isinstance(v, ast.Name) and v.id == "normal":
                return ("normal", 1)
            if isinstance(v, ast.Call) and v.func == "mixture" and len(v.args) == 1 and not v.kwargs:
                return ("mixture", self.cx.consts.const_int(v.args[0], "the number of mixture components", minimum=1))
            self.fail(v.span, f"{label} must be `normal` or `mixture(K)`")
        if spec.kind == "int_list":
            items = v.items if isinstance(v, ast.Vector) else (v,)
            sizes = []
            for item in items:
                sizes.append(self.cx.consts.const_int(item, label))
                self.check_value(spec, (sizes[-1],), item.span, label)
            self.check_value(spec, tuple(sizes), v.span, label)
            return tuple(sizes)
        if spec.kind == "time":
            value: Any = self.cx.consts.duration_seconds(v, label)
        elif spec.kind == "int":
            value = self.cx.consts.const_int(v, label)
        elif spec.kind == "float":
            value = self.cx.consts.const_float(v, label)
        else:
            raise InternalCompilerError(f"unknown setting kind {spec.kind!r}")
        self.check_value(spec, value, v.span, label)
        return value

    def check_value(self, spec: bi.Setting, value: Any, span: Span, label: str) -> None:
        """One value against its setting's type, choices, finiteness and bounds (ksimdsl.settings)."""
        problem = S.value_problem(spec, value)
        if problem is not None:
            self.fail(span, f"{label} {problem}")

    def section(
        self,
        cls: type,
        values: dict[str, Any],
        vals: Mapping[str, tuple[Any, ast.Setting]],
        span: Span | None,
        where: str,
        *notes: str,
    ) -> Any:
        """Settings section `cls` from checked values (field name -> value) of a statement's `vals`.

        The section's cross-field rules (ksimdsl.settings) are reported at the settings they involve.
        """
        found = S.problems(cls, values)
        table = cls.table()  # type: ignore[attr-defined]
        for p in found:
            keys = [table[k].via or k if k in table else k for k in p.keys]
            at = next((vals[k][1] for k in keys if k in vals), None)
            where_span = (at.value.span if p.single else at.span) if at is not None else span
            self.cx.sink.error(where_span, p.describe(f"{where} setting '{keys[0]}'"), *notes)
        if found:
            raise Reported
        return cls(**values)

    def physics(self, stmt: ast.Statement | None) -> t.Physics:
        base = self.default_physics()
        values: dict[str, Any] = {name: getattr(base, name) for name in S.PhysicsSettings.by_name()}
        if stmt is None:
            note = "dt is the model's timestep and ctrl_dt the default; set them with `physics dt=... ctrl_dt=...`"
            return self.typed_physics(self.section(S.PhysicsSettings, values, {}, None, "physics", note))
        assert isinstance(stmt, ast.SettingsStmt)
        errors = len(self.cx.sink.diagnostics)
        vals = self.validate(stmt.settings, bi.PHYSICS_SETTINGS, "physics")
        if len(self.cx.sink.diagnostics) > errors:
            raise Reported
        values |= {bi.PHYSICS_SETTINGS[k].name: v for k, (v, _) in vals.items()}
        return self.typed_physics(self.section(S.PhysicsSettings, values, vals, stmt.span, "physics"))

    @staticmethod
    def typed_physics(p: S.PhysicsSettings) -> t.Physics:
        return t.Physics(
            dt=p.dt,
            ctrl_dt=p.ctrl_dt,
            substeps=p.substeps,
            solver=p.solver,
            iterations=p.iterations,
            ls_iterations=p.ls_iterations,
            impl=p.impl,
            naconmax=p.naconmax,
            njmax=p.njmax,
            sphere_hfield=p.sphere_hfield,
        )

    def override_physics(self, physics: t.Physics) -> t.Physics:
        """`physics` with command-line overrides (validated like the task's own settings)."""
        unknown = sorted(set(self.cx.physics_overrides) - set(S.PhysicsSettings.by_name()))
        if unknown:
            raise InternalCompilerError(f"unknown physics override(s) {unknown}")
        new = dataclasses.replace(physics, **self.cx.physics_overrides)
        values = {name: getattr(new, name) for name in S.PhysicsSettings.by_name()}
        found = S.problems(S.PhysicsSettings, values)
        if found:
            raise KsimError("; ".join(p.describe(f"physics setting '{p.keys[0]}'") for p in found))
        return self.typed_physics(S.PhysicsSettings(**values))

    def check_impl(
        self,
        physics: t.Physics,
        engine: str,
        stmts: Mapping[str, ast.Statement],
        randomize: tuple[t.RandomizeDef, ...],
    ) -> None:
        """What `physics impl=warp` cannot run: the C MuJoCo engine, model fields Warp keeps shared by all envs."""
        if physics.impl != "warp":
            return
        stmt = stmts.get("physics")
        at = next((x for x in stmt.settings if x.key == "impl"), None) if isinstance(stmt, ast.SettingsStmt) else None
        span = at.value.span if at is not None else None
        if engine == "mujoco":
            engine_stmt = stmts.get("engine")
            self.cx.sink.error(
                span or getattr(engine_stmt, "engine_span", None),
                "physics impl=warp is an implementation of the MJX engine, but the task says `engine mujoco`",
                "use `engine mjx` (or `engine auto`) with impl=warp, or impl=jax",
            )
        for r in randomize:
            problem = warp_field_problem(r.field)
            if problem is not None:
                notes = (f"impl=warp is set at line {span.line}",) if span is not None else ()
                self.cx.sink.error(r.span, f"physics impl=warp: {problem}", *notes)

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

    def curriculum(self, stmt: ast.Statement | None, model: t.ModelSummary | None = None) -> Any:
        """The curriculum; with a `terrain`, `levels` defaults to one level per terrain row."""
        if stmt is None:
            return S.CurriculumSettings()
        assert isinstance(stmt, ast.CurriculumStmt)
        self.choose(stmt.kind, stmt.kind_span, bi.CURRICULUM_KINDS, "curriculum", "curricula")
        table = bi.CURRICULUM_KINDS[stmt.kind]
        where = f"curriculum {stmt.kind}"
        values: dict[str, Any] = {"kind": stmt.kind}
        if stmt.args:
            if stmt.kind != "constant" or len(stmt.args) > 1:
                self.fail(stmt.args[0].span, f"curriculum {stmt.kind} takes only key=value settings")
            what = "the constant curriculum level"
            values["value"] = self.cx.consts.const_float(stmt.args[0], what)
            self.check_value(table["value"], values["value"], stmt.args[0].span, what)
        vals = self.validate(stmt.settings, dict(table), where)
        values |= {table[k].name: v for k, (v, _) in vals.items()}
        terrain = model.composition.terrain if model is not None else None
        if "levels" in table and "levels" not in vals and terrain is not None and terrain.rows > 1:
            values["levels"] = terrain.rows - 1
        if stmt.kind == "distance":
            for key in ("up", "down"):
                if key in vals:
                    self.attempt(self.cx.units.require_length, vals[key][1].value, f"{where} setting '{key}'")
        if stmt.kind == "distance" and model is not None and model.root is None:
            self.fail(
                stmt.kind_span,
                "curriculum distance measures how far the base travelled: the model's root body needs a free joint",
            )
        return self.section(S.CurriculumSettings, values, vals, stmt.span, where)

    def policy(self, stmt: ast.Statement | None) -> Any:
        if stmt is None:
            return S.PolicySettings()
        assert isinstance(stmt, ast.PolicyStmt)
        values: dict[str, Any] = {"kind": self.choose(stmt.kind, stmt.kind_span, bi.POLICY_KINDS, "policy", "policies")}
        if stmt.kind == "gru":
            values["hidden"] = (256,)
        vals = self.validate(stmt.settings, bi.POLICY_SETTINGS, "policy")
        for key, (value, _) in vals.items():
            if key == "dist":
                values["dist"], values["mixtures"] = value
            else:
                values[bi.POLICY_SETTINGS[key].name] = value
        return self.section(S.PolicySettings, values, vals, stmt.span, "policy")

    def train(self, stmt: ast.Statement | None) -> Any:
        if stmt is None:
            return S.TrainSettings()
        assert isinstance(stmt, ast.SettingsStmt)
        vals = self.validate(stmt.settings, bi.TRAIN_SETTINGS, "train")
        values = {bi.TRAIN_SETTINGS[k].name: v for k, (v, _) in vals.items()}
        return self.section(S.TrainSettings, values, vals, stmt.span, "train")

    def command_zero_prob(self, s: ast.CommandStmt) -> float:
        """The `zero_prob=p` of a command statement (0 when not given)."""
        vals = self.validate(s.settings, dict(bi.COMMAND_SETTINGS), "command")
        zero_prob = float(vals["zero_prob"][0]) if "zero_prob" in vals else 0.0
        if zero_prob > 1.0:
            self.fail(vals["zero_prob"][1].value.span, "zero_prob is a probability in [0, 1]")
        return zero_prob

    def actuator_kind(self, stmt: ast.ActuatorsStmt | None) -> str:
        """`ctrl` (no statement) or the statement's kind (ksimdsl.settings.ACTUATOR_KINDS)."""
        if stmt is None:
            return "ctrl"
        return self.choose(stmt.kind, stmt.kind_span, S.ACTUATOR_KINDS, "actuator kind", "actuator kinds")

    def actuator_values(self, stmt: ast.ActuatorsStmt | None, kind: str) -> dict[str, float]:
        """The gains and scales of `actuators KIND key=value ...`, defaults filled in.

        A setting of another kind (`kp=` on a velocity actuator) says which kinds have it.
        """
        table = S.ActuatorSettings.kind_table(kind)
        values: dict[str, float] = {k: s.default for k, s in table.items() if s.default is not None}
        where = f"actuators {kind}"
        if stmt is not None:
            gains = [s for s in stmt.settings if s.key not in ACTUATOR_COMPOSE_KEYS]  # checked by check.compose
            every = S.ActuatorSettings.file_table()
            for s in gains:
                if s.key in every and s.key not in table:
                    self.cx.sink.error(
                        s.key_span,
                        f"{where} has no setting '{s.key}'; use {actuator_kinds_text(every[s.key].kinds)} for {s.key}",
                        f"valid {where} settings: {', '.join(table) or 'none'}",
                    )
            gains = [s for s in gains if s.key not in every or s.key in table]
            for key, (value, _) in self.validate(gains, dict(table), where).items():
                values[key] = value
        missing = [k for k, s in table.items() if s.default is None and k not in values]
        if missing:
            span = stmt.span if stmt is not None else None
            self.fail(span, f"{where} needs {', '.join(k + '=...' for k in missing)}")
        return values


def actuator_kinds_text(kinds: tuple[str, ...]) -> str:
    """`actuators a`, or `actuators a`, `actuators b` or `actuators c`: the kinds a setting belongs to."""
    words = [f"`actuators {k}`" for k in kinds]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]
