"""What the policy sees and is scored on: observations, rewards, terminations; and the metrics logged beside them."""

from __future__ import annotations

import dataclasses

from ksimdsl.errors import Span
from ksimdsl.frontend import ast
from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.check.context import Ctx, Part, Reported
from ksimdsl.frontend.check.folding import TIME_UNITS

#: The longest observation `history` (control steps); each one costs K - 1 copies of the value in mem.
MAX_HISTORY = 64


class Outputs(Part):
    """Observations, rewards, terminations and metrics."""

    def observe(self, stmt: ast.Statement | None, actor: tuple[t.ObsItem, ...] | None) -> tuple[t.ObsItem, ...]:
        group = "actor" if actor is None else "critic"
        if stmt is None:
            if actor is None:
                self.cx.sink.error(None, "missing `observe actor` block; the policy needs at least one observation")
                return ()
            return tuple(t.ObsItem(o.name, o.value, history=o.history, span=o.span) for o in actor)
        assert isinstance(stmt, ast.ObserveStmt)
        out: list[t.ObsItem] = []
        names: list[tuple[str, Span | None]] = []
        for item in stmt.items:
            if isinstance(item, ast.ObsInclude):
                if actor is None or item.group != "actor":
                    self.cx.sink.error(item.span, "only `observe critic` can include `actor`")
                    continue
                out.extend(t.ObsItem(o.name, o.value, history=o.history, span=item.span) for o in actor)
                names.extend((o.name, item.span) for o in actor)
                continue
            names.append((item.name, item.name_span))
            obs = self.attempt(self.obs_item, item, group)
            if obs is not None:
                out.append(obs)
        self.cx.decls.check_unique(names, f"{group} observation")
        if not out and group == "actor" and not self.cx.sink.diagnostics:
            self.cx.sink.error(stmt.span, "`observe actor` needs at least one observation")
        return tuple(out)

    def obs_item(self, item: ast.ObsItem, group: str) -> t.ObsItem:
        what = f"observation '{item.name}'"
        value = self.cx.exprs.float_expr(item.value, Ctx(what))
        noise = bias = delay = None
        multiplicative = False
        if group == "critic" and (item.noise or item.bias or item.delay):
            span = (item.noise or item.bias or item.delay).span  # type: ignore[union-attr]
            self.fail(span, "the critic sees clean values; noise, bias and delay belong in `observe actor`")
        if item.noise is not None:
            noise = self.obs_dist(item.noise.dist, value.type.shape, f"the noise of {what}")
            multiplicative = item.noise.multiplicative
        if item.bias is not None:
            bias = self.obs_dist(item.bias, value.type.shape, f"the bias of {what}")
        if item.delay is not None:
            rng = item.delay
            if any(isinstance(n, ast.Num) and n.unit in TIME_UNITS for n in (rng.lo, rng.hi)):
                self.fail(rng.span, "delay is a count of control steps, not a time; write e.g. `delay 0..2`")
            lo = self.cx.consts.step_count(rng.lo, "delay")
            hi = self.cx.consts.step_count(rng.hi, "delay")
            if lo > hi:
                self.fail(item.delay.span, "delay lo..hi needs lo <= hi")
            delay = (lo, hi)
        history = 1 if item.history is None else self.obs_history(item.history)
        return t.ObsItem(item.name, value, noise, multiplicative, bias, delay, history, item.span)

    def obs_history(self, node: ast.Expr) -> int:
        """`history K`: a whole number of control steps in 1..MAX_HISTORY (`K steps` is accepted too)."""
        if isinstance(node, ast.Num) and node.unit is not None and node.unit != "steps":
            what = "a time" if node.unit in TIME_UNITS else f"a value in '{node.unit}'"
            self.fail(node.span, f"history is a count of control steps, not {what}; write e.g. `history 3`")
        if isinstance(node, ast.Num) and node.unit == "steps":
            node = dataclasses.replace(node, unit=None)
        k = self.cx.consts.const_int(node, "history")
        if k < 1:
            self.fail(node.span, f"history must be at least 1 (the current value alone), got {k}")
        if k > MAX_HISTORY:
            self.fail(node.span, f"history is at most {MAX_HISTORY} control steps, got {k}")
        return k

    def obs_dist(self, call: ast.Call, shape: tuple[int, ...], what: str) -> t.Dist:
        if call.func not in bi.DISTRIBUTIONS:
            self.fail(call.func_span, f"{what} must be a distribution, uniform(...) or gaussian(...)")
        dist = self.cx.exprs.expr(call, Ctx(what, allow_dist=True))
        self.cx.shapes.require_static(dist, what)
        out = self.cx.shapes.fit_shape(dist, shape, call.span, what)
        assert isinstance(out, t.Dist)
        return out

    def rewards(self, stmt: ast.Statement | None) -> tuple[t.RewardDef, ...]:
        if stmt is None or not stmt.terms:  # type: ignore[union-attr]
            self.cx.sink.error(
                stmt.span if stmt is not None else None,
                "the task has no reward; add a `reward` block with at least one term",
            )
            return ()
        assert isinstance(stmt, ast.RewardStmt)
        self.cx.decls.check_unique([(r.name, r.name_span) for r in stmt.terms], "reward")
        return self.each(self.reward, stmt.terms)

    def reward(self, r: ast.RewardTerm) -> t.RewardDef:
        weight = self.attempt(self.reward_weight, r)
        value = self.cx.exprs.float_expr(r.value, Ctx(f"reward '{r.name}'"))
        if not value.type.is_scalar:
            self.fail(
                r.value.span,
                f"reward '{r.name}' must be a scalar, got {value.type}; wrap it in sum(...) or norm(...)",
            )
        self.cx.units.require_plain(r.value, f"reward '{r.name}'", "a reward is a plain number")
        if weight is None:
            raise Reported
        return t.RewardDef(r.name, weight, value, r.span)

    def reward_weight(self, r: ast.RewardTerm) -> t.Expr:
        what = f"the weight of reward '{r.name}'"
        weight = self.cx.exprs.float_expr(r.weight, Ctx(what))
        self.cx.shapes.require_static(weight, what, dists=False)
        if not weight.type.is_scalar:
            self.fail(r.weight.span, f"{what} must be a scalar, got {weight.type}")
        self.cx.units.require_plain(r.weight, what, "a weight is a plain number")
        return weight

    def terminations(self, stmt: ast.Statement | None) -> tuple[t.TerminationDef, ...]:
        if stmt is None:
            return ()
        assert isinstance(stmt, ast.TerminateStmt)
        self.cx.decls.check_unique([(x.name, x.name_span) for x in stmt.terms], "termination")
        return self.each(self.termination, stmt.terms)

    def termination(self, term: ast.TerminationTerm) -> t.TerminationDef:
        cond = self.cx.exprs.expr(term.cond, Ctx(f"termination '{term.name}'"))
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

    def metrics(self, stmt: ast.Statement | None) -> tuple[t.MetricDef, ...]:
        if stmt is None:
            return ()
        assert isinstance(stmt, ast.MetricStmt)
        self.cx.decls.check_unique([(m.name, m.name_span) for m in stmt.items], "metric")
        return self.each(self.metric, stmt.items)

    def metric(self, item: ast.MetricItem) -> t.MetricDef:
        """A scalar of any unit; booleans count as 0/1 (their episode mean is a fraction of steps)."""
        value = self.cx.exprs.float_expr(item.value, Ctx(f"metric '{item.name}'"))
        if not value.type.is_scalar:
            self.fail(
                item.value.span,
                f"metric '{item.name}' must be a scalar, got {value.type}; select one element (x.x, x[0]) "
                "or reduce it (norm(...), sum(...), mean(...))",
            )
        return t.MetricDef(item.name, value, item.span)
