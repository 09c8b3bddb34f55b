"""Lower a `CheckedTask` to sympy: one `PhaseIR` per kernel (reset, observe, step).

Every typed expression (`ksimdsl.frontend.typed`) becomes a `vec.Val`: scalars
and small vectors as scalar sympy expressions, long vectors packed (see
`ksimdsl.ir.vec`). Physics inputs are read by name (`qpos[3]`, `xpos[1, 2]`,
`qvel[6:27]`); per-env memory is the input `mem`; random numbers are slices of
the standard draws `rand_n` ~ N(0, 1) and `rand_u` ~ U[0, 1) that the runtime
passes in, allocated in a fixed order per phase.

Semantics (docs/architecture.md, "Semantics decisions"):

* every expression of `step` sees the state before this step's updates; all
  mem updates are computed from pre-update values;
* `prev(e)` reads its mem slot, or `e` itself while the first-step flag is set;
* commands are sampled in `reset` and resampled in `step` when their timer
  (in control steps) runs out; with probability `zero_prob` a sample is zero;
* an observation `delay lo..hi` keeps the `hi` previous clean values in mem
  (newest first) and a per-episode delay d; the observation reads the value d
  steps old (on the first step every old value equals the current one); noise
  is added after the delay, then the per-episode bias. Multiplicative noise
  `~ D *` scales by (1 + D);
* an observation `history K` observes its last K values (each as it was
  observed then: delayed, noisy, biased; clean for the critic), newest first.
  mem keeps the K - 1 older ones (`history.NAME`, `history.critic.NAME`);
  `observe` (run right after every reset) fills every older slot with its
  value and returns that mem, so the episode's first observation is K copies
  of the reset-time value and nothing reads as zero; `step` shifts the slots;
* events count down control steps and, when their timer runs out, apply their
  writes to qpos/qvel (returned by `step`) and redraw the interval;
* `metric` values are one more output of `step` (`metrics`), computed like
  the reward terms on the same state; they feed no other output;
* with a `terrain`, `reset` ends by moving the root onto the env's tile, and
  `curriculum distance` keeps the spawn point and the distance travelled in
  mem (`ksimdsl.ir.spawn`).

Expressions are lowered by `ksimdsl.ir.exprs.Lowerer`; the draws, mem layout and
output arrays are built with `ksimdsl.ir.arrays`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import sympy as sp

from ksimdsl.errors import InternalCompilerError, Span
from ksimdsl.frontend import typed as T
from ksimdsl.ir import vec
from ksimdsl.ir.arrays import ArrayBuilder, Draws, MemLayout, combine, fit, ident, num, select_any, zeros
from ksimdsl.ir.exprs import Lowerer
from ksimdsl.ir.formulas import quat_mul, quat_rotate, quat_rotate_inv, tolerance, where, yaw
from ksimdsl.ir.program import MemSlot, Output, PhaseIR, Segment, TaskIR
from ksimdsl.ir.reference import ReferenceTables
from ksimdsl.ir.spawn import SPAWN_SLOT, TRAVELLED_SLOT, spawn_on_terrain, travelled
from ksimdsl.ir.vec import Val

__all__ = ["lower_task", "Lowerer", "Draws", "MemLayout", "quat_rotate", "quat_rotate_inv", "tolerance"]


# --------------------------------------------------------------------------- the task


def _describe(expr: T.Expr) -> str:
    if isinstance(expr, T.Action):
        return "action"
    if isinstance(expr, (T.Let, T.StateRef, T.CommandRef)):
        return expr.name
    if isinstance(expr, T.Quantity):
        return expr.name if expr.arg is None else f"{expr.name}_{ident(expr.arg)}"
    return ""


def _layout(task: T.CheckedTask) -> MemLayout:
    mem = MemLayout()
    for st in task.states:
        mem.add(f"state.{st.name}", st.type.size, scalar=st.type.shape == (), span=st.span)
    for ps in task.prev_slots:
        mem.add(f"prev.{ps.slot}", ps.expr.type.size, scalar=ps.expr.type.shape == (), span=ps.expr.span)
    for cmd in task.commands:
        mem.add(f"cmd.{cmd.name}", cmd.size, span=cmd.span)
        if cmd.resample_steps is not None:
            mem.add(f"cmd.{cmd.name}.timer", 1, scalar=True, span=cmd.span)
    for ob in task.obs_actor:
        if ob.bias is not None:
            mem.add(f"bias.{ob.name}", ob.size, scalar=ob.value.type.shape == (), span=ob.span)
    for ob in task.obs_actor:
        if ob.delay is not None:
            mem.add(f"delay.{ob.name}", 1, scalar=True, span=ob.span)
            if ob.delay[1] > 0:
                mem.add(f"ring.{ob.name}", ob.delay[1] * ob.size, span=ob.span)
    for critic, items in ((False, task.obs_actor), (True, task.obs_critic)):
        for ob in items:
            if ob.history > 1:
                mem.add(_history_slot(ob, critic), (ob.history - 1) * ob.size, span=ob.span)
    for ev in task.events:
        mem.add(f"event.{ev.name}.timer", 1, scalar=True, span=ev.span)
    if task.reference is not None:
        mem.add("ref.start", 1, scalar=True, span=task.reference.span)
    if task.curriculum.kind == "distance":
        mem.add(SPAWN_SLOT, 2, span=task.curriculum_span)
        mem.add(TRAVELLED_SLOT, 1, scalar=True, span=task.curriculum_span)
    mem.add("first", 1, scalar=True)
    return mem


def _history_slot(ob: T.ObsItem, critic: bool) -> str:
    """The mem slot of an observation's older values (`history K`)."""
    return f"history.critic.{ob.name}" if critic else f"history.{ob.name}"


def _mem_slot_names(task: T.CheckedTask, mem: MemLayout) -> tuple[MemSlot, ...]:
    """The layout with `prev.<slot>` renamed to `prev.<what>` where that is unique."""
    labels: dict[str, str] = {}
    used: set[str] = set()
    for ps in task.prev_slots:
        what = _describe(ps.expr)
        label = f"prev.{what}" if what and f"prev.{what}" not in used else f"prev.{ps.slot}"
        used.add(label)
        labels[f"prev.{ps.slot}"] = label
    return tuple(replace(s, name=labels.get(s.name, s.name)) for s in mem.slots())


def _label(name: str) -> str:
    return ident(name.replace(".", "_"))


def _phase(name: str, outputs: Sequence[Output], lo: Lowerer) -> PhaseIR:
    draws = lo.draws
    return PhaseIR(
        name,
        tuple(outputs),
        draws.normal,
        draws.uniform,
        dict(lo.names),
        dict(lo.lets),
        tuple(draws.log),
        dict(lo.origins),
        dict(lo.let_spans),
    )


class _TaskLowering:
    def __init__(self, task: T.CheckedTask) -> None:
        self.task = task
        self.mem = _layout(task)
        self.slot_names = {s.name: n.name for s, n in zip(self.mem.slots(), _mem_slot_names(task, self.mem))}
        self.ref = ReferenceTables.of(task)

    def mem_label(self, name: str) -> str:
        return _label(self.slot_names.get(name, name))

    def _put(self, mem: ArrayBuilder, name: str, val: Val) -> None:
        """Write `val` to the mem slot `name` (labelled, with the slot's task line)."""
        slot = self.mem.slot(name)
        mem.write(self.mem.indices(name), val, self.mem_label(name), slot.span)

    def _lower_into(self, lo: Lowerer, mem: ArrayBuilder, name: str, expr: T.Expr, owner: str, span: Span | None) -> None:
        """Lower `expr` (the definition `owner`, written at `span`) into the mem slot `name`."""
        with lo.at(owner, span):
            self._put(mem, name, lo.claim(fit(lo.number(expr), self.mem.slot(name))))

    # ------------------------------------------------------------ writes on qpos / qvel

    def _apply_writes(
        self, lo: Lowerer, phys: tuple[ArrayBuilder, ArrayBuilder], writes: Sequence[T.Write], fire: sp.Basic | None
    ) -> None:
        """Apply `reset`/`event` writes in order on (qpos, qvel); with `fire`, only where it holds."""
        for w in writes:
            with lo.at(f"{lo.here.name}_{w.target}", w.span):
                target, idx, new, old = self._write(lo, phys, w)
            if fire is not None:
                new = vec.elementwise(lambda n, o: where(fire, n, o), new, old)
            target.write(idx, lo.claim(new), lo.here.name, w.span)

    def _write(
        self, lo: Lowerer, phys: tuple[ArrayBuilder, ArrayBuilder], w: T.Write
    ) -> tuple[ArrayBuilder, tuple[int, ...], Val, Val]:
        """(array, indices, new value, old value) of one write."""
        qpos, qvel = phys
        root = self.task.model.root
        value = lo.number(w.value)
        if w.target in ("qpos", "qvel"):
            b = qpos if w.target == "qpos" else qvel
            old = b.read(w.index, scalar=False) if len(w.index) > 1 else b.read(w.index, scalar=True)
            if value.size is None and len(w.index) > 1:
                value = vec.broadcast(value, len(w.index))
            if len(w.index) == 1 and value.size is not None:
                value = vec.scalar(value.component(0))
            return b, w.index, combine(w.op, old, value), old
        if root is None:
            raise InternalCompilerError(f"{w.target} write without a root free joint")
        if w.target == "base_ang_vel":
            q = qpos.read(range(root.qpos_adr + 3, root.qpos_adr + 7)).components()
            idx = tuple(range(root.dof_adr + 3, root.dof_adr + 6))
            local = qvel.read(idx).components()
            world = quat_rotate(q, local)
            comps = value.components() if value.size is not None else [value.items[0]] * len(w.index)
            for k, i in enumerate(w.index):
                world[i] = combine(w.op, vec.scalar(world[i]), vec.scalar(comps[k])).items[0]
            return qvel, idx, vec.vector(quat_rotate_inv(q, world)), vec.vector(local)
        if w.target == "base_yaw":
            idx = tuple(range(root.qpos_adr + 3, root.qpos_adr + 7))
            old = qpos.read(idx)
            q = old.components()
            a = value.items[0]
            if w.op == "=":
                a = a - yaw(q)
            elif w.op != "+=":
                raise InternalCompilerError(f"base_yaw {w.op}")
            rot = [sp.cos(a / 2), sp.Integer(0), sp.Integer(0), sp.sin(a / 2)]
            return qpos, idx, vec.vector(quat_mul(rot, q)), old
        raise InternalCompilerError(f"unknown write target {w.target!r}")

    # ------------------------------------------------------------ reset

    def reset(self) -> PhaseIR:
        task = self.task
        lo = Lowerer(task, self.mem, Draws(), first=None)
        ref_start = self._reference_start(lo)
        qpos = ArrayBuilder("qpos", task.model.nq)
        qvel = ArrayBuilder("qvel", task.model.nv)
        with lo.at("reset", None):
            self._apply_writes(lo, (qpos, qvel), task.reset, None)
        terrain, root = task.model.composition.terrain, task.model.root
        if terrain is not None:
            if root is None:
                raise InternalCompilerError("terrain without a root free joint")
            spawn_on_terrain(lo, qpos, terrain, root, task.model.terrain_span)
        fields = self._randomize(lo)
        mem = self._initial_mem(lo)
        if ref_start is not None:
            self._put(mem, "ref.start", vec.scalar(ref_start))
        if SPAWN_SLOT in self.mem:
            if root is None:
                raise InternalCompilerError("curriculum distance without a root free joint")
            self._put(mem, SPAWN_SLOT, qpos.read((root.qpos_adr, root.qpos_adr + 1)))
            self._put(mem, TRAVELLED_SLOT, vec.scalar(0))
        outputs = [
            Output("qpos", task.model.nq, False, qpos.segments(), "qpos_", "reset: joint positions"),
            Output("qvel", task.model.nv, False, qvel.segments(), "qvel_", "reset: joint velocities"),
        ]
        for fname, b in fields.items():
            shape = next(tuple(r.field_shape) for r in task.randomize if r.field == fname)
            outputs.append(Output(fname, b.size, False, b.segments(), f"{fname}_", f"randomize: {fname}", shape, True))
        outputs.append(Output("mem", self.mem.size, False, mem.segments(), "mem_", "initial memory"))
        return _phase("reset", outputs, lo)

    def _reference_start(self, lo: Lowerer) -> sp.Basic | None:
        """The reference's start position of a new episode (drawn first), read by `ref.*` in reset."""
        if self.ref is None:
            return None
        ref = self.ref.ref
        u = lo.take("uniform", None, ref.span).items[0] if ref.random_start else None
        start = self.ref.start(u)
        lo.read_reference_at(self.ref.reader(start))
        return start

    def _reference_now(self, lo: Lowerer) -> None:
        """`ref.*` in observe and step: the reference where the episode's time has taken it."""
        if self.ref is not None:
            lo.read_reference_at(self.ref.reader(self.ref.position(self.mem.read("ref.start").items[0])))

    def _randomize(self, lo: Lowerer) -> dict[str, ArrayBuilder]:
        """The randomized model fields (flattened), in order of first appearance."""
        fields: dict[str, ArrayBuilder] = {}
        for rd in self.task.randomize:
            shape = tuple(rd.field_shape)
            b = fields.setdefault(rd.field, ArrayBuilder(rd.field, math.prod(shape)))
            ncol = math.prod(shape[1:]) if len(shape) > 1 else 1
            with lo.at(rd.field, rd.span):
                value = lo.number(rd.value)
                flat = [r * ncol + c for r in rd.rows for c in range(ncol)]
                if value.size is None:
                    per = vec.broadcast(value, len(flat)) if len(flat) > 1 else value
                else:
                    per = select_any(value, [k for k in range(len(rd.rows)) for _ in range(ncol)])
                old = b.read(flat, scalar=len(flat) == 1)
                b.write(flat, lo.claim(combine(rd.op, old, per)), "new", rd.span)
        return fields

    def _initial_mem(self, lo: Lowerer) -> ArrayBuilder:
        task = self.task
        mem = ArrayBuilder(None, self.mem.size)
        for st in task.states:
            self._lower_into(lo, mem, f"state.{st.name}", st.init, f"state_{st.name}", st.span)
        for ps in task.prev_slots:
            name = f"prev.{ps.slot}"
            self._put(mem, name, zeros(self.mem.slot(name)))
        for cmd in task.commands:
            name = f"cmd.{cmd.name}"
            with lo.at(f"cmd_{cmd.name}", cmd.span):
                self._put(mem, name, lo.claim(self._sample_command(lo, cmd)))
            if cmd.resample_steps is not None:
                self._put(mem, f"{name}.timer", vec.scalar(num(cmd.resample_steps)))
        for ob in task.obs_actor:
            if ob.bias is not None:
                self._lower_into(lo, mem, f"bias.{ob.name}", ob.bias, f"bias_{ob.name}", ob.span)
        for ob in task.obs_actor:
            if ob.delay is not None:
                dlo, dhi = ob.delay
                u = lo.take("uniform", None, ob.span).items[0]
                d = sp.Min(sp.floor(dlo + (dhi - dlo + 1) * u), dhi) if dhi > dlo else num(dlo)
                self._put(mem, f"delay.{ob.name}", vec.scalar(d))
                if dhi > 0:
                    self._put(mem, f"ring.{ob.name}", zeros(self.mem.slot(f"ring.{ob.name}")))
        for critic, items in ((False, task.obs_actor), (True, task.obs_critic)):
            for ob in items:
                if ob.history > 1:  # filled by `observe` (older values = the reset-time one)
                    name = _history_slot(ob, critic)
                    self._put(mem, name, zeros(self.mem.slot(name)))
        for ev in task.events:
            self._lower_into(lo, mem, f"event.{ev.name}.timer", ev.every, f"event_{ev.name}", ev.span)
        self._put(mem, "first", vec.scalar(1))
        return mem

    def _sample_command(self, lo: Lowerer, cmd: T.CommandDef) -> Val:
        vals = [lo.number(f.value).items[0] for f in cmd.fields]
        if cmd.zero_prob > 0:
            u = lo.take("uniform", None, cmd.span).items[0]
            zero = u < num(cmd.zero_prob)
            vals = [where(zero, sp.Integer(0), v) for v in vals]
        return vec.vector(vals)

    # ------------------------------------------------------------ observations

    def _first(self) -> sp.Basic:
        return self.mem.read("first").items[0] > sp.Rational(1, 2)

    def _observations(self, lo: Lowerer, seed: bool) -> tuple[list[Output], dict[str, Val]]:
        """Actor (delayed, noisy, biased) and critic (clean) observations, with their histories; and the
        new delay rings and history slots. `seed`: the `observe` phase (older history values read as the
        current one while the first-step flag is set), else `step` (they shift by one)."""
        task = self.task
        first = lo.first
        actor: list[Segment] = []
        rings: dict[str, Val] = {}
        pos = 0
        for ob in task.obs_actor:
            with lo.at(f"actor_{ob.name}", ob.span):
                v = lo.number(ob.value)
                if ob.delay is not None and ob.delay[1] > 0:
                    v, ring = self._delay(ob, v, first)
                    rings[f"ring.{ob.name}"] = ring
                if ob.noise is not None:
                    noise = fit(lo.number(ob.noise), MemSlot(ob.name, 0, ob.size, scalar=ob.value.type.shape == ()))
                    if ob.noise_multiplicative:
                        v = vec.elementwise(lambda x, n: x * (1 + n), v, noise)
                    else:
                        v = vec.elementwise(lambda x, n: x + n, v, noise)
                if ob.bias is not None:
                    v = vec.elementwise(lambda x, b: x + b, v, self.mem.read(f"bias.{ob.name}"))
                v = self._history(ob, v, False, seed, rings)
                actor.append(Segment(ident(ob.name), pos, lo.claim(v), ob.span))
            pos += v.n
        critic: list[Segment] = []
        cpos = 0
        for ob in task.obs_critic:
            with lo.at(f"critic_{ob.name}", ob.span):
                v = lo.claim(self._history(ob, lo.number(ob.value), True, seed, rings))
            critic.append(Segment(ident(ob.name), cpos, v, ob.span))
            cpos += v.n
        outs = [
            Output("actor", pos, False, tuple(actor), "actor_", "observe actor"),
            Output("critic", cpos, False, tuple(critic), "critic_", "observe critic (clean)"),
        ]
        return outs, rings

    def _history(self, ob: T.ObsItem, v: Val, critic: bool, seed: bool, slots: dict[str, Val]) -> Val:
        """`v` stacked with the item's K - 1 older values (newest first); the slot's new contents go to `slots`.

        In `observe` (`seed`) the older values read as `v` while the first-step flag is set, and the slot
        keeps what it read; in `step` the slot shifts by one, `v` entering it.
        """
        if ob.history <= 1:
            return v
        name = _history_slot(ob, critic)
        olds = self._older(self.mem.read(name), v, ob.history - 1, self._first() if seed else None)
        slots[name] = vec.concat(olds if seed else [v] + olds[:-1])
        return vec.concat([v] + olds)

    @staticmethod
    def _older(slot: Val, v: Val, count: int, first: sp.Basic | None) -> list[Val]:
        """The `count` values (each shaped like `v`) held in a mem slot; `v` itself where `first` holds."""
        n = slot.n // count
        olds: list[Val] = []
        for k in range(count):
            part = select_any(slot, list(range(k * n, (k + 1) * n))) if slot.n > 1 else slot
            if v.size is None and part.size is not None:
                part = vec.scalar(part.component(0))
            olds.append(part if first is None else vec.elementwise(lambda c, o: where(first, c, o), v, part))
        return olds

    def _delay(self, ob: T.ObsItem, v: Val, first: sp.Basic) -> tuple[Val, Val]:
        """(value `delay` steps old, the new ring contents)."""
        hi = ob.delay[1]
        olds = self._older(self.mem.read(f"ring.{ob.name}"), v, hi, first)
        d = self.mem.read(f"delay.{ob.name}").items[0]

        def pick(*vals: sp.Basic) -> sp.Basic:
            pairs = [(vals[k], d < sp.Rational(2 * k + 1, 2)) for k in range(len(vals) - 1)]
            return sp.Piecewise(*pairs, (vals[-1], True))

        delayed = vec.elementwise(pick, v, *olds)
        new_ring = vec.concat([v] + olds[:-1])
        return delayed, new_ring

    def observe(self) -> PhaseIR:
        """Observations of the current state; with observation histories, also the memory with their
        older slots filled (the only mem `observe` writes)."""
        lo = Lowerer(self.task, self.mem, Draws(), first=self._first())
        self._reference_now(lo)
        outs, slots = self._observations(lo, seed=True)
        histories = {name: val for name, val in slots.items() if name.startswith("history.")}
        if histories:
            mem = ArrayBuilder("mem", self.mem.size)
            for name, val in histories.items():
                self._put(mem, name, val)
            outs.append(Output("mem", self.mem.size, False, mem.segments(), "mem_", "memory, histories filled"))
        return _phase("observe", outs, lo)

    # ------------------------------------------------------------ step

    def step(self) -> tuple[PhaseIR, tuple[str, ...], tuple[str, ...]]:
        task = self.task
        lo = Lowerer(task, self.mem, Draws(), first=self._first())
        self._reference_now(lo)
        outs, rings = self._observations(lo, seed=False)
        kept, dropped = self._rewards(lo, outs)
        terms_k = []
        for k, t in enumerate(task.terminations):
            with lo.at(f"done_{t.name}", t.span):
                terms_k.append(Segment(ident(t.name), k, lo.claim(vec.as_bool(lo.lower(t.cond))), t.span))
        outs.append(Output("terminations", len(terms_k), True, tuple(terms_k), "done_", "terminations"))
        self._metrics(lo, outs)
        qpos = ArrayBuilder("qpos", task.model.nq)
        qvel = ArrayBuilder("qvel", task.model.nv)
        mem = self._next_mem(lo, rings, (qpos, qvel))
        outs.append(Output("mem", self.mem.size, False, mem.segments(), "mem_", "next memory"))
        if task.events:
            outs.append(Output("qpos", task.model.nq, False, qpos.segments(), "qpos_", "events: joint positions"))
            outs.append(Output("qvel", task.model.nv, False, qvel.segments(), "qvel_", "events: joint velocities"))
        return _phase("step", outs, lo), kept, dropped

    def _rewards(self, lo: Lowerer, outs: list[Output]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Append the reward terms and weights to `outs`: (kept, dropped) names.

        A term whose weight folds to exactly zero is dropped.
        """
        terms: list[Segment] = []
        weights: list[Segment] = []
        kept: list[str] = []
        dropped: list[str] = []
        for rw in self.task.rewards:
            with lo.at(f"weight_{rw.name}", rw.span):
                w = lo.claim(lo.number(rw.weight))
            if w.items[0].is_zero:
                dropped.append(rw.name)
                continue
            with lo.at(f"reward_{rw.name}", rw.span):
                val = lo.claim(lo.number(rw.value))
            k = len(kept)
            terms.append(Segment(ident(rw.name), k, val, rw.span))
            weights.append(Segment(ident(rw.name), k, w, rw.span))
            kept.append(rw.name)
        outs.append(Output("reward_terms", len(kept), False, tuple(terms), "reward_", "reward terms (unweighted)"))
        outs.append(Output("reward_weights", len(kept), False, tuple(weights), "weight_", "reward weights"))
        return tuple(kept), tuple(dropped)

    def _metrics(self, lo: Lowerer, outs: list[Output]) -> None:
        """Append the `metric` values to `outs` (only when the task has a `metric` block, so that the
        kernels of other tasks stay as they were)."""
        if not self.task.metrics:
            return
        segs: list[Segment] = []
        for j, m in enumerate(self.task.metrics):
            with lo.at(f"metric_{m.name}", m.span):
                segs.append(Segment(ident(m.name), j, lo.claim(lo.number(m.value)), m.span))
        outs.append(Output("metrics", len(segs), False, tuple(segs), "metric_", "metrics (logged, never rewarded)"))

    def _next_mem(
        self, lo: Lowerer, rings: dict[str, Val], phys: tuple[ArrayBuilder, ArrayBuilder]
    ) -> ArrayBuilder:
        """The next memory (every update computed from pre-update values); events write on `phys`."""
        task = self.task
        mem = ArrayBuilder("mem", self.mem.size)
        for st in task.states:
            self._lower_into(lo, mem, f"state.{st.name}", st.update, f"state_{st.name}", st.span)
        for ps in task.prev_slots:
            name = f"prev.{ps.slot}"
            self._lower_into(lo, mem, name, ps.expr, self.mem_label(name), ps.expr.span)
        for cmd in task.commands:
            if cmd.resample_steps is None:
                continue
            name = f"cmd.{cmd.name}"
            timer = self.mem.read(f"{name}.timer").items[0]
            due = sp.Le(timer, 1)
            with lo.at(f"cmd_{cmd.name}", cmd.span):
                fresh = lo.claim(self._sample_command(lo, cmd))
            self._put(mem, name, vec.elementwise(lambda f, o: where(due, f, o), fresh, self.mem.read(name)))
            self._put(mem, f"{name}.timer", vec.scalar(where(due, num(cmd.resample_steps), timer - 1)))
        for rname, ring in rings.items():
            self._put(mem, rname, ring)
        for ev in task.events:
            name = f"event.{ev.name}.timer"
            timer = self.mem.read(name).items[0]
            fire = sp.Le(timer, 1)
            with lo.at(ident(ev.name), ev.span):
                self._apply_writes(lo, phys, ev.writes, fire)
                every = lo.claim(fit(lo.number(ev.every), self.mem.slot(name))).items[0]
            self._put(mem, name, vec.scalar(where(fire, every, timer - 1)))
        if TRAVELLED_SLOT in self.mem and task.model.root is not None:
            self._put(mem, TRAVELLED_SLOT, travelled(task.model.root, self.mem.read(SPAWN_SLOT)))
        self._put(mem, "first", vec.scalar(0))
        return mem

    def lower(self) -> TaskIR:
        task = self.task
        reset = self.reset()
        observe = self.observe()
        step, kept, dropped = self.step()
        commands = tuple(
            {"name": c.name, "size": c.size, "offset": self.mem.slot(f"cmd.{c.name}").offset} for c in task.commands
        )
        fields = tuple(dict.fromkeys(r.field for r in task.randomize))
        return TaskIR(
            phases={"reset": reset, "observe": observe, "step": step},
            mem_slots=_mem_slot_names(task, self.mem),
            mem_size=self.mem.size,
            rewards=kept,
            dropped_rewards=dropped,
            randomize_fields=fields,
            field_shapes={r.field: tuple(r.field_shape) for r in task.randomize},
            writes_phys=bool(task.events),
            commands=commands,
            metrics=tuple(m.name for m in task.metrics),
            tables=self.ref.tables() if self.ref is not None else (),
        )


def lower_task(task: T.CheckedTask) -> TaskIR:
    """Lower every phase of a checked task to sympy (see the module docstring)."""
    return _TaskLowering(task).lower()
