"""The driver: statement collection, the model, and the order in which the parts run."""

from __future__ import annotations

import os

from ksimdsl import settings as S
from ksimdsl.errors import InternalCompilerError
from ksimdsl.frontend import ast
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.check.context import Part
from ksimdsl.frontend.model_info import ModelLoadError, load_model_info, resolve_model_path


#: Statements that may appear only once, by keyword (settings and observe statements name their own).
_SINGLE_KEYWORDS: dict[type, str] = {
    ast.TaskStmt: "task",
    ast.ModelStmt: "model",
    ast.EngineStmt: "engine",
    ast.EpisodeStmt: "episode",
    ast.ActuatorsStmt: "actuators",
    ast.RewardStmt: "reward",
    ast.TerminateStmt: "terminate",
    ast.MetricStmt: "metric",
    ast.RandomizeStmt: "randomize",
    ast.ResetStmt: "reset",
    ast.ReferenceStmt: "reference",
    ast.CurriculumStmt: "curriculum",
    ast.PolicyStmt: "policy",
    ast.AmpStmt: "amp",
}


def _stmt_keyword(stmt: ast.Statement) -> str | None:
    """The keyword of a statement that may appear only once, else None."""
    if isinstance(stmt, ast.SettingsStmt):
        return stmt.keyword
    if isinstance(stmt, ast.ObserveStmt):
        return f"observe {stmt.group}"
    return _SINGLE_KEYWORDS.get(type(stmt))


class Checker(Part):
    """Runs the parts over the module in order and assembles the `CheckedTask`."""

    def run(self) -> t.CheckedTask:
        singles = self.collect_statements()
        task_stmt = singles.get("task")
        if task_stmt is None:
            self.cx.sink.error(None, 'missing `task` statement (e.g. `task walk "A humanoid walks"`)')
        model = self.load_model(singles.get("model"), singles.get("actuators"))
        if model is None or self.cx.info is None:
            self.cx.raise_errors()
            raise InternalCompilerError("model failed to load without a diagnostic")

        physics = self.attempt(self.cx.settings.physics, singles.get("physics")) or self.cx.settings.default_physics()
        if self.cx.physics_overrides:
            physics = self.cx.settings.override_physics(physics)
        self.cx.ctrl_dt = physics.ctrl_dt
        engine = self.attempt(self.cx.settings.engine, singles.get("engine")) or "auto"
        episode_steps = self.attempt(self.cx.settings.episode, singles.get("episode")) or round(20.0 / self.cx.ctrl_dt)
        actuators = self.attempt(self.cx.actuators.actuators, singles.get("actuators"))  # sets cx.action_size
        curriculum = (
            self.attempt(self.cx.settings.curriculum, singles.get("curriculum"), model) or S.CurriculumSettings()
        )
        policy = self.attempt(self.cx.settings.policy, singles.get("policy")) or S.PolicySettings()
        train = self.attempt(self.cx.settings.train, singles.get("train")) or S.TrainSettings()

        self.attempt(self.cx.reference.statement, singles.get("reference"))
        stmts = self.cx.module.statements
        self.cx.decls.declare_names(stmts)
        for s in stmts:
            if isinstance(s, ast.LetStmt):
                self.cx.decls.let(s)
        states = self.each(self.cx.decls.state, (s for s in stmts if isinstance(s, ast.StateStmt)))
        commands = self.each(self.cx.decls.command, (s for s in stmts if isinstance(s, ast.CommandStmt)))
        obs_actor = self.cx.outputs.observe(singles.get("observe actor"), None)
        obs_critic = self.cx.outputs.observe(singles.get("observe critic"), obs_actor)
        rewards = self.cx.outputs.rewards(singles.get("reward"))
        terminations = self.cx.outputs.terminations(singles.get("terminate"))
        metrics = self.cx.outputs.metrics(singles.get("metric"))
        amp = self.attempt(self.cx.amp.amp, singles.get("amp"))
        randomize = self.cx.writes.randomize(singles.get("randomize"))
        self.cx.settings.check_impl(physics, engine, singles, randomize)
        reset = self.reset(singles.get("reset"))
        event_stmts = [s for s in stmts if isinstance(s, ast.EventStmt)]
        self.cx.decls.check_unique([(s.name, s.name_span) for s in event_stmts], "event")
        events = self.each(self.cx.writes.event, event_stmts)

        self.cx.raise_errors()
        if actuators is None or task_stmt is None:
            raise InternalCompilerError("missing actuators/task without a diagnostic")
        assert isinstance(task_stmt, ast.TaskStmt)
        return t.CheckedTask(
            name=task_stmt.name,
            doc=task_stmt.doc or "",
            source_path=self.cx.source.path,
            source_text=self.cx.source.text,
            model=model,
            physics=physics,
            engine=engine,
            episode_steps=episode_steps,
            actuators=actuators,
            action_size=self.cx.action_size,
            lets=tuple(self.cx.let_defs),
            states=states,
            commands=commands,
            obs_actor=obs_actor,
            obs_critic=obs_critic,
            rewards=rewards,
            terminations=terminations,
            randomize=randomize,
            reset=reset,
            events=events,
            contact_queries=tuple(self.cx.contact_queries),
            prev_slots=tuple(t.PrevSlot(i, e) for e, i in self.cx.prev_slots.values()),
            curriculum=curriculum,
            policy=policy,
            train=train,
            metrics=metrics,
            reference=self.cx.reference.definition(),
            height_scans=tuple(self.cx.height_scans),
            ground_geoms=self.cx.ground_geoms or (),
            curriculum_span=getattr(singles.get("curriculum"), "span", None),
            amp=amp,
        )

    def reset(self, stmt: ast.Statement | None) -> tuple[t.Write, ...]:
        """The reset writes: the reference's frame first when the block starts `from reference`."""
        if stmt is None:
            return ()
        assert isinstance(stmt, ast.ResetStmt)
        start = self.attempt(self.cx.reference.reset_writes, stmt) or ()
        return start + self.cx.writes.writes(stmt.assigns, "reset")

    def collect_statements(self) -> dict[str, ast.Statement]:
        singles: dict[str, ast.Statement] = {}
        for stmt in self.cx.module.statements:
            key = _stmt_keyword(stmt)
            if key is None:
                continue
            if key in singles:
                first = singles[key].span
                self.cx.sink.error(
                    stmt.span,
                    f"duplicate `{key}` statement; a task has at most one",
                    f"the first `{key}` is at line {first.line}",
                )
                continue
            singles[key] = stmt
        return singles

    def load_model(self, stmt: ast.Statement | None, actuators: ast.Statement | None) -> t.ModelSummary | None:
        """The model, composed as the task's `model` block and `actuators ... joints=` describe."""
        if self.cx.model_path_override is not None:
            written, relative_to, span = self.cx.model_path_override, None, None
        elif stmt is None:
            self.cx.sink.error(None, 'missing `model` statement (e.g. `model "models/humanoid.xml"`)')
            return None
        else:
            assert isinstance(stmt, ast.ModelStmt)
            written, span = stmt.path, stmt.path_span
            relative_to = os.path.dirname(os.path.abspath(self.cx.source.path))
        try:
            resolved = resolve_model_path(written, relative_to)
            info = load_model_info(resolved)
        except ModelLoadError as e:
            self.cx.sink.error(span, str(e))
            return None
        self.cx.info = info  # the bare model: the composition's names are checked against it
        assert actuators is None or isinstance(actuators, ast.ActuatorsStmt)
        errors = len(self.cx.sink.diagnostics)
        composition = self.cx.compose.composition(stmt if isinstance(stmt, ast.ModelStmt) else None, actuators)
        if len(self.cx.sink.diagnostics) > errors:
            self.cx.info = None
            return None
        if not composition.empty:
            try:
                info = load_model_info(resolved, composition)
            except ModelLoadError as e:
                self.cx.sink.error(span, str(e))
                self.cx.info = None
                return None
            self.cx.info = info
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
            composition=composition,
            terrain_span=next((p.span for p in getattr(stmt, "parts", ()) if isinstance(p, ast.ModelTerrain)), None),
        )
