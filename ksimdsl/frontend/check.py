"""The semantic checker: `ast.Module` -> `typed.CheckedTask`.

Resolves every name against the MJCF model, gives every expression a static
type and shape, folds units, validates settings, and reports every independent
error it finds (`errors.DiagnosticSink`) as `FILE:LINE:COL: error: ...`.

Entry points: `check_module`, `check_source`, `check_file`.

Visibility rules: a `let` name is usable after its declaration (textual
order); a `state` name after its declaration, and inside every state's
update (updates read pre-update values, so states may refer to each other);
commands (`cmd.NAME`) anywhere.

Anything that goes wrong here that is not the user's fault surfaces as an
`InternalCompilerError`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
from dataclasses import dataclass
from difflib import SequenceMatcher
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, NoReturn, TypeVar

from ksimdsl import abi
from ksimdsl import settings as S
from ksimdsl.errors import DiagnosticSink, InternalCompilerError, KsimError, Source, Span, did_you_mean
from ksimdsl.frontend import ast
from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.model_info import (
    OBJECT_KINDS,
    ModelInfo,
    ModelLoadError,
    is_glob,
    load_model_info,
    match_names,
    resolve_model_path,
)

__all__ = ["check_module", "check_source", "check_file"]

_T = TypeVar("_T")

#: Seconds per unit for durations.
_TIME_UNITS = {"s": 1.0, "ms": 1e-3}
#: What the elements of a labelled quantity are called in messages.
_LABEL_KINDS = {
    "qpos": "joint",
    "qvel": "joint",
    "qacc": "joint",
    "joint_pos": "joint",
    "joint_vel": "joint",
    "joint_acc": "joint",
    "default_joint_pos": "joint",
    "joint_lower": "joint",
    "joint_upper": "joint",
    "actuator_force": "actuator",
    "action": "actuator",
}
_DIST_CONTEXTS = (
    "reset, randomize, event and command blocks, state initial values, observation noise and bias, "
    "and zero_offset"
)


class _Reported(Exception):
    """An error was recorded in the sink; abandon the current item and go on with the next."""


@dataclass(frozen=True)
class _Ctx:
    """Where an expression is being checked.

    `what` names the place in messages ("reward 'alive'"); `allow_dist` allows
    distributions; `state_update` makes every state visible.
    """

    what: str
    allow_dist: bool = False
    state_update: bool = False


@dataclass
class _LetEntry:
    span: Span
    value: t.Expr | None = None  # None while pending or after an error
    failed: bool = False


@dataclass(frozen=True)
class _StateEntry:
    type: t.Type
    span: Span


# --------------------------------------------------------------------------- public API


def check_module(
    module: ast.Module,
    source: Source,
    *,
    model_path: str | None = None,
    physics: Mapping[str, Any] | None = None,
) -> t.CheckedTask:
    """Check a parsed task against its MJCF model.

    `model_path` overrides the task's `model` line (relative to the current
    directory, or `pkg:...`). `physics` overrides `physics` settings (dt and
    ctrl_dt in seconds, solver, iterations, ls_iterations) as `ksimdsl train
    key=value` does: everything derived from ctrl_dt (episode steps, timers,
    `ctrl_dt` in expressions) follows. Raises KsimError with every independent error.
    """
    checker = _Checker(module, source, model_path, physics or {})
    try:
        return checker.run()
    except (KsimError, InternalCompilerError):
        raise
    except _Reported:  # an item error escaped its `attempt`; still report it faithfully
        checker.raise_errors()
        raise InternalCompilerError("an error was signalled without a diagnostic") from None
    except Exception as e:  # a crash in the checker is our bug, never the user's
        raise InternalCompilerError(f"the checker crashed: {type(e).__name__}: {e}") from e


def check_source(
    source: Source, *, model_path: str | None = None, physics: Mapping[str, Any] | None = None
) -> t.CheckedTask:
    """Parse and check the text of a task file."""
    from ksimdsl.frontend.parse import parse_source

    return check_module(parse_source(source), source, model_path=model_path, physics=physics)


def check_file(
    path: str, *, model_path: str | None = None, physics: Mapping[str, Any] | None = None
) -> t.CheckedTask:
    """Read, parse and check a `.ksim` file."""
    from ksimdsl.frontend.parse import read_source

    return check_source(read_source(path), model_path=model_path, physics=physics)


# --------------------------------------------------------------------------- helpers


def _fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _stmt_keyword(stmt: ast.Statement) -> str | None:
    """The keyword of a statement that may appear only once, else None."""
    if isinstance(stmt, ast.TaskStmt):
        return "task"
    if isinstance(stmt, ast.ModelStmt):
        return "model"
    if isinstance(stmt, ast.SettingsStmt):
        return stmt.keyword
    if isinstance(stmt, ast.EngineStmt):
        return "engine"
    if isinstance(stmt, ast.EpisodeStmt):
        return "episode"
    if isinstance(stmt, ast.ActuatorsStmt):
        return "actuators"
    if isinstance(stmt, ast.ObserveStmt):
        return f"observe {stmt.group}"
    if isinstance(stmt, ast.RewardStmt):
        return "reward"
    if isinstance(stmt, ast.TerminateStmt):
        return "terminate"
    if isinstance(stmt, ast.RandomizeStmt):
        return "randomize"
    if isinstance(stmt, ast.ResetStmt):
        return "reset"
    if isinstance(stmt, ast.CurriculumStmt):
        return "curriculum"
    if isinstance(stmt, ast.PolicyStmt):
        return "policy"
    return None


def _const_pairs(a: t.Const, b: t.Const) -> list[tuple[float, float]]:
    """Elementwise pairs of two constants of broadcastable shapes (a scalar repeats)."""
    av, bv = a.values, b.values
    n = max(len(av), len(bv))
    return list(zip(av * n if len(av) == 1 else av, bv * n if len(bv) == 1 else bv))


def _joint_limits(m: ModelInfo, joint: int) -> tuple[float, float]:
    """(lower, upper) of a 1-dof joint from `jnt_range`; (-inf, inf) when `jnt_limited` is false."""
    if not m.model.jnt_limited[joint]:
        return -math.inf, math.inf
    lo, hi = m.model.jnt_range[joint]
    return float(lo), float(hi)


def _arith(op: str, x: float, y: float) -> float:
    """`x op y` on floats; NaN where it has no real value (inf - inf, 0 * inf, x / 0, (-1) ^ 0.5)."""
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    if op == "/":
        return math.nan if y == 0 else x / y
    try:
        v = x**y
    except ZeroDivisionError:
        return math.nan
    except OverflowError:
        return math.inf
    return math.nan if isinstance(v, complex) else float(v)


def _static_values(e: t.Expr) -> tuple[float, ...] | None:
    """The element values of `e` when they are known at compile time, else None.

    Known: constants, constant built-ins (default_joint_pos, joint_lower,
    joint_upper), lets of them, selections, negation and `+ - * / ^` of those.
    """
    if isinstance(e, t.Const):
        return e.values
    if isinstance(e, (t.Let, t.Quantity)):
        return _static_values(e.value)
    if isinstance(e, t.Gather):
        base = _static_values(e.base)
        return None if base is None else tuple(base[i] for i in e.indices)
    if isinstance(e, t.Unary) and e.op == "-":
        inner = _static_values(e.operand)
        return None if inner is None else tuple(-v for v in inner)
    if isinstance(e, t.Binary):
        a = _static_values(e.left)
        b = None if a is None else _static_values(e.right)
        if a is None or b is None:
            return None
        n = max(len(a), len(b))
        a, b = (a * n if len(a) == 1 else a), (b * n if len(b) == 1 else b)
        return tuple(_arith(e.op, x, y) for x, y in zip(a, b))
    return None


def _range_units(rng: ast.Range) -> ast.Range:
    """`0..10ms` means `0ms..10ms`: a bare number before `..` takes the unit after it."""
    lo, hi = rng.lo, rng.hi
    if isinstance(lo, ast.Num) and lo.unit is None and isinstance(hi, ast.Num) and hi.unit is not None:
        return dataclasses.replace(rng, lo=dataclasses.replace(lo, unit=hi.unit))
    return rng


def _suggest_glob(pattern: str, names: Iterable[str]) -> str | None:
    """A corrected glob that matches something, for a glob that matched nothing.

    Replaces one literal fragment of the pattern by the most similar substring
    of a name (e.g. '*_kne*' -> '*knee*').
    """
    names = [n for n in names if n]
    best: tuple[float, str] | None = None
    frags = [f for f in _glob_fragments(pattern) if f]
    for frag in frags:
        for name in names:
            for width in {max(1, len(frag) - 1), len(frag), len(frag) + 1}:
                for i in range(0, max(1, len(name) - width + 1)):
                    sub = name[i : i + width]
                    # prefer fixing a typo over dropping characters
                    ratio = SequenceMatcher(None, frag, sub).ratio() - (0.15 if width < len(frag) else 0.0)
                    if ratio < 0.6 or (best is not None and ratio <= best[0]):
                        continue
                    candidate = pattern.replace(frag, sub, 1)
                    if any(fnmatch.fnmatchcase(n, candidate) for n in names):
                        best = (ratio, candidate)
    return best[1] if best else None


def _glob_fragments(pattern: str) -> list[str]:
    out, cur = [], ""
    for c in pattern:
        if c in "*?":
            out.append(cur)
            cur = ""
        else:
            cur += c
    out.append(cur)
    return out


def _no_match_message(pattern: str, names: tuple[str, ...], kind: str) -> str:
    """`glob '*_kne*' matches no joint (did you mean '*knee*'?)` / `no joint named 'x' (...)`."""
    valid = [n for n in names if n]
    if is_glob(pattern):
        hint = _suggest_glob(pattern, valid)
        return f"glob '{pattern}' matches no {kind}" + (f" (did you mean '{hint}'?)" if hint else "")
    return f"no {kind} named '{pattern}'" + did_you_mean(pattern, valid)


def _plural(kind: str) -> str:
    return kind[:-1] + "ies" if kind.endswith("y") else kind + "s"


def _names_note(kind: str, names: Iterable[str], limit: int = 30) -> str:
    """`bodies: world, cart, pole_1` (at most `limit` names)."""
    valid = list(dict.fromkeys(n for n in names if n))
    if not valid:
        return f"the model has no named {_plural(kind)}"
    shown = ", ".join(valid[:limit]) + (", ..." if len(valid) > limit else "")
    return f"{_plural(kind)}: {shown}"


# --------------------------------------------------------------------------- the checker


class _Checker:
    def __init__(self, module: ast.Module, source: Source, model_path: str | None, physics: Mapping[str, Any]):
        self.module = module
        self.source = source
        self.model_path_override = model_path
        self.physics_overrides = dict(physics)
        self.sink = DiagnosticSink(source)
        self.info: ModelInfo | None = None
        self.ctrl_dt = float(abi.DEFAULT_PHYSICS["ctrl_dt"])
        self.action_size = 0
        self.lets: dict[str, _LetEntry] = {}
        self.let_defs: list[t.LetDef] = []
        self.states: dict[str, _StateEntry] = {}
        self.commands: dict[str, tuple[str, ...]] = {}
        self.prev_slots: dict[t.Expr, int] = {}
        self.contact_queries: dict[t.ContactQuery, int] = {}

    # ----------------------------------------------------------------- error plumbing

    def fail(self, span: Span | None, message: str, *notes: str) -> NoReturn:
        self.sink.error(span, message, *notes)
        raise _Reported

    def raise_errors(self) -> None:
        """Raise every recorded error, in source order (file-level ones first)."""
        diags = self.sink.diagnostics
        if diags:
            key = lambda d: (0, 0, 0) if d.span is None else (1, d.span.line, d.span.col)  # noqa: E731
            raise KsimError(sorted(diags, key=key))

    def attempt(self, fn: Callable[..., _T], *args: Any) -> _T | None:
        """Run one independent item; an error in it is recorded and None returned."""
        try:
            return fn(*args)
        except _Reported:
            return None

    def each(self, fn: Callable[[Any], _T | None], items: Iterable[Any]) -> tuple[_T, ...]:
        """`fn` on every item; items with errors (recorded) or no result are left out."""
        results = (self.attempt(fn, item) for item in items)
        return tuple(r for r in results if r is not None)

    # ----------------------------------------------------------------- driver

    def run(self) -> t.CheckedTask:
        singles = self._collect_statements()
        task_stmt = singles.get("task")
        if task_stmt is None:
            self.sink.error(None, 'missing `task` statement (e.g. `task walk "A humanoid walks"`)')
        model = self._load_model(singles.get("model"))
        if model is None or self.info is None:
            self.raise_errors()
            raise InternalCompilerError("model failed to load without a diagnostic")

        physics = self.attempt(self._physics, singles.get("physics")) or self._default_physics()
        if self.physics_overrides:
            physics = self._override_physics(physics)
        self.ctrl_dt = physics.ctrl_dt
        engine = self.attempt(self._engine, singles.get("engine")) or "auto"
        episode_steps = self.attempt(self._episode, singles.get("episode")) or round(20.0 / self.ctrl_dt)
        actuators = self.attempt(self._actuators, singles.get("actuators"))
        if actuators is not None:
            self.action_size = len(actuators.names)
        curriculum = self.attempt(self._curriculum, singles.get("curriculum")) or S.CurriculumSettings()
        policy = self.attempt(self._policy, singles.get("policy")) or S.PolicySettings()
        train = self.attempt(self._train, singles.get("train")) or S.TrainSettings()

        stmts = self.module.statements
        self._declare_names(stmts)
        for s in stmts:
            if isinstance(s, ast.LetStmt):
                self._let(s)
        states = self.each(self._state, (s for s in stmts if isinstance(s, ast.StateStmt)))
        commands = self.each(self._command, (s for s in stmts if isinstance(s, ast.CommandStmt)))
        obs_actor = self._observe(singles.get("observe actor"), None)
        obs_critic = self._observe(singles.get("observe critic"), obs_actor)
        rewards = self._rewards(singles.get("reward"))
        terminations = self._terminations(singles.get("terminate"))
        randomize = self._randomize(singles.get("randomize"))
        reset = self._writes(singles["reset"].assigns, "reset") if "reset" in singles else ()
        event_stmts = [s for s in stmts if isinstance(s, ast.EventStmt)]
        self._check_unique([(s.name, s.name_span) for s in event_stmts], "event")
        events = self.each(self._event, event_stmts)

        self.raise_errors()
        if actuators is None or task_stmt is None:
            raise InternalCompilerError("missing actuators/task without a diagnostic")
        assert isinstance(task_stmt, ast.TaskStmt)
        return t.CheckedTask(
            name=task_stmt.name,
            doc=task_stmt.doc or "",
            source_path=self.source.path,
            model=model,
            physics=physics,
            engine=engine,
            episode_steps=episode_steps,
            actuators=actuators,
            action_size=self.action_size,
            lets=tuple(self.let_defs),
            states=states,
            commands=commands,
            obs_actor=obs_actor,
            obs_critic=obs_critic,
            rewards=rewards,
            terminations=terminations,
            randomize=randomize,
            reset=reset,
            events=events,
            contact_queries=tuple(self.contact_queries),
            prev_slots=tuple(t.PrevSlot(i, e) for e, i in self.prev_slots.items()),
            curriculum=curriculum,
            policy=policy,
            train=train,
        )

    def _collect_statements(self) -> dict[str, ast.Statement]:
        singles: dict[str, ast.Statement] = {}
        for stmt in self.module.statements:
            key = _stmt_keyword(stmt)
            if key is None:
                continue
            if key in singles:
                first = singles[key].span
                self.sink.error(
                    stmt.span,
                    f"duplicate `{key}` statement; a task has at most one",
                    f"the first `{key}` is at line {first.line}",
                )
                continue
            singles[key] = stmt
        return singles

    # ----------------------------------------------------------------- model

    def _load_model(self, stmt: ast.Statement | None) -> t.ModelSummary | None:
        if self.model_path_override is not None:
            written, relative_to, span = self.model_path_override, None, None
        elif stmt is None:
            self.sink.error(None, 'missing `model` statement (e.g. `model "models/humanoid.xml"`)')
            return None
        else:
            assert isinstance(stmt, ast.ModelStmt)
            written, span = stmt.path, stmt.path_span
            relative_to = os.path.dirname(os.path.abspath(self.source.path))
        try:
            resolved = resolve_model_path(written, relative_to)
            info = load_model_info(resolved)
        except ModelLoadError as e:
            self.sink.error(span, str(e))
            return None
        self.info = info
        m = info.model
        return t.ModelSummary(
            path=written,
            resolved_path=resolved,
            nq=int(m.nq),
            nv=int(m.nv),
            nu=int(m.nu),
            nbody=int(m.nbody),
            njnt=int(m.njnt),
            ngeom=int(m.ngeom),
            nsite=int(m.nsite),
            nsensor=int(m.nsensor),
            nsensordata=int(m.nsensordata),
            nkey=int(m.nkey),
            timestep=float(m.opt.timestep),
            default_qpos=info.default_qpos,
            root=info.root,
        )

    @property
    def m(self) -> ModelInfo:
        if self.info is None:
            raise InternalCompilerError("model used before it was loaded")
        return self.info

    # ----------------------------------------------------------------- settings

    def _default_physics(self) -> t.Physics:
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

    def _settings(
        self, settings: Iterable[ast.Setting], table: dict[str, bi.Setting] | Any, where: str
    ) -> dict[str, tuple[Any, ast.Setting]]:
        """Validate `key=value` settings against `table`; returns {key: (value, setting)}."""
        out: dict[str, tuple[Any, ast.Setting]] = {}
        for s in settings:
            if s.key not in table:
                valid = ", ".join(table) if table else "none"
                self.sink.error(
                    s.key_span,
                    f"unknown {where} setting '{s.key}'" + did_you_mean(s.key, table),
                    f"valid {where} settings: {valid}",
                )
                continue
            if s.key in out:
                self.sink.error(s.key_span, f"duplicate {where} setting '{s.key}'")
                continue
            value = self.attempt(self._setting_value, s, table[s.key], where)
            if value is not None:
                out[s.key] = (value, s)
        return out

    def _setting_value(self, s: ast.Setting, spec: bi.Setting, where: str) -> Any:
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
                return ("mixture", self._const_int(v.args[0], "the number of mixture components", minimum=1))
            self.fail(v.span, f"{label} must be `normal` or `mixture(K)`")
        if spec.kind == "int_list":
            items = v.items if isinstance(v, ast.Vector) else (v,)
            sizes = []
            for item in items:
                sizes.append(self._const_int(item, label))
                self._check_setting(spec, (sizes[-1],), item.span, label)
            self._check_setting(spec, tuple(sizes), v.span, label)
            return tuple(sizes)
        if spec.kind == "time":
            value: Any = self._duration_seconds(v, label)
        elif spec.kind == "int":
            value = self._const_int(v, label)
        elif spec.kind == "float":
            value = self._const_float(v, label)
        else:
            raise InternalCompilerError(f"unknown setting kind {spec.kind!r}")
        self._check_setting(spec, value, v.span, label)
        return value

    def _check_setting(self, spec: bi.Setting, value: Any, span: Span, label: str) -> None:
        problem = S.value_problem(spec, value)
        if problem is not None:
            self.fail(span, f"{label} {problem}")

    def _section(
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
            self.sink.error(where_span, p.describe(f"{where} setting '{keys[0]}'"), *notes)
        if found:
            raise _Reported
        return cls(**values)

    def _const(self, node: ast.Expr, what: str) -> t.Const:
        """A compile-time constant: numbers (units folded), vectors and arithmetic on them."""
        self._require_literal(node, what)
        value = self.expr(node, _Ctx(what))
        if not isinstance(value, t.Const):
            self.fail(node.span, f"{what} must be a constant number")
        return value

    def _require_literal(self, node: ast.Expr, what: str) -> None:
        if isinstance(node, ast.Num):
            if node.unit == "steps":
                self.fail(node.span, f"{what} must be a plain number, not a count of steps")
            return
        if isinstance(node, ast.Unary):
            self._require_literal(node.operand, what)
        elif isinstance(node, ast.Binary):
            self._require_literal(node.left, what)
            self._require_literal(node.right, what)
        elif isinstance(node, ast.Vector):
            for item in node.items:
                self._require_literal(item, what)
        else:
            self.fail(node.span, f"{what} must be a constant number")

    def _const_float(self, node: ast.Expr, what: str) -> float:
        c = self._const(node, what)
        if not c.type.is_scalar or c.type.kind != "float":
            self.fail(node.span, f"{what} must be a number, got {c.type}")
        return float(c.value)  # type: ignore[arg-type]

    def _const_int(self, node: ast.Expr, what: str, minimum: int | None = None) -> int:
        x = self._const_float(node, what)
        if not float(x).is_integer():
            self.fail(node.span, f"{what} must be a whole number, got {_fmt_num(x)}")
        if minimum is not None and x < minimum:
            self.fail(node.span, f"{what} must be at least {minimum}, got {_fmt_num(x)}")
        return int(x)

    def _physics(self, stmt: ast.Statement | None) -> t.Physics:
        base = self._default_physics()
        values: dict[str, Any] = {name: getattr(base, name) for name in S.PhysicsSettings.by_name()}
        if stmt is None:
            note = "dt is the model's timestep and ctrl_dt the default; set them with `physics dt=... ctrl_dt=...`"
            return self._typed_physics(self._section(S.PhysicsSettings, values, {}, None, "physics", note))
        assert isinstance(stmt, ast.SettingsStmt)
        errors = len(self.sink.diagnostics)
        vals = self._settings(stmt.settings, bi.PHYSICS_SETTINGS, "physics")
        if len(self.sink.diagnostics) > errors:
            raise _Reported
        values |= {bi.PHYSICS_SETTINGS[k].name: v for k, (v, _) in vals.items()}
        return self._typed_physics(self._section(S.PhysicsSettings, values, vals, stmt.span, "physics"))

    @staticmethod
    def _typed_physics(p: S.PhysicsSettings) -> t.Physics:
        return t.Physics(
            dt=p.dt,
            ctrl_dt=p.ctrl_dt,
            substeps=p.substeps,
            solver=p.solver,
            iterations=p.iterations,
            ls_iterations=p.ls_iterations,
        )

    def _override_physics(self, physics: t.Physics) -> t.Physics:
        """`physics` with command-line overrides (validated like the task's own settings)."""
        unknown = sorted(set(self.physics_overrides) - set(S.PhysicsSettings.by_name()))
        if unknown:
            raise InternalCompilerError(f"unknown physics override(s) {unknown}")
        new = dataclasses.replace(physics, **self.physics_overrides)
        values = {name: getattr(new, name) for name in S.PhysicsSettings.by_name()}
        found = S.problems(S.PhysicsSettings, values)
        if found:
            raise KsimError("; ".join(p.describe(f"physics setting '{p.keys[0]}'") for p in found))
        return self._typed_physics(S.PhysicsSettings(**values))

    def _engine(self, stmt: ast.Statement | None) -> str:
        if stmt is None:
            return "auto"
        assert isinstance(stmt, ast.EngineStmt)
        if stmt.engine not in bi.ENGINES:
            self.fail(
                stmt.engine_span,
                f"unknown engine '{stmt.engine}'" + did_you_mean(stmt.engine, bi.ENGINES),
                f"engines: {', '.join(bi.ENGINES)}",
            )
        return stmt.engine

    def _episode(self, stmt: ast.Statement | None) -> int:
        if stmt is None:
            return round(20.0 / self.ctrl_dt)
        assert isinstance(stmt, ast.EpisodeStmt)
        steps = self._duration_steps(stmt.length, "the episode length")
        if steps < 1:
            self.fail(stmt.length.span, "the episode must last at least one control step")
        return steps

    def _curriculum(self, stmt: ast.Statement | None) -> Any:
        if stmt is None:
            return S.CurriculumSettings()
        assert isinstance(stmt, ast.CurriculumStmt)
        table = bi.CURRICULUM_KINDS.get(stmt.kind)
        if table is None:
            self.fail(
                stmt.kind_span,
                f"unknown curriculum '{stmt.kind}'" + did_you_mean(stmt.kind, bi.CURRICULUM_KINDS),
                f"curricula: {', '.join(bi.CURRICULUM_KINDS)}",
            )
        where = f"curriculum {stmt.kind}"
        values: dict[str, Any] = {"kind": stmt.kind}
        if stmt.args:
            if stmt.kind != "constant" or len(stmt.args) > 1:
                self.fail(stmt.args[0].span, f"curriculum {stmt.kind} takes only key=value settings")
            what = "the constant curriculum level"
            values["value"] = self._const_float(stmt.args[0], what)
            self._check_setting(table["value"], values["value"], stmt.args[0].span, what)
        vals = self._settings(stmt.settings, dict(table), where)
        values |= {table[k].name: v for k, (v, _) in vals.items()}
        return self._section(S.CurriculumSettings, values, vals, stmt.span, where)

    def _policy(self, stmt: ast.Statement | None) -> Any:
        if stmt is None:
            return S.PolicySettings()
        assert isinstance(stmt, ast.PolicyStmt)
        if stmt.kind not in bi.POLICY_KINDS:
            self.fail(
                stmt.kind_span,
                f"unknown policy '{stmt.kind}'" + did_you_mean(stmt.kind, bi.POLICY_KINDS),
                f"policies: {', '.join(bi.POLICY_KINDS)}",
            )
        values: dict[str, Any] = {"kind": stmt.kind}
        if stmt.kind == "gru":
            values["hidden"] = (256,)
        vals = self._settings(stmt.settings, bi.POLICY_SETTINGS, "policy")
        for key, (value, _) in vals.items():
            if key == "dist":
                values["dist"], values["mixtures"] = value
            else:
                values[bi.POLICY_SETTINGS[key].name] = value
        return self._section(S.PolicySettings, values, vals, stmt.span, "policy")

    def _train(self, stmt: ast.Statement | None) -> Any:
        if stmt is None:
            return S.TrainSettings()
        assert isinstance(stmt, ast.SettingsStmt)
        vals = self._settings(stmt.settings, bi.TRAIN_SETTINGS, "train")
        values = {bi.TRAIN_SETTINGS[k].name: v for k, (v, _) in vals.items()}
        return self._section(S.TrainSettings, values, vals, stmt.span, "train")

    # ----------------------------------------------------------------- durations

    def _duration_seconds(self, node: ast.Expr, what: str, *, allow_steps: bool = False) -> float:
        """A duration written with a unit (`20ms`, `1s`; `5 steps` if allowed) in seconds."""
        if not isinstance(node, ast.Num):
            self.fail(node.span, f"{what} must be a duration such as 20ms or 1s")
        if node.unit in _TIME_UNITS:
            return node.value * _TIME_UNITS[node.unit]
        if node.unit == "steps" and allow_steps:
            return node.value * self.ctrl_dt
        hint = f"{_fmt_num(node.value)}s" + (f" or {_fmt_num(node.value)} steps" if allow_steps else "")
        if node.unit is None:
            self.fail(node.span, f"{what} needs a unit: write {hint}")
        self.fail(node.span, f"{what} must be a duration, not a value in '{node.unit}'; write {hint}")

    def _duration_steps(self, node: ast.Expr, what: str) -> int:
        """A duration (`20s`, `500ms`, `1000 steps`) as a whole number of control steps."""
        if isinstance(node, ast.Num) and node.unit == "steps":
            if not float(node.value).is_integer():
                self.fail(node.span, f"{what} must be a whole number of steps, got {_fmt_num(node.value)}")
            return int(node.value)
        if isinstance(node, ast.Num) and node.unit is None:
            v = _fmt_num(node.value)
            self.fail(node.span, f"{what} needs a unit: write {v}s or {v} steps")
        seconds = self._duration_seconds(node, what, allow_steps=True)
        return round(seconds / self.ctrl_dt)

    def _duration_or_dist_steps(self, node: ast.Expr, what: str) -> t.Expr:
        """A duration in control steps: a Const, or a scalar Dist of durations (event `every`)."""
        if isinstance(node, ast.Call) and node.func in bi.DISTRIBUTIONS:
            if node.kwargs or not 1 <= len(node.args) <= 2:
                self.fail(node.span, f"{node.func} takes one or two durations")
            params = [t.Const(float(self._duration_steps(a, what)), t.FLOAT, a.span) for a in node.args]
            return self._make_dist(node, params)
        steps = self._duration_steps(node, what)
        if steps < 1:
            self.fail(node.span, f"{what} must be at least one control step")
        return t.Const(float(steps), t.FLOAT, node.span)

    # ----------------------------------------------------------------- actuators

    def _actuators(self, stmt: ast.Statement | None) -> t.Actuators:
        if stmt is not None and not isinstance(stmt, ast.ActuatorsStmt):
            raise InternalCompilerError("actuators statement of the wrong type")
        m = self.m
        if m.nu == 0:
            self.fail(
                stmt.span if stmt is not None else None,
                "the model has no actuators; the policy acts through the MJCF's <actuator> elements",
            )
        kind = "ctrl" if stmt is None else stmt.kind
        if stmt is not None and kind not in bi.ACTUATOR_KINDS:
            self.fail(
                stmt.kind_span,
                f"unknown actuator kind '{kind}'" + did_you_mean(kind, bi.ACTUATOR_KINDS),
                f"actuator kinds: {', '.join(bi.ACTUATOR_KINDS)}",
            )
        self.action_size = m.nu
        names = m.actuator_names
        joints = [m.actuator_joint(a) for a in range(m.nu)]
        joint_names = tuple(m.joint_names[j] if j is not None else "" for j in joints)
        defaults = bi.ACTUATOR_KINDS[kind]
        values: dict[str, float] = {k: v for k, v in defaults.items() if v is not None}
        if stmt is not None:
            for key, (value, _) in self._settings(
                stmt.settings, {k: bi.Setting("float", minimum=0.0) for k in defaults}, f"actuators {kind}"
            ).items():
                values[key] = value
        span = stmt.span if stmt is not None else None
        missing = [k for k, v in defaults.items() if v is None and k not in values]
        if missing:
            self.fail(span, f"actuators {kind} needs {', '.join(k + '=...' for k in missing)}")

        if kind == "position":
            for a, j in enumerate(joints):
                if j is None or j not in m.hinge_slide_joints:
                    self.fail(
                        stmt.kind_span if stmt is not None else None,
                        f"actuators position needs every MJCF actuator to drive a hinge or slide joint; "
                        f"actuator '{names[a]}' does not",
                    )
        kp = [values.get("kp", 0.0)] * m.nu
        kd = [values.get("kd", 0.0)] * m.nu
        latency = zero_offset = None
        if stmt is not None:
            for assign in stmt.overrides:
                self.attempt(self._gain_override, assign, kind, kp, kd, joint_names, names)
            if stmt.latency is not None:
                latency = self.attempt(self._latency, stmt.latency)
            if stmt.zero_offset is not None:
                if kind != "position":
                    self.sink.error(stmt.zero_offset.span, "zero_offset needs `actuators position`")
                else:
                    zero_offset = self.attempt(self._zero_offset, stmt.zero_offset)

        joint_ids = [j if j is not None else -1 for j in joints]
        qpos_adr = tuple(m.jnt_qpos_adr(j) if j >= 0 else -1 for j in joint_ids)
        dof_adr = tuple(m.jnt_dof_adr(j) if j >= 0 else -1 for j in joint_ids)
        limited = [bool(x) for x in m.model.actuator_ctrllimited]
        ctrl_range = None
        if any(limited):
            ctrl_range = tuple(
                (float(lo), float(hi)) if lim else (-math.inf, math.inf)
                for lim, (lo, hi) in zip(limited, m.model.actuator_ctrlrange)
            )
        position = kind == "position"
        return t.Actuators(
            kind=kind,
            names=names,
            joint_names=joint_names,
            joint_qpos_adr=qpos_adr,
            joint_dof_adr=dof_adr,
            kp=tuple(kp) if position else (),
            kd=tuple(kd) if position else (),
            action_scale=float(values.get("action_scale", 1.0)),
            scale=float(values.get("scale", 1.0)),
            default_pos=tuple(m.default_qpos[a] for a in qpos_adr) if position else (),
            ctrl_range=ctrl_range,
            latency=latency,
            zero_offset=zero_offset,
            span=span,
        )

    def _gain_override(
        self,
        assign: ast.Assign,
        kind: str,
        kp: list[float],
        kd: list[float],
        joint_names: tuple[str, ...],
        names: tuple[str, ...],
    ) -> None:
        target = assign.target
        if not (isinstance(target, ast.Index) and isinstance(target.base, ast.Name)):
            self.fail(target.span, 'an actuator override looks like kp["*_knee*"] = 80')
        gain = target.base.id
        if gain not in ("kp", "kd"):
            self.fail(
                target.base.span,
                f"only kp and kd can be set per joint, not '{gain}'" + did_you_mean(gain, ("kp", "kd")),
            )
        if kind != "position":
            self.fail(target.base.span, f"{gain} overrides need `actuators position`")
        if assign.op != "=":
            self.fail(assign.span, f"use `{gain}[...] = value` (not `{assign.op}`)")
        sel = target.index
        if not isinstance(sel, ast.Str):
            self.fail(sel.span, f'select joints by name or glob, e.g. {gain}["*_knee*"]')
        rows = match_names(sel.value, joint_names) or match_names(sel.value, names)
        if not rows:
            self.fail(sel.span, _no_match_message(sel.value, joint_names, "actuated joint"))
        value = self._const_float(assign.value, f"{gain} override")
        if value < 0:
            self.fail(assign.value.span, f"{gain} must not be negative")
        for r in rows:
            (kp if gain == "kp" else kd)[r] = value

    def _latency(self, lat: ast.ActuatorLatency) -> tuple[float, float]:
        rng = _range_units(lat.range)
        hi = self._duration_seconds(rng.hi, "latency", allow_steps=True)
        lo = self._duration_seconds(rng.lo, "latency", allow_steps=True)
        if not 0 <= lo <= hi:
            self.fail(rng.span, "latency lo..hi needs 0 <= lo <= hi")
        if hi > self.ctrl_dt + 1e-12:
            self.fail(
                rng.hi.span,
                f"latency may not exceed one control step (ctrl_dt = {_fmt_num(self.ctrl_dt * 1000)}ms)",
            )
        return (lo, hi)

    def _zero_offset(self, zo: ast.ActuatorZeroOffset) -> t.Dist:
        value = self.expr(zo.dist, _Ctx("zero_offset", allow_dist=True))
        if not isinstance(value, t.Dist):
            self.fail(zo.dist.span, "zero_offset needs a distribution, e.g. gaussian(3deg)")
        self._require_static(value, "zero_offset")
        out = self._fit_shape(value, (self.action_size,), zo.dist.span, "zero_offset")
        assert isinstance(out, t.Dist)
        return out

    # ----------------------------------------------------------------- declarations

    def _declare_names(self, stmts: tuple[ast.Statement, ...]) -> None:
        """Register let, state and command names (with their spans) before typing anything."""
        reserved = set(bi.QUANTITIES) | set(bi.FUNCTIONS) | set(bi.LOOKUPS) | set(bi.DISTRIBUTIONS) | {"cmd", "prev"}
        seen: dict[str, Span] = {}
        for s in stmts:
            if not isinstance(s, (ast.LetStmt, ast.StateStmt)):
                continue
            if s.name in reserved:
                self.sink.error(s.name_span, f"'{s.name}' is a built-in name; choose another name")
                continue
            if s.name in seen:
                self.sink.error(
                    s.name_span, f"'{s.name}' is already defined", f"first defined at line {seen[s.name].line}"
                )
                continue
            seen[s.name] = s.name_span
            if isinstance(s, ast.LetStmt):
                self.lets[s.name] = _LetEntry(s.name_span)
            else:
                size = self.attempt(self._state_size, s)
                if size is None:
                    self.lets[s.name] = _LetEntry(s.name_span, failed=True)  # silence later uses
                    continue
                shape = () if size == 0 else (size,)
                self.states[s.name] = _StateEntry(t.Type("float", shape), s.name_span)
        for s in stmts:
            if isinstance(s, ast.CommandStmt):
                if s.name in self.commands:
                    self.sink.error(s.name_span, f"command '{s.name}' is already defined")
                    continue
                self.commands[s.name] = tuple(f.name for f in s.fields)

    def _state_size(self, s: ast.StateStmt) -> int:
        if s.size is None:
            return 0
        return self._const_int(s.size, f"the size of state '{s.name}'", minimum=1)

    def _let(self, s: ast.LetStmt) -> None:
        entry = self.lets.get(s.name)
        if entry is None or entry.span != s.name_span:
            return  # a duplicate or a reserved name, already reported
        try:
            value = self.expr(s.value, _Ctx(f"let '{s.name}'"))
        except _Reported:
            entry.failed = True
            return
        entry.value = value
        self.let_defs.append(t.LetDef(s.name, value, s.span))

    def _state(self, s: ast.StateStmt) -> t.StateDef | None:
        entry = self.states.get(s.name)
        if entry is None or entry.span != s.name_span:
            return None
        shape = entry.type.shape
        init = self.attempt(self._state_init, s, shape)
        update = self.attempt(self._state_update, s, entry.type)
        if init is None or update is None:
            return None
        return t.StateDef(s.name, entry.type, init, update, s.span)

    def _state_init(self, s: ast.StateStmt, shape: tuple[int, ...]) -> t.Expr:
        what = f"the initial value of state '{s.name}'"
        init = self._float(self.expr(s.init, _Ctx(what, allow_dist=True)))
        self._require_static(init, what)
        return self._fit_shape(init, shape, s.init.span, what)

    def _state_update(self, s: ast.StateStmt, typ: t.Type) -> t.Expr:
        what = f"the update of state '{s.name}'"
        update = self._float(self.expr(s.update, _Ctx(what, state_update=True)))
        if update.type.shape != typ.shape:
            self.fail(s.update.span, f"state '{s.name}' is {typ} but its update is {update.type}")
        return update

    def _command(self, s: ast.CommandStmt) -> t.CommandDef:
        if not s.fields:
            self.fail(s.name_span, f"command '{s.name}' needs at least one field")
        resample = None
        if s.resample_every is not None:
            resample = self._duration_steps(s.resample_every, "resample every")
            if resample < 1:
                self.fail(s.resample_every.span, "resample every must be at least one control step")
        vals = self._settings(s.settings, dict(bi.COMMAND_SETTINGS), "command")
        zero_prob = float(vals["zero_prob"][0]) if "zero_prob" in vals else 0.0
        if zero_prob > 1.0:
            self.fail(vals["zero_prob"][1].value.span, "zero_prob is a probability in [0, 1]")
        fields = []
        self._check_unique([(f.name, f.name_span) for f in s.fields], f"field of command '{s.name}'")
        for f in s.fields:
            what = f"command field '{s.name}.{f.name}'"
            value = self.attempt(self._command_field, f, what)
            if value is not None:
                fields.append(t.CommandFieldDef(f.name, value, f.span))
        if len(fields) != len(s.fields):
            raise _Reported
        return t.CommandDef(s.name, tuple(fields), resample, zero_prob, s.span)

    def _command_field(self, f: ast.CommandField, what: str) -> t.Expr:
        value = self._float(self.expr(f.dist, _Ctx(what, allow_dist=True)))
        self._require_static(value, what)
        if not value.type.is_scalar:
            self.fail(f.dist.span, f"{what} must be a scalar, got {value.type}")
        return value

    def _check_unique(self, items: Iterable[tuple[str, Span | None]], what: str) -> None:
        seen: dict[str, Span | None] = {}
        for name, span in items:
            if name in seen:
                first = seen[name]
                self.sink.error(span, f"duplicate {what} '{name}'", *([f"first at line {first.line}"] if first else []))
            else:
                seen[name] = span

    # ----------------------------------------------------------------- observations, rewards, terminations

    def _observe(self, stmt: ast.Statement | None, actor: tuple[t.ObsItem, ...] | None) -> tuple[t.ObsItem, ...]:
        group = "actor" if actor is None else "critic"
        if stmt is None:
            if actor is None:
                self.sink.error(None, "missing `observe actor` block; the policy needs at least one observation")
                return ()
            return tuple(t.ObsItem(o.name, o.value, span=o.span) for o in actor)
        assert isinstance(stmt, ast.ObserveStmt)
        out: list[t.ObsItem] = []
        names: list[tuple[str, Span | None]] = []
        for item in stmt.items:
            if isinstance(item, ast.ObsInclude):
                if actor is None or item.group != "actor":
                    self.sink.error(item.span, "only `observe critic` can include `actor`")
                    continue
                out.extend(t.ObsItem(o.name, o.value, span=item.span) for o in actor)
                names.extend((o.name, item.span) for o in actor)
                continue
            names.append((item.name, item.name_span))
            obs = self.attempt(self._obs_item, item, group)
            if obs is not None:
                out.append(obs)
        self._check_unique(names, f"{group} observation")
        if not out and group == "actor" and not self.sink.diagnostics:
            self.sink.error(stmt.span, "`observe actor` needs at least one observation")
        return tuple(out)

    def _obs_item(self, item: ast.ObsItem, group: str) -> t.ObsItem:
        what = f"observation '{item.name}'"
        value = self._float(self.expr(item.value, _Ctx(what)))
        noise = bias = delay = None
        multiplicative = False
        if group == "critic" and (item.noise or item.bias or item.delay):
            span = (item.noise or item.bias or item.delay).span  # type: ignore[union-attr]
            self.fail(span, "the critic sees clean values; noise, bias and delay belong in `observe actor`")
        if item.noise is not None:
            noise = self._obs_dist(item.noise.dist, value.type.shape, f"the noise of {what}")
            multiplicative = item.noise.multiplicative
        if item.bias is not None:
            bias = self._obs_dist(item.bias, value.type.shape, f"the bias of {what}")
        if item.delay is not None:
            rng = item.delay
            if any(isinstance(n, ast.Num) and n.unit in _TIME_UNITS for n in (rng.lo, rng.hi)):
                self.fail(rng.span, "delay is a count of control steps, not a time; write e.g. `delay 0..2`")
            lo = self._step_count(rng.lo, "delay")
            hi = self._step_count(rng.hi, "delay")
            if lo > hi:
                self.fail(item.delay.span, "delay lo..hi needs lo <= hi")
            delay = (lo, hi)
        return t.ObsItem(item.name, value, noise, multiplicative, bias, delay, item.span)

    def _obs_dist(self, call: ast.Call, shape: tuple[int, ...], what: str) -> t.Dist:
        if call.func not in bi.DISTRIBUTIONS:
            self.fail(call.func_span, f"{what} must be a distribution, uniform(...) or gaussian(...)")
        dist = self.expr(call, _Ctx(what, allow_dist=True))
        self._require_static(dist, what)
        out = self._fit_shape(dist, shape, call.span, what)
        assert isinstance(out, t.Dist)
        return out

    def _step_count(self, node: ast.Expr, what: str) -> int:
        if isinstance(node, ast.Num) and node.unit == "steps":
            node = dataclasses.replace(node, unit=None)
        return self._const_int(node, what, minimum=0)

    def _rewards(self, stmt: ast.Statement | None) -> tuple[t.RewardDef, ...]:
        if stmt is None or not stmt.terms:  # type: ignore[union-attr]
            self.sink.error(
                stmt.span if stmt is not None else None,
                "the task has no reward; add a `reward` block with at least one term",
            )
            return ()
        assert isinstance(stmt, ast.RewardStmt)
        self._check_unique([(r.name, r.name_span) for r in stmt.terms], "reward")
        return self.each(self._reward, stmt.terms)

    def _reward(self, r: ast.RewardTerm) -> t.RewardDef:
        weight = self.attempt(self._reward_weight, r)
        value = self._float(self.expr(r.value, _Ctx(f"reward '{r.name}'")))
        if not value.type.is_scalar:
            self.fail(
                r.value.span,
                f"reward '{r.name}' must be a scalar, got {value.type}; wrap it in sum(...) or norm(...)",
            )
        if weight is None:
            raise _Reported
        return t.RewardDef(r.name, weight, value, r.span)

    def _reward_weight(self, r: ast.RewardTerm) -> t.Expr:
        what = f"the weight of reward '{r.name}'"
        weight = self._float(self.expr(r.weight, _Ctx(what)))
        self._require_static(weight, what, dists=False)
        if not weight.type.is_scalar:
            self.fail(r.weight.span, f"{what} must be a scalar, got {weight.type}")
        return weight

    def _terminations(self, stmt: ast.Statement | None) -> tuple[t.TerminationDef, ...]:
        if stmt is None:
            return ()
        assert isinstance(stmt, ast.TerminateStmt)
        self._check_unique([(x.name, x.name_span) for x in stmt.terms], "termination")
        return self.each(self._termination, stmt.terms)

    def _termination(self, term: ast.TerminationTerm) -> t.TerminationDef:
        cond = self.expr(term.cond, _Ctx(f"termination '{term.name}'"))
        if cond.type.kind != "bool":
            self.fail(
                term.cond.span,
                f"termination '{term.name}' must be a condition (bool), got {cond.type}; compare it, e.g. x > 1",
            )
        if not cond.type.is_scalar:
            self.fail(
                term.cond.span,
                f"termination '{term.name}' must be a single bool, got {cond.type}; wrap it in any(...) or all(...)",
            )
        return t.TerminationDef(term.name, cond, term.success, term.span)

    # ----------------------------------------------------------------- randomize, reset, events

    def _randomize(self, stmt: ast.Statement | None) -> tuple[t.RandomizeDef, ...]:
        if stmt is None:
            return ()
        assert isinstance(stmt, ast.RandomizeStmt)
        return self.each(self._randomizer, stmt.assigns)

    def _randomizer(self, a: ast.Assign) -> t.RandomizeDef:
        target, sel = a.target, None
        if isinstance(target, ast.Index):
            target, sel = target.base, target.index
        if not isinstance(target, ast.Name):
            self.fail(
                a.target.span,
                'randomize a model field, e.g. `geom_friction *= uniform(0.5, 2)` or body_mass["torso"]',
            )
        fields = self.m.array_fields
        name = target.id
        if name not in fields:
            self.fail(target.span, f"'{name}' is not an MjModel field" + did_you_mean(name, fields))
        array = getattr(self.m.model, name)
        if array.ndim == 0 or array.shape[0] == 0:
            self.fail(target.span, f"model field '{name}' is empty in this model")
        nrows = int(array.shape[0])
        kind = next((k for prefix, k in OBJECT_KINDS.items() if name.startswith(prefix)), None)
        rows: tuple[int, ...] = tuple(range(nrows))
        if sel is not None:
            if isinstance(sel, ast.Str):
                if kind is None:
                    self.fail(sel.span, f"the rows of '{name}' have no names; select them by index")
                names = self.m.names_of(kind)
                if len(names) != nrows:
                    self.fail(sel.span, f"the rows of '{name}' are not one per {kind}; select them by index")
                rows = match_names(sel.value, names)
                if not rows:
                    self.fail(sel.span, _no_match_message(sel.value, names, kind))
            else:
                rows = self._select(rows, (), sel, f"'{name}'", "row")[0]
        if a.op not in ("=", "+=", "*="):
            self.fail(a.span, f"unknown operator '{a.op}'")
        what = f"randomize {name}"
        value = self._float(self.expr(a.value, _Ctx(what, allow_dist=True)))
        self._require_static(value, what)
        if not value.type.is_scalar:
            self.fail(
                a.value.span,
                f"{what} needs a scalar value (drawn once per selected row), got {value.type}",
            )
        value = self._broadcast_dists(value, (len(rows),))
        return t.RandomizeDef(name, rows, tuple(int(d) for d in array.shape), a.op, value, a.span)

    def _writes(self, assigns: tuple[ast.Assign, ...], block: str) -> tuple[t.Write, ...]:
        return self.each(lambda a: self._write(a, block), assigns)

    def _write_base(self, name: ast.Name, block: str) -> tuple[str, tuple[int, ...], tuple[str, ...]]:
        """(target, index, labels) of a reset/event target name, before selection."""
        m = self.m
        n = name.id
        joints = m.hinge_slide_joints
        if n == "joint_pos":
            return "qpos", tuple(m.jnt_qpos_adr(j) for j in joints), tuple(m.joint_names[j] for j in joints)
        if n == "joint_vel":
            return "qvel", tuple(m.jnt_dof_adr(j) for j in joints), tuple(m.joint_names[j] for j in joints)
        if n == "qpos":
            return "qpos", tuple(range(m.nq)), m.qpos_labels
        if n == "qvel":
            return "qvel", tuple(range(m.nv)), m.dof_names
        if n in bi.RESET_TARGETS:
            root = self._root(n, name.span)
            if n == "base_pos":
                return "qpos", tuple(range(root.qpos_adr, root.qpos_adr + 3)), ()
            if n == "base_quat":
                return "qpos", tuple(range(root.qpos_adr + 3, root.qpos_adr + 7)), ()
            if n == "base_lin_vel":
                return "qvel", tuple(range(root.dof_adr, root.dof_adr + 3)), ()
            if n == "base_ang_vel":
                return "base_ang_vel", (0, 1, 2), ()
            if n == "base_yaw":
                return "base_yaw", (), ()
        self.fail(
            name.span,
            f"cannot assign to '{n}' in {block}" + did_you_mean(n, bi.RESET_TARGETS),
            f"{block} targets: {', '.join(bi.RESET_TARGETS)}",
        )

    def _write(self, a: ast.Assign, block: str) -> t.Write:
        # Peel selections off the target: base_lin_vel.xy, joint_pos["hip_*"], qpos[7:]
        chain: list[ast.Expr] = []
        node = a.target
        while isinstance(node, (ast.Attr, ast.Index)):
            chain.append(node)
            node = node.base
        if not isinstance(node, ast.Name):
            self.fail(a.target.span, f"a {block} target is a state quantity such as joint_pos or base_lin_vel.xy")
        target, index, labels = self._write_base(node, block)
        scalar = target == "base_yaw"
        if chain and scalar:
            self.fail(chain[-1].span, "base_yaw is a scalar; it cannot be indexed")
        for sel_node in reversed(chain):
            if isinstance(sel_node, ast.Attr):
                positions, scalar = self._swizzle(len(index), sel_node.name, sel_node.name_span, node.id)
            else:
                assert isinstance(sel_node, ast.Index)
                positions, scalar = self._select_positions(len(index), labels, sel_node.index, node.id, "joint")
            index = tuple(index[p] for p in positions)
            labels = tuple(labels[p] for p in positions) if labels else ()
            if scalar and sel_node is not chain[0]:
                self.fail(sel_node.span, "cannot select from a single element")
        if a.op not in ("=", "+=", "*="):
            self.fail(a.span, f"unknown operator '{a.op}'")
        if target == "base_yaw" and a.op == "*=":
            self.fail(a.span, "base_yaw takes `=` (set the heading) or `+=` (turn), not `*=`")
        what = f"{block} {node.id}"
        value = self._float(self.expr(a.value, _Ctx(what, allow_dist=True)))
        if block == "reset":
            self._require_reset(value)
        shape = () if scalar else (len(index),)
        value = self._fit_shape(value, shape, a.value.span, what)
        return t.Write(target, index, a.op, value, a.span)

    def _event(self, s: ast.EventStmt) -> t.EventDef:
        every = self._duration_or_dist_steps(s.every, f"event '{s.name}' every")
        writes = self._writes(s.assigns, "event")
        if len(writes) != len(s.assigns):
            raise _Reported
        if not writes:
            self.fail(s.name_span, f"event '{s.name}' changes nothing; add assignments below it")
        return t.EventDef(s.name, every, writes, s.span)

    # ----------------------------------------------------------------- shape plumbing

    def _float(self, e: t.Expr) -> t.Expr:
        """`e` as float (bools are cast)."""
        if e.type.kind == "bool":
            if isinstance(e, t.Const):
                return t.Const(e.value, e.type.with_kind("float"), e.span)
            return t.Cast(e, e.type.with_kind("float"), e.span)
        return e

    def _fit_shape(self, value: t.Expr, shape: tuple[int, ...], span: Span, what: str) -> t.Expr:
        """`value` (scalar or of `shape`) with scalar distributions drawn per element of `shape`."""
        if value.type.shape not in ((), shape):
            want = "a scalar" if shape == () else f"a scalar or vector[{shape[0]}]"
            self.fail(span, f"{what} needs {want}, got {value.type}")
        return self._broadcast_dists(value, shape)

    def _broadcast_dists(self, e: t.Expr, shape: tuple[int, ...]) -> t.Expr:
        """Give scalar Dists (outside reductions) the context `shape`, re-typing elementwise parents."""
        if shape == ():
            return e
        if isinstance(e, t.Dist):
            return dataclasses.replace(e, type=e.type.with_shape(shape)) if e.type.is_scalar else e
        if isinstance(e, t.Unary):
            op = self._broadcast_dists(e.operand, shape)
            return dataclasses.replace(e, operand=op, type=e.type.with_shape(op.type.shape))
        if isinstance(e, t.Cast):
            op = self._broadcast_dists(e.operand, shape)
            return dataclasses.replace(e, operand=op, type=e.type.with_shape(op.type.shape))
        if isinstance(e, (t.Binary, t.Compare)):
            left = self._broadcast_dists(e.left, shape)
            right = self._broadcast_dists(e.right, shape)
            out_shape = left.type.shape or right.type.shape
            return dataclasses.replace(e, left=left, right=right, type=e.type.with_shape(out_shape))
        if isinstance(e, t.Apply) and bi.FUNCTIONS.get(e.func, None) is not None:
            if bi.FUNCTIONS[e.func].rule in ("elementwise", "minmax") and e.func not in ("reduce_min", "reduce_max"):
                args = tuple(self._broadcast_dists(a, shape) for a in e.args)
                out_shape = next((a.type.shape for a in args if a.type.shape), ())
                return dataclasses.replace(e, args=args, type=e.type.with_shape(out_shape))
        return e

    def _broadcast_shape(self, a: t.Type, b: t.Type, op: str, span: Span) -> tuple[int, ...]:
        if a.shape == b.shape or b.is_scalar:
            return a.shape
        if a.is_scalar:
            return b.shape
        self.fail(span, f"elementwise '{op}' needs equal lengths or a scalar, got {a} and {b}")

    # ----------------------------------------------------------------- context restrictions

    def _first_dynamic(self, e: t.Expr, allowed_arrays: frozenset[str]) -> t.Expr | None:
        """The outermost named node (let, quantity) or leaf that reads what `allowed_arrays` does not allow."""

        def bad(n: t.Expr) -> bool:
            if isinstance(n, t.PhysRead):
                return n.array not in allowed_arrays
            return isinstance(n, (t.Action, t.StateRef, t.CommandRef, t.Prev))

        def find(n: t.Expr) -> t.Expr | None:
            if bad(n):
                return n
            for c in t.children(n):
                hit = find(c)
                if hit is not None:
                    return n if isinstance(n, (t.Let, t.Quantity)) else hit
            return None

        return find(e)

    def _describe(self, n: t.Expr) -> str:
        if isinstance(n, t.Let):
            return f"'{n.name}'"
        if isinstance(n, t.Quantity):
            if n.arg is None:
                return f"'{n.name}'"
            return f"{n.name}({n.arg})" if n.name in ("contact", "contact_force") else f'{n.name}("{n.arg}")'
        if isinstance(n, t.StateRef):
            return f"state '{n.name}'"
        if isinstance(n, t.CommandRef):
            return f"cmd.{n.name}"
        if isinstance(n, t.Prev):
            return "prev(...)"
        if isinstance(n, t.Action):
            return "'action'"
        return "the simulation state"

    def _require_static(self, e: t.Expr, what: str, *, dists: bool = True) -> None:
        """`e` may use only constants, `level` (and distributions where `dists`)."""
        hit = self._first_dynamic(e, frozenset())
        if hit is not None:
            allowed = "numbers, `level` and distributions" if dists else "numbers and `level`"
            self.fail(hit.span, f"{what} may use only {allowed}; {self._describe(hit)} changes during an episode")

    def _require_reset(self, e: t.Expr) -> None:
        hit = self._first_dynamic(e, frozenset({"qpos", "qvel"}))
        if hit is not None:
            self.fail(
                hit.span,
                f"{self._describe(hit)} is not available in reset; reset values may use numbers, level, "
                "distributions and the default pose (qpos, qvel, joint_pos, base_pos, ...)",
            )

    # ----------------------------------------------------------------- expressions

    def expr(self, node: ast.Expr, ctx: _Ctx) -> t.Expr:
        """Type one expression (raises _Reported after recording an error)."""
        if isinstance(node, ast.Num):
            return self._num(node)
        if isinstance(node, ast.Name):
            return self._name(node, ctx)
        if isinstance(node, ast.Attr):
            return self._attr(node, ctx)
        if isinstance(node, ast.Index):
            return self._index(node, ctx)
        if isinstance(node, ast.Call):
            return self._call(node, ctx)
        if isinstance(node, ast.Vector):
            return self._vector(node, ctx)
        if isinstance(node, ast.Unary):
            return self._unary(node, ctx)
        if isinstance(node, ast.Binary):
            return self._binary(node, ctx)
        if isinstance(node, ast.Str):
            self.fail(
                node.span,
                'a string is not a value; strings name model objects, as in sensor("imu") or joint_pos["knee_*"]',
            )
        if isinstance(node, ast.Range):
            self.fail(node.span, "a range lo..hi is only allowed after `latency` and `delay`")
        raise InternalCompilerError(
            f"unknown expression node {type(node).__name__}", getattr(node, "span", None), self.source
        )

    def _num(self, node: ast.Num) -> t.Const:
        if node.unit is None:
            return t.Const(float(node.value), t.FLOAT, node.span)
        if node.unit == "deg":
            return t.Const(math.radians(node.value), t.FLOAT, node.span)
        if node.unit in _TIME_UNITS:
            return t.Const(node.value * _TIME_UNITS[node.unit], t.FLOAT, node.span)
        if node.unit == "steps":
            self.fail(node.span, "a count of steps is only allowed where a duration is due (episode, every, delay)")
        raise InternalCompilerError(f"unknown unit {node.unit!r}", node.span, self.source)

    def _name(self, node: ast.Name, ctx: _Ctx) -> t.Expr:
        n = node.id
        here = (node.span.line, node.span.col)
        if n in self.lets:
            entry = self.lets[n]
            if entry.failed:
                raise _Reported
            if (entry.span.line, entry.span.col) > here:
                self.fail(node.span, f"'{n}' is used before its `let` (line {entry.span.line})")
            if entry.value is None:
                self.fail(node.span, f"'{n}' is used in its own definition")
            return t.Let(n, entry.value, entry.value.type, node.span)
        if n in self.states:
            st = self.states[n]
            if not ctx.state_update and (st.span.line, st.span.col) > here:
                self.fail(node.span, f"state '{n}' is used before its declaration (line {st.span.line})")
            return t.StateRef(n, st.type, node.span)
        if n in bi.QUANTITIES:
            return self._quantity(n, node.span)
        if n == "cmd":
            self.fail(node.span, "write cmd.NAME for a command", self._commands_note())
        if n in bi.FUNCTIONS or n in bi.LOOKUPS or n in bi.DISTRIBUTIONS or n == "prev":
            self.fail(node.span, f"'{n}' is a function; call it as {n}(...)")
        candidates = [*bi.QUANTITIES, *self.lets, *self.states, "cmd"]
        self.fail(node.span, f"unknown name '{n}'" + did_you_mean(n, candidates))

    def _commands_note(self) -> str:
        return f"commands: {', '.join(self.commands)}" if self.commands else "the task declares no command"

    # ..................................................................... quantities

    def _root(self, name: str, span: Span) -> t.FreeRoot:
        if self.m.root is None:
            self.fail(
                span,
                f"'{name}' needs a root free joint, but the model has no free root joint; "
                'use body_pos("...") and friends, or joint_pos',
            )
        return self.m.root

    def _read(self, array: str, elements: Iterable[tuple[int, ...]], span: Span, scalar: bool = False) -> t.PhysRead:
        elements = tuple(elements)
        shape = () if scalar else (len(elements),)
        return t.PhysRead(array, elements, t.Type("float", shape), span)

    def _quantity(self, name: str, span: Span) -> t.Expr:
        m = self.m
        joints = m.hinge_slide_joints
        joint_labels = tuple(m.joint_names[j] for j in joints)
        value: t.Expr
        labels: tuple[str, ...] = ()
        if name == "level":
            return t.Level(t.FLOAT, span)
        if name == "action":
            return t.Action(t.Type("float", (self.action_size,)), span)
        if name == "ctrl_dt":
            return t.Const(self.ctrl_dt, t.FLOAT, span)
        if name == "time":
            value = self._read("time", [()], span, scalar=True)
            return t.Quantity(name, None, value, value.type, (), span)
        if name == "qpos":
            value, labels = self._read("qpos", ((i,) for i in range(m.nq)), span), m.qpos_labels
        elif name in ("qvel", "qacc"):
            value, labels = self._read(name, ((i,) for i in range(m.nv)), span), m.dof_names
        elif name == "joint_pos":
            value, labels = self._read("qpos", ((m.jnt_qpos_adr(j),) for j in joints), span), joint_labels
        elif name in ("joint_vel", "joint_acc"):
            array = "qvel" if name == "joint_vel" else "qacc"
            value, labels = self._read(array, ((m.jnt_dof_adr(j),) for j in joints), span), joint_labels
        elif name == "actuator_force":
            value, labels = self._read("actuator_force", ((i,) for i in range(m.nu)), span), m.actuator_names
        elif name == "default_joint_pos":
            vals = tuple(m.default_qpos[m.jnt_qpos_adr(j)] for j in joints)
            value, labels = t.Const(vals, t.Type("float", (len(vals),)), span), joint_labels
        elif name in ("joint_lower", "joint_upper"):
            side = 0 if name == "joint_lower" else 1
            vals = tuple(_joint_limits(m, j)[side] for j in joints)
            value, labels = t.Const(vals, t.Type("float", (len(vals),)), span), joint_labels
        elif name == "com_inertia":
            value = self._read("cinert", ((b, k) for b in range(1, m.nbody) for k in range(10)), span)
        elif name == "com_vel":
            value = self._read("cvel", ((b, k) for b in range(1, m.nbody) for k in range(6)), span)
        elif name in bi.ROOT_QUANTITIES:
            value = self._root_quantity(name, self._root(name, span), span)
        else:
            raise InternalCompilerError(f"built-in quantity {name!r} has no definition", span, self.source)
        if not value.type.shape or value.type.shape[0] == 0:
            self.fail(span, f"'{name}' is empty for this model")
        return t.Quantity(name, None, value, value.type, labels, span)

    def _root_quantity(self, name: str, root: t.FreeRoot, span: Span) -> t.Expr:
        q, d = root.qpos_adr, root.dof_adr
        vec3 = t.Type("float", (3,))
        pos = self._read("qpos", ((i,) for i in range(q, q + 3)), span)
        quat = self._read("qpos", ((i,) for i in range(q + 3, q + 7)), span)
        lin = self._read("qvel", ((i,) for i in range(d, d + 3)), span)
        ang_local = self._read("qvel", ((i,) for i in range(d + 3, d + 6)), span)
        if name == "base_pos":
            return pos
        if name == "base_quat":
            return quat
        if name == "base_lin_vel":
            return lin
        if name == "local_ang_vel":
            return ang_local
        if name == "base_ang_vel":
            return t.Apply("quat_rotate", (quat, ang_local), vec3, span=span)
        if name == "local_lin_vel":
            return t.Apply("quat_rotate_inv", (quat, lin), vec3, span=span)
        if name == "base_lin_acc":
            return self._read("qacc", ((i,) for i in range(d, d + 3)), span)
        if name == "base_ang_acc":
            acc = self._read("qacc", ((i,) for i in range(d + 3, d + 6)), span)
            return t.Apply("quat_rotate", (quat, acc), vec3, span=span)
        if name == "projected_gravity":
            down = t.Const((0.0, 0.0, -1.0), vec3, span)
            return t.Apply("quat_rotate_inv", (quat, down), vec3, span=span)
        raise InternalCompilerError(f"root quantity {name!r} has no definition", span, self.source)

    # ..................................................................... selection

    def _labels(self, e: t.Expr) -> tuple[str, ...]:
        """MJCF names of the elements of `e`, or () when unknown."""
        if isinstance(e, t.Quantity):
            return e.labels
        if isinstance(e, (t.Let,)):
            return self._labels(e.value)
        if isinstance(e, (t.Prev,)):
            return self._labels(e.expr)
        if isinstance(e, t.Cast):
            return self._labels(e.operand)
        if isinstance(e, t.Action):
            return tuple(self.m.actuator_names)
        if isinstance(e, t.CommandRef):
            return self.commands.get(e.name, ())
        if isinstance(e, t.Gather):
            base = self._labels(e.base)
            return tuple(base[i] for i in e.indices) if base else ()
        if isinstance(e, (t.Binary, t.Compare, t.Unary)):
            parts = (e.operand,) if isinstance(e, t.Unary) else (e.left, e.right)
            for p in parts:
                if p.type.shape == e.type.shape and e.type.shape:
                    labels = self._labels(p)
                    if labels:
                        return labels
        return ()

    def _label_kind(self, e: t.Expr) -> str:
        """What the labels of `e` name ("joint", "actuator", "field"), for messages."""
        while True:
            if isinstance(e, t.Let):
                e = e.value
            elif isinstance(e, t.Prev):
                e = e.expr
            elif isinstance(e, t.Cast):
                e = e.operand
            elif isinstance(e, t.Gather):
                e = e.base
            else:
                break
        if isinstance(e, t.Quantity):
            return _LABEL_KINDS.get(e.name, "element")
        if isinstance(e, t.CommandRef):
            return "field"
        if isinstance(e, t.Action):
            return "actuator"
        return "element"

    def _swizzle(self, length: int, letters: str, span: Span, what: str) -> tuple[tuple[int, ...], bool]:
        if not letters or any(c not in bi.SWIZZLE for c in letters) or len(letters) > 4:
            self.fail(span, f"unknown field '.{letters}' of {what}; swizzles are made of x, y, z, w")
        positions = tuple(bi.SWIZZLE[c] for c in letters)
        need = max(positions) + 1
        if length == 0:
            self.fail(span, f"'.{letters}' selects from a vector, but {what} is a scalar")
        if need > length:
            self.fail(span, f"'.{letters}' needs a vector of at least {need} elements, got vector[{length}]")
        return positions, len(letters) == 1

    def _select_positions(
        self, length: int, labels: tuple[str, ...], sel: ast.Expr | ast.Slice, what: str, kind: str
    ) -> tuple[tuple[int, ...], bool]:
        """Positions selected by `["glob"]`, `[i]` or `[i:j]` in a vector of `length`; (positions, scalar)."""
        if isinstance(sel, ast.Str):
            if not labels:
                self.fail(
                    sel.span,
                    f"cannot select from {what} by name; name selection works on joint_pos, joint_vel, qpos, qvel, "
                    "actuator_force, action, default_joint_pos, joint_lower, joint_upper and commands",
                )
            positions = match_names(sel.value, labels)
            if not positions:
                self.fail(sel.span, _no_match_message(sel.value, labels, kind))
            single = not is_glob(sel.value) and len(positions) == 1
            return positions, single
        if isinstance(sel, ast.Slice):
            lo = 0 if sel.lo is None else self._const_int(sel.lo, "a slice bound")
            hi = length if sel.hi is None else self._const_int(sel.hi, "a slice bound")
            lo2 = lo + length if lo < 0 else lo
            hi2 = hi + length if hi < 0 else hi
            if not (0 <= lo2 < hi2 <= length):
                self.fail(sel.span, f"slice {lo}:{hi} is empty or out of range for {what} (vector[{length}])")
            return tuple(range(lo2, hi2)), False
        i = self._const_int(sel, "an index")
        j = i + length if i < 0 else i
        if not 0 <= j < length:
            self.fail(sel.span, f"index {i} is out of range for {what} (vector[{length}])")
        return (j,), True

    def _select(
        self, indices: tuple[int, ...], labels: tuple[str, ...], sel: ast.Expr | ast.Slice, what: str, kind: str
    ) -> tuple[tuple[int, ...], bool]:
        positions, scalar = self._select_positions(len(indices), labels, sel, what, kind)
        return tuple(indices[p] for p in positions), scalar

    def _gather(self, base: t.Expr, positions: tuple[int, ...], scalar: bool, span: Span) -> t.Expr:
        typ = base.type.with_shape(() if scalar else (len(positions),))
        if isinstance(base, t.Const):
            vals = tuple(base.values[p] for p in positions)
            return t.Const(vals[0] if scalar else vals, typ, span)
        return t.Gather(base, positions, typ, span)

    def _attr(self, node: ast.Attr, ctx: _Ctx) -> t.Expr:
        if isinstance(node.base, ast.Name) and node.base.id == "cmd" and "cmd" not in self.lets:
            if node.name not in self.commands:
                self.fail(
                    node.name_span,
                    f"unknown command '{node.name}'" + did_you_mean(node.name, self.commands),
                    self._commands_note(),
                )
            size = len(self.commands[node.name])
            return t.CommandRef(node.name, t.Type("float", (size,)), node.span)
        base = self.expr(node.base, ctx)
        fields = self._labels(base) if isinstance(base, t.CommandRef) else ()
        if node.name in fields:
            return self._gather(base, (fields.index(node.name),), True, node.span)
        length = base.type.shape[0] if base.type.shape else 0
        positions, scalar = self._swizzle(length, node.name, node.name_span, self._what(node.base))
        return self._gather(base, positions, scalar, node.span)

    def _what(self, node: ast.Expr) -> str:
        if isinstance(node, ast.Name):
            return f"'{node.id}'"
        if isinstance(node, ast.Attr):
            return f"'{self._what(node.base).strip(chr(39))}.{node.name}'"
        return "this expression"

    def _index(self, node: ast.Index, ctx: _Ctx) -> t.Expr:
        base = self.expr(node.base, ctx)
        if base.type.is_scalar:
            self.fail(node.span, f"cannot index {self._what(node.base)}: it is a {base.type}")
        positions, scalar = self._select_positions(
            base.type.shape[0], self._labels(base), node.index, self._what(node.base), self._label_kind(base)
        )
        return self._gather(base, positions, scalar, node.span)

    def _vector(self, node: ast.Vector, ctx: _Ctx) -> t.Expr:
        if not node.items:
            self.fail(node.span, "an empty vector has no use")
        items = [self.expr(i, ctx) for i in node.items]
        kinds = {i.type.kind for i in items}
        if kinds == {"bool"}:
            kind = "bool"
        else:
            kind = "float"
            items = [self._float(i) for i in items]
        size = sum(i.type.size for i in items)
        typ = t.Type(kind, (size,))
        if all(isinstance(i, t.Const) for i in items):
            return t.Const(tuple(v for i in items for v in i.values), typ, node.span)  # type: ignore[union-attr]
        return t.Concat(tuple(items), typ, node.span)

    # ..................................................................... operators

    def _unary(self, node: ast.Unary, ctx: _Ctx) -> t.Expr:
        operand = self.expr(node.operand, ctx)
        if node.op == "not":
            if operand.type.kind != "bool":
                self.fail(node.operand.span, f"`not` needs a bool, got {operand.type}")
            if isinstance(operand, t.Const):
                return t.Const(self._map_const(operand, lambda x: 1.0 - x), operand.type, node.span)
            return t.Logic("not", (operand,), operand.type, node.span)
        if node.op == "-":
            if operand.type.kind == "bool":
                self.fail(node.operand.span, "cannot negate a bool; use `not`")
            if isinstance(operand, t.Const):
                return t.Const(self._map_const(operand, lambda x: -x), operand.type, node.span)
            return t.Unary("-", operand, operand.type, node.span)
        raise InternalCompilerError(f"unknown unary operator {node.op!r}", node.span, self.source)

    @staticmethod
    def _map_const(c: t.Const, f: Callable[[float], float]) -> float | tuple[float, ...]:
        return tuple(f(v) for v in c.value) if isinstance(c.value, tuple) else f(c.value)

    def _binary(self, node: ast.Binary, ctx: _Ctx) -> t.Expr:
        left = self.expr(node.left, ctx)
        right = self.expr(node.right, ctx)
        op = node.op
        if op in ("and", "or"):
            for side, e in ((node.left, left), (node.right, right)):
                if e.type.kind != "bool":
                    self.fail(side.span, f"`{op}` needs bools, got {e.type}; compare it first, e.g. x > 0")
            shape = self._broadcast_shape(left.type, right.type, op, node.span)
            return t.Logic(op, (left, right), t.Type("bool", shape), node.span)
        if op in ("<", "<=", ">", ">=", "==", "!="):
            left, right = self._float(left), self._float(right)
            shape = self._broadcast_shape(left.type, right.type, op, node.span)
            return t.Compare(op, left, right, t.Type("bool", shape), node.span)
        if op in ("+", "-", "*", "/", "^"):
            left, right = self._float(left), self._float(right)
            shape = self._broadcast_shape(left.type, right.type, op, node.span)
            typ = t.Type("float", shape)
            if isinstance(left, t.Const) and isinstance(right, t.Const):
                return self._fold(op, left, right, typ, node)
            out = t.Binary(op, left, right, typ, node.span)
            self._require_defined(out)
            return out
        raise InternalCompilerError(f"unknown binary operator {op!r}", node.span, self.source)

    def _require_defined(self, e: t.Binary) -> None:
        """Reject arithmetic on known constants that has no real value (`inf - inf`, `x / 0`).

        Known vector constants come from built-ins such as `joint_upper` (+inf
        for a joint without a range). The lowering folds them at compile time,
        so a NaN here would silently become a NaN in every step.
        """
        values = _static_values(e)
        if values is None:
            return
        bad = [i for i, v in enumerate(values) if math.isnan(v)]
        if not bad:
            return
        labels = self._labels(e)  # known constants with labels are per-joint built-ins
        if e.type.is_scalar:
            where = ""
        elif labels:
            where = f" for joint{'s' if len(bad) > 1 else ''} " + ", ".join(f"'{labels[i]}'" for i in bad)
        else:
            where = f" for element{'s' if len(bad) > 1 else ''} " + ", ".join(str(i) for i in bad)
        operands = (*(_static_values(e.left) or ()), *(_static_values(e.right) or ()))
        notes = [bi.INFINITE_LIMITS_NOTE] if any(math.isinf(v) for v in operands) else []
        self.fail(e.span, f"this constant expression has no real value{where}", *notes)

    def _fold(self, op: str, a: t.Const, b: t.Const, typ: t.Type, node: ast.Binary) -> t.Const:
        n = typ.size
        av = a.values * n if a.type.is_scalar else a.values
        bv = b.values * n if b.type.is_scalar else b.values
        out = []
        for x, y in zip(av, bv):
            if op == "/" and y == 0:
                self.fail(node.right.span, "division by zero")
            try:
                v = {"+": x + y, "-": x - y, "*": x * y}.get(op) if op in "+-*" else (x / y if op == "/" else x**y)
            except (OverflowError, ZeroDivisionError):
                self.fail(node.span, "this constant expression has no finite value")
            if isinstance(v, complex) or v is None or not math.isfinite(v):
                self.fail(node.span, "this constant expression has no finite real value")
            out.append(float(v))
        return t.Const(out[0] if typ.is_scalar else tuple(out), typ, node.span)

    # ..................................................................... calls

    def _call(self, node: ast.Call, ctx: _Ctx) -> t.Expr:
        f = node.func
        if f in bi.DISTRIBUTIONS:
            return self._dist(node, ctx)
        if f == "prev":
            return self._prev(node, ctx)
        if f in bi.LOOKUPS:
            return self._lookup(node)
        sig = bi.FUNCTIONS.get(f)
        if sig is None:
            if f in bi.QUANTITIES:
                self.fail(node.func_span, f"'{f}' is a quantity, not a function; write it without parentheses")
            candidates = [*bi.FUNCTIONS, *bi.LOOKUPS, *bi.DISTRIBUTIONS, "prev"]
            self.fail(node.func_span, f"unknown function '{f}'" + did_you_mean(f, candidates))
        return self._apply(sig, node, ctx)

    def _bind(self, sig: bi.FunctionSig, node: ast.Call) -> dict[str, ast.Expr]:
        """Map positional and keyword arguments onto `sig.params` (missing optional ones omitted)."""
        names = sig.param_names
        if len(node.args) > len(names):
            self.fail(
                node.args[len(names)].span,
                f"{sig.name}() takes at most {len(names)} argument{'s' if len(names) > 1 else ''}, "
                f"got {len(node.args)}",
            )
        bound: dict[str, ast.Expr] = dict(zip(names, node.args))
        for kw in node.kwargs:
            if kw.name not in names:
                self.fail(
                    kw.span,
                    f"{sig.name}() has no parameter '{kw.name}'" + did_you_mean(kw.name, names),
                    f"parameters: {', '.join(names)}",
                )
            if kw.name in bound:
                self.fail(kw.span, f"{sig.name}() got '{kw.name}' twice")
            bound[kw.name] = kw.value
        for p in sig.params:
            if p.required and p.name not in bound:
                self.fail(node.span, f"{sig.name}() is missing its argument '{p.name}'")
        return bound

    def _apply(self, sig: bi.FunctionSig, node: ast.Call, ctx: _Ctx) -> t.Expr:
        bound = self._bind(sig, node)
        rule, span = sig.rule, node.span
        mode: str | None = None
        args: dict[str, t.Expr] = {}
        for p in sig.params:
            if p.mode:
                arg = bound.get(p.name)
                mode = str(p.default) if arg is None else self._mode(arg, sig, p)
            elif p.name in bound:
                args[p.name] = self.expr(bound[p.name], ctx)
            elif p.default is not None:
                args[p.name] = t.Const(float(p.default), t.FLOAT, span)  # type: ignore[arg-type]

        def scalar_float(name: str) -> t.Expr:
            e = self._float(args[name])
            if not e.type.is_scalar:
                self.fail(bound[name].span, f"{sig.name}()'s '{name}' must be a scalar, got {e.type}")
            return e

        def vec(name: str, n: int | None = None) -> t.Expr:
            e = self._float(args[name])
            if e.type.is_scalar or (n is not None and e.type.shape != (n,)):
                want = f"vector[{n}]" if n else "a vector"
                self.fail(bound[name].span, f"{sig.name}()'s '{name}' must be {want}, got {e.type}")
            return e

        if rule == "reduce":
            x = self._float(args["x"])
            return t.Apply(sig.name, (x,), t.FLOAT, span=span)
        if rule == "reduce_bool":
            x = args["x"]
            if x.type.kind != "bool":
                self.fail(bound["x"].span, f"{sig.name}() needs bools, got {x.type}")
            return t.Apply(sig.name, (x,), t.BOOL, span=span)
        if rule == "minmax":
            if "b" not in args:
                return t.Apply(f"reduce_{sig.name}", (self._float(args["a"]),), t.FLOAT, span=span)
            a, b = self._float(args["a"]), self._float(args["b"])
            shape = self._broadcast_shape(a.type, b.type, sig.name, span)
            return t.Apply(sig.name, (a, b), t.Type("float", shape), span=span)
        if rule == "elementwise":
            if sig.name == "tolerance":
                return self._tolerance(args, bound, mode, span)
            ordered = [self._float(args[p.name]) for p in sig.params]
            shape: tuple[int, ...] = ()
            for e in ordered:
                shape = self._broadcast_shape(t.Type("float", shape), e.type, sig.name, span)
            return t.Apply(sig.name, tuple(ordered), t.Type("float", shape), span=span)
        if rule == "exp_kernel":
            return t.Apply(sig.name, (self._float(args["x"]), scalar_float("s")), t.FLOAT, span=span)
        if rule == "dot":
            a, b = self._float(args["a"]), self._float(args["b"])
            if a.type.shape != b.type.shape:
                self.fail(span, f"dot() needs two vectors of the same length, got {a.type} and {b.type}")
            return t.Apply("dot", (a, b), t.FLOAT, span=span)
        if rule == "cross":
            return t.Apply("cross", (vec("a", 3), vec("b", 3)), t.Type("float", (3,)), span=span)
        if rule == "angle":
            u, v = vec("u"), vec("v")
            if u.type.shape != v.type.shape:
                self.fail(span, f"angle() needs two vectors of the same length, got {u.type} and {v.type}")
            return t.Apply("angle", (u, v), t.FLOAT, span=span)
        if rule == "quat_rotate":
            return t.Apply(sig.name, (vec("q", 4), vec("v", 3)), t.Type("float", (3,)), span=span)
        if rule == "one_hot":
            i = scalar_float("i")
            n = self._const_int(bound["n"], "one_hot()'s n", minimum=1)
            n_const = t.Const(float(n), t.FLOAT, bound["n"].span)
            return t.Apply("one_hot", (i, n_const), t.Type("float", (n,)), span=span)
        if rule == "where":
            return self._where(args, bound, span)
        raise InternalCompilerError(f"function {sig.name!r} has unknown rule {rule!r}", span, self.source)

    def _mode(self, arg: ast.Expr, sig: bi.FunctionSig, p: bi.Param) -> str:
        word = arg.id if isinstance(arg, ast.Name) else arg.value if isinstance(arg, ast.Str) else None
        choices = bi.TOLERANCE_SIGMOIDS
        if word not in choices:
            self.fail(
                arg.span,
                f"{sig.name}()'s {p.name} must be one of {', '.join(choices)}"
                + (did_you_mean(word, choices) if word else ""),
            )
        return word

    def _tolerance(self, args: dict[str, t.Expr], bound: dict[str, ast.Expr], mode: str | None, span: Span) -> t.Expr:
        x, lo, hi = (self._float(args[k]) for k in ("x", "lo", "hi"))
        shape = self._broadcast_shape(x.type, lo.type, "tolerance", span)
        shape = self._broadcast_shape(t.Type("float", shape), hi.type, "tolerance", span)
        consts: dict[str, float] = {}
        for k in ("margin", "value_at_margin"):
            e = args[k]
            if not isinstance(e, t.Const) or not e.type.is_scalar:
                self.fail(bound[k].span if k in bound else span, f"tolerance()'s {k} must be a constant number")
            consts[k] = float(e.value)  # type: ignore[arg-type]
        if consts["margin"] < 0:
            self.fail(bound["margin"].span, "tolerance()'s margin must not be negative")
        v = consts["value_at_margin"]
        lenient = mode in ("linear", "cosine", "quadratic")
        if not ((0 <= v < 1) if lenient else (0 < v < 1)):
            rng = "[0, 1)" if lenient else "(0, 1)"
            where = bound["value_at_margin"].span if "value_at_margin" in bound else span
            self.fail(where, f"tolerance()'s value_at_margin must be in {rng} for sigmoid {mode}")
        if isinstance(lo, t.Const) and isinstance(hi, t.Const) and any(a > b for a, b in _const_pairs(lo, hi)):
            self.fail(span, "tolerance() needs lo <= hi")
        ordered = (x, lo, hi, args["margin"], args["value_at_margin"])
        return t.Apply("tolerance", ordered, t.Type("float", shape), mode=mode, span=span)

    def _where(self, args: dict[str, t.Expr], bound: dict[str, ast.Expr], span: Span) -> t.Expr:
        cond, a, b = args["cond"], args["a"], args["b"]
        if cond.type.kind != "bool":
            self.fail(bound["cond"].span, f"where()'s condition must be a bool, got {cond.type}")
        if a.type.kind != b.type.kind:
            a, b = self._float(a), self._float(b)
        shape = self._broadcast_shape(cond.type, a.type, "where", span)
        shape = self._broadcast_shape(t.Type("float", shape), b.type, "where", span)
        return t.Where(cond, a, b, t.Type(a.type.kind, shape), span)

    def _prev(self, node: ast.Call, ctx: _Ctx) -> t.Expr:
        if len(node.args) != 1 or node.kwargs:
            self.fail(node.span, "prev() takes exactly one expression")
        inner = self.expr(node.args[0], ctx)
        if any(isinstance(n, t.Dist) for n in t.walk(inner)):
            self.fail(node.args[0].span, "prev() of a random draw has no meaning")
        slot = self.prev_slots.setdefault(inner, len(self.prev_slots))
        return t.Prev(inner, slot, inner.type, node.span)

    def _dist(self, node: ast.Call, ctx: _Ctx) -> t.Dist:
        if not ctx.allow_dist:
            self.fail(
                node.span,
                f"a distribution is not allowed in {ctx.what}; distributions belong in {_DIST_CONTEXTS}",
            )
        if node.kwargs:
            self.fail(node.kwargs[0].span, f"{node.func}() takes positional arguments only")
        lo_n, hi_n = bi.DISTRIBUTIONS[node.func]
        if not lo_n <= len(node.args) <= hi_n:
            self.fail(node.span, f"{node.func}() takes {lo_n} or {hi_n} arguments, got {len(node.args)}")
        inner = _Ctx(f"the parameters of {node.func}()")
        params = [self._float(self.expr(a, inner)) for a in node.args]
        return self._make_dist(node, params)

    def _make_dist(self, node: ast.Call, params: list[t.Expr]) -> t.Dist:
        shape: tuple[int, ...] = ()
        for p in params:
            shape = self._broadcast_shape(t.Type("float", shape), p.type, node.func, node.span)
        if len(params) == 1:
            p = params[0]
            zero = t.Const(0.0, t.FLOAT, node.span)
            if node.func == "uniform" and isinstance(p, t.Const):
                params = [t.Const(self._map_const(p, lambda x: -x), p.type, p.span), p]
            elif node.func == "uniform":
                params = [t.Unary("-", p, p.type, p.span), p]
            else:
                params = [zero, p]
        if node.func == "gaussian" and isinstance(params[1], t.Const) and any(v < 0 for v in params[1].values):
            self.fail(node.args[-1].span, "a gaussian's standard deviation must not be negative")
        lo, hi = params
        if node.func == "uniform" and isinstance(lo, t.Const) and isinstance(hi, t.Const):
            if any(a > b for a, b in _const_pairs(lo, hi)):
                self.fail(node.span, "uniform(lo, hi) needs lo <= hi")
        return t.Dist(node.func, (params[0], params[1]), t.Type("float", shape), node.span)

    # ..................................................................... model lookups

    def _name_arg(self, node: ast.Call, i: int, what: str) -> ast.Str:
        if len(node.args) <= i:
            self.fail(node.span, f"{node.func}() needs {what}")
        arg = node.args[i]
        if not isinstance(arg, ast.Str):
            self.fail(arg.span, f"{node.func}() takes {what} as a string, e.g. {node.func}(\"torso\")")
        return arg

    def _lookup(self, node: ast.Call) -> t.Expr:
        f, m, span = node.func, self.m, node.span
        if node.kwargs:
            self.fail(node.kwargs[0].span, f"{f}() takes no keyword arguments")
        if f in ("contact", "contact_force"):
            return self._contact(node)
        kind = bi.LOOKUPS[f]
        if len(node.args) != 1:
            self.fail(span, f"{f}() takes one {kind} name")
        arg = self._name_arg(node, 0, f"a {kind} name")
        names = m.names_of(kind)
        if is_glob(arg.value):
            self.fail(arg.span, f"{f}() takes one {kind} name, not a glob")
        ids = match_names(arg.value, names)
        if not ids:
            self.fail(arg.span, _no_match_message(arg.value, names, kind), _names_note(kind, names))
        i = ids[0]
        value: t.Expr
        if f == "sensor":
            adr, dim = int(m.model.sensor_adr[i]), int(m.model.sensor_dim[i])
            value = self._read("sensordata", ((k,) for k in range(adr, adr + dim)), span, scalar=dim == 1)
        elif f == "body_pos":
            value = self._read("xpos", ((i, k) for k in range(3)), span)
        elif f == "body_quat":
            value = self._read("xquat", ((i, k) for k in range(4)), span)
        elif f == "body_up":
            value = self._read("xmat", ((i, k) for k in (2, 5, 8)), span)
        elif f == "body_forward":
            value = self._read("xmat", ((i, k) for k in (0, 3, 6)), span)
        elif f == "site_pos":
            value = self._read("site_xpos", ((i, k) for k in range(3)), span)
        elif f == "body_lin_vel":
            # velocity of the body origin: cvel is [ang, lin] about the root subtree's com
            vec3 = t.Type("float", (3,))
            root = int(m.model.body_rootid[i])
            ang = self._read("cvel", ((i, k) for k in range(3)), span)
            lin = self._read("cvel", ((i, k) for k in range(3, 6)), span)
            offset = t.Binary(
                "-",
                self._read("xpos", ((i, k) for k in range(3)), span),
                self._read("subtree_com", ((root, k) for k in range(3)), span),
                vec3,
                span,
            )
            value = t.Binary("+", lin, t.Apply("cross", (ang, offset), vec3, span=span), vec3, span)
        else:
            raise InternalCompilerError(f"lookup {f!r} has no definition", span, self.source)
        return t.Quantity(f, arg.value, value, value.type, (), span)

    def _geoms(self, arg: ast.Str) -> tuple[int, ...]:
        """Geoms named by a geom name/glob, else by a body name/glob (all geoms of those bodies)."""
        m = self.m
        geoms = match_names(arg.value, m.geom_names)
        if geoms:
            return geoms
        bodies = match_names(arg.value, m.body_names)
        geoms = tuple(g for b in bodies for g in m.body_geoms(b))
        if not geoms:
            if bodies:
                self.fail(arg.span, f"body '{arg.value}' has no geoms")
            names = [*m.geom_names, *m.body_names]
            self.fail(arg.span, _no_match_message(arg.value, tuple(names), "geom or body"))
        return tuple(sorted(set(geoms)))

    def _geom_list(self, node: ast.Expr, func: str) -> tuple[tuple[tuple[int, ...], ...], bool]:
        """Geom sets of a contact argument: one per string; (sets, is_list)."""
        if isinstance(node, ast.Str):
            return (self._geoms(node),), False
        if isinstance(node, ast.Vector) and node.items and all(isinstance(i, ast.Str) for i in node.items):
            return tuple(self._geoms(i) for i in node.items), True  # type: ignore[arg-type]
        self.fail(node.span, f'{func}() takes geom or body names, e.g. {func}(["foot_left", "foot_right"], "floor")')

    def _contact(self, node: ast.Call) -> t.Expr:
        f, span = node.func, node.span
        if len(node.args) != 2:
            self.fail(span, f"{f}(A, B) takes two arguments: geoms/bodies A (a name or a list) and B")
        sets_a, is_list = self._geom_list(node.args[0], f)
        sets_b, _ = self._geom_list(node.args[1], f)
        geoms_b = tuple(sorted({g for s in sets_b for g in s}))
        elements = []
        for ga in sets_a:
            q = t.ContactQuery(ga, geoms_b)
            c = self.contact_queries.setdefault(q, len(self.contact_queries))
            elements.append((c,))
        array = "contact" if f == "contact" else "contact_force"
        read = self._read(array, elements, span, scalar=not is_list)
        value: t.Expr = read
        if f == "contact":
            value = t.Compare(">", read, t.Const(0.5, t.FLOAT, span), read.type.with_kind("bool"), span)
        return t.Quantity(f, self._contact_arg_text(node), value, value.type, (), span)

    @staticmethod
    def _contact_arg_text(node: ast.Call) -> str:
        """`["foot_left", "foot_right"], "floor"` as written (for messages and generated names)."""

        def text(a: ast.Expr) -> str:
            if isinstance(a, ast.Vector):
                return "[" + ", ".join(text(i) for i in a.items) + "]"
            return f'"{a.value}"' if isinstance(a, ast.Str) else "?"

        return ", ".join(text(a) for a in node.args)
