"""Changes to the world: `randomize` (model fields), `reset` and `event` writes."""

from __future__ import annotations

from ksimdsl.errors import did_you_mean
from ksimdsl.frontend import ast
from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.check.context import Ctx, Part, Reported
from ksimdsl.frontend.check.names import no_match_message
from ksimdsl.frontend.model_info import OBJECT_KINDS, match_names


class Writes(Part):
    """Randomizers, reset writes and events."""

    def randomize(self, stmt: ast.Statement | None) -> tuple[t.RandomizeDef, ...]:
        if stmt is None:
            return ()
        assert isinstance(stmt, ast.RandomizeStmt)
        return self.each(self.randomizer, stmt.assigns)

    def randomizer(self, a: ast.Assign) -> t.RandomizeDef:
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
                    self.fail(sel.span, no_match_message(sel.value, names, kind))
            else:
                rows = self.cx.select.select(rows, (), sel, f"'{name}'", "row")[0]
        if a.op not in ("=", "+=", "*="):
            self.fail(a.span, f"unknown operator '{a.op}'")
        what = f"randomize {name}"
        value = self.cx.exprs.float_expr(a.value, Ctx(what, allow_dist=True))
        self.cx.shapes.require_static(value, what)
        if not value.type.is_scalar:
            self.fail(
                a.value.span,
                f"{what} needs a scalar value (drawn once per selected row), got {value.type}",
            )
        value = self.cx.shapes.broadcast_dists(value, (len(rows),))
        return t.RandomizeDef(name, rows, tuple(int(d) for d in array.shape), a.op, value, a.span)

    def writes(self, assigns: tuple[ast.Assign, ...], block: str) -> tuple[t.Write, ...]:
        return self.each(lambda a: self.write(a, block), assigns)

    def write_base(self, name: ast.Name, block: str) -> tuple[str, tuple[int, ...], tuple[str, ...]]:
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
            root = self.cx.lookups.root(n, name.span)
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

    def write(self, a: ast.Assign, block: str) -> t.Write:
        # Peel selections off the target: base_lin_vel.xy, joint_pos["hip_*"], qpos[7:]
        chain: list[ast.Expr] = []
        node = a.target
        while isinstance(node, (ast.Attr, ast.Index)):
            chain.append(node)
            node = node.base
        if not isinstance(node, ast.Name):
            self.fail(a.target.span, f"a {block} target is a state quantity such as joint_pos or base_lin_vel.xy")
        target, index, labels = self.write_base(node, block)
        scalar = target == "base_yaw"
        if chain and scalar:
            self.fail(chain[-1].span, "base_yaw is a scalar; it cannot be indexed")
        for sel_node in reversed(chain):
            if isinstance(sel_node, ast.Attr):
                positions, scalar = self.cx.select.swizzle(len(index), sel_node.name, sel_node.name_span, node.id)
            else:
                assert isinstance(sel_node, ast.Index)
                positions, scalar = self.cx.select.select_positions(len(index), labels, sel_node.index, node.id, "joint")
            index = tuple(index[p] for p in positions)
            labels = tuple(labels[p] for p in positions) if labels else ()
            if scalar and sel_node is not chain[0]:
                self.fail(sel_node.span, "cannot select from a single element")
        if a.op not in ("=", "+=", "*="):
            self.fail(a.span, f"unknown operator '{a.op}'")
        if target == "base_yaw" and a.op == "*=":
            self.fail(a.span, "base_yaw takes `=` (set the heading) or `+=` (turn), not `*=`")
        what = f"{block} {node.id}"
        value = self.cx.exprs.float_expr(a.value, Ctx(what, allow_dist=True))
        if block == "reset":
            self.cx.shapes.require_reset(value)
        shape = () if scalar else (len(index),)
        value = self.cx.shapes.fit_shape(value, shape, a.value.span, what)
        return t.Write(target, index, a.op, value, a.span)

    def event(self, s: ast.EventStmt) -> t.EventDef:
        every = self.cx.consts.duration_or_dist_steps(s.every, f"event '{s.name}' every")
        writes = self.writes(s.assigns, "event")
        if len(writes) != len(s.assigns):
            raise Reported
        if not writes:
            self.fail(s.name_span, f"event '{s.name}' changes nothing; add assignments below it")
        return t.EventDef(s.name, every, writes, s.span)
