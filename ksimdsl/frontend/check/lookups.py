"""Model lookups: built-in quantities, `body_pos("torso")` and friends, contacts."""

from __future__ import annotations

import math
from typing import Iterable

from ksimdsl.errors import InternalCompilerError, Span
from ksimdsl.frontend import ast
from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.check.context import Part
from ksimdsl.frontend.check.names import names_note, no_match_message
from ksimdsl.frontend.model_info import ModelInfo, is_glob, match_names
from ksimdsl.model.terrain import TERRAIN_NAME


def joint_limits(m: ModelInfo, joint: int) -> tuple[float, float]:
    """(lower, upper) of a 1-dof joint from `jnt_range`; (-inf, inf) when `jnt_limited` is false."""
    if not m.model.jnt_limited[joint]:
        return -math.inf, math.inf
    lo, hi = m.model.jnt_range[joint]
    return float(lo), float(hi)


class Lookups(Part):
    """Built-in quantities and model lookups, expanded into physics reads."""

    def root(self, name: str, span: Span) -> t.FreeRoot:
        if self.m.root is None:
            self.fail(
                span,
                f"'{name}' needs a root free joint, but the model has no free root joint; "
                'use body_pos("...") and friends, or joint_pos',
            )
        return self.m.root

    def read(self, array: str, elements: Iterable[tuple[int, ...]], span: Span, scalar: bool = False) -> t.PhysRead:
        elements = tuple(elements)
        shape = () if scalar else (len(elements),)
        return t.PhysRead(array, elements, t.Type("float", shape), span)

    def quantity(self, name: str, span: Span) -> t.Expr:
        m = self.m
        joints = m.hinge_slide_joints
        joint_labels = tuple(m.joint_names[j] for j in joints)
        value: t.Expr
        labels: tuple[str, ...] = ()
        if name == "level":
            return t.Level(t.FLOAT, span)
        if name == "action":
            return t.Action(t.Type("float", (self.cx.action_size,)), span)
        if name == "ctrl_dt":
            return t.Const(self.cx.ctrl_dt, t.FLOAT, span)
        if name == "time":
            value = self.read("time", [()], span, scalar=True)
            return t.Quantity(name, None, value, value.type, (), span)
        if name == "qpos":
            value, labels = self.read("qpos", ((i,) for i in range(m.nq)), span), m.qpos_labels
        elif name in ("qvel", "qacc"):
            value, labels = self.read(name, ((i,) for i in range(m.nv)), span), m.dof_names
        elif name == "joint_pos":
            value, labels = self.read("qpos", ((m.jnt_qpos_adr(j),) for j in joints), span), joint_labels
        elif name in ("joint_vel", "joint_acc"):
            array = "qvel" if name == "joint_vel" else "qacc"
            value, labels = self.read(array, ((m.jnt_dof_adr(j),) for j in joints), span), joint_labels
        elif name == "actuator_force":
            value, labels = self.read("actuator_force", ((i,) for i in range(m.nu)), span), m.actuator_names
        elif name == "default_joint_pos":
            vals = tuple(m.default_qpos[m.jnt_qpos_adr(j)] for j in joints)
            value, labels = t.Const(vals, t.Type("float", (len(vals),)), span), joint_labels
        elif name in ("joint_lower", "joint_upper"):
            side = 0 if name == "joint_lower" else 1
            vals = tuple(joint_limits(m, j)[side] for j in joints)
            value, labels = t.Const(vals, t.Type("float", (len(vals),)), span), joint_labels
        elif name == "com_inertia":
            value = self.read("cinert", ((b, k) for b in range(1, m.nbody) for k in range(10)), span)
        elif name == "com_vel":
            value = self.read("cvel", ((b, k) for b in range(1, m.nbody) for k in range(6)), span)
        elif name in bi.ROOT_QUANTITIES:
            value = self.root_quantity(name, self.root(name, span), span)
        else:
            raise InternalCompilerError(f"built-in quantity {name!r} has no definition", span, self.cx.source)
        if not value.type.shape or value.type.shape[0] == 0:
            self.fail(span, f"'{name}' is empty for this model")
        return t.Quantity(name, None, value, value.type, labels, span)

    def root_quantity(self, name: str, root: t.FreeRoot, span: Span) -> t.Expr:
        q, d = root.qpos_adr, root.dof_adr
        vec3 = t.Type("float", (3,))
        pos = self.read("qpos", ((i,) for i in range(q, q + 3)), span)
        quat = self.read("qpos", ((i,) for i in range(q + 3, q + 7)), span)
        lin = self.read("qvel", ((i,) for i in range(d, d + 3)), span)
        ang_local = self.read("qvel", ((i,) for i in range(d + 3, d + 6)), span)
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
            return self.read("qacc", ((i,) for i in range(d, d + 3)), span)
        if name == "base_ang_acc":
            acc = self.read("qacc", ((i,) for i in range(d + 3, d + 6)), span)
            return t.Apply("quat_rotate", (quat, acc), vec3, span=span)
        if name == "projected_gravity":
            down = t.Const((0.0, 0.0, -1.0), vec3, span)
            return t.Apply("quat_rotate_inv", (quat, down), vec3, span=span)
        raise InternalCompilerError(f"root quantity {name!r} has no definition", span, self.cx.source)

    def name_arg(self, node: ast.Call, i: int, what: str) -> ast.Str:
        if len(node.args) <= i:
            self.fail(node.span, f"{node.func}() needs {what}")
        arg = node.args[i]
        if not isinstance(arg, ast.Str):
            self.fail(arg.span, f"{node.func}() takes {what} as a string, e.g. {node.func}(\"torso\")")
        return arg

    def lookup(self, node: ast.Call) -> t.Expr:
        f, m, span = node.func, self.m, node.span
        if f == "height_scan":
            return self.cx.heights.call(node)
        if node.kwargs:
            self.fail(node.kwargs[0].span, f"{f}() takes no keyword arguments")
        if f in ("contact", "contact_force"):
            return self.contact(node)
        kind = bi.LOOKUPS[f]
        if len(node.args) != 1:
            self.fail(span, f"{f}() takes one {kind} name")
        arg = self.name_arg(node, 0, f"a {kind} name")
        names = m.names_of(kind)
        if is_glob(arg.value):
            self.fail(arg.span, f"{f}() takes one {kind} name, not a glob")
        ids = match_names(arg.value, names)
        if not ids:
            self.fail(arg.span, no_match_message(arg.value, names, kind), names_note(kind, names))
        i = ids[0]
        value: t.Expr
        if f == "sensor":
            adr, dim = int(m.model.sensor_adr[i]), int(m.model.sensor_dim[i])
            value = self.read("sensordata", ((k,) for k in range(adr, adr + dim)), span, scalar=dim == 1)
        elif f == "body_pos":
            value = self.read("xpos", ((i, k) for k in range(3)), span)
        elif f == "body_quat":
            value = self.read("xquat", ((i, k) for k in range(4)), span)
        elif f == "body_up":
            value = self.read("xmat", ((i, k) for k in (2, 5, 8)), span)
        elif f == "body_forward":
            value = self.read("xmat", ((i, k) for k in (0, 3, 6)), span)
        elif f == "site_pos":
            value = self.read("site_xpos", ((i, k) for k in range(3)), span)
        elif f == "body_lin_vel":
            # velocity of the body origin: cvel is [ang, lin] about the root subtree's com
            vec3 = t.Type("float", (3,))
            root = int(m.model.body_rootid[i])
            ang = self.read("cvel", ((i, k) for k in range(3)), span)
            lin = self.read("cvel", ((i, k) for k in range(3, 6)), span)
            offset = t.Binary(
                "-",
                self.read("xpos", ((i, k) for k in range(3)), span),
                self.read("subtree_com", ((root, k) for k in range(3)), span),
                vec3,
                span,
            )
            value = t.Binary("+", lin, t.Apply("cross", (ang, offset), vec3, span=span), vec3, span)
        else:
            raise InternalCompilerError(f"lookup {f!r} has no definition", span, self.cx.source)
        return t.Quantity(f, arg.value, value, value.type, (), span)

    def geoms(self, arg: ast.Str) -> tuple[int, ...]:
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
            notes = ()
            if arg.value == "floor" and TERRAIN_NAME in m.geom_names:
                notes = (f"the model block's terrain is the geom '{TERRAIN_NAME}'",)
            self.fail(arg.span, no_match_message(arg.value, tuple(names), "geom or body"), *notes)
        return tuple(sorted(set(geoms)))

    def geom_list(self, node: ast.Expr, func: str) -> tuple[tuple[tuple[int, ...], ...], bool]:
        """Geom sets of a contact argument: one per string; (sets, is_list)."""
        if isinstance(node, ast.Str):
            return (self.geoms(node),), False
        if isinstance(node, ast.Vector) and node.items and all(isinstance(i, ast.Str) for i in node.items):
            return tuple(self.geoms(i) for i in node.items), True  # type: ignore[arg-type]
        self.fail(node.span, f'{func}() takes geom or body names, e.g. {func}(["foot_left", "foot_right"], "floor")')

    def contact(self, node: ast.Call) -> t.Expr:
        f, span = node.func, node.span
        if len(node.args) != 2:
            self.fail(span, f"{f}(A, B) takes two arguments: geoms/bodies A (a name or a list) and B")
        sets_a, is_list = self.geom_list(node.args[0], f)
        sets_b, _ = self.geom_list(node.args[1], f)
        geoms_b = tuple(sorted({g for s in sets_b for g in s}))
        elements = []
        for ga in sets_a:
            q = t.ContactQuery(ga, geoms_b)
            c = self.cx.contact_queries.setdefault(q, len(self.cx.contact_queries))
            elements.append((c,))
        array = "contact" if f == "contact" else "contact_force"
        read = self.read(array, elements, span, scalar=not is_list)
        value: t.Expr = read
        if f == "contact":
            value = t.Compare(">", read, t.Const(0.5, t.FLOAT, span), read.type.with_kind("bool"), span)
        return t.Quantity(f, self.contact_arg_text(node), value, value.type, (), span)

    @staticmethod
    def contact_arg_text(node: ast.Call) -> str:
        """`["foot_left", "foot_right"], "floor"` as written (for messages and generated names)."""

        def text(a: ast.Expr) -> str:
            if isinstance(a, ast.Vector):
                return "[" + ", ".join(text(i) for i in a.items) + "]"
            return f'"{a.value}"' if isinstance(a, ast.Str) else "?"

        return ", ".join(text(a) for a in node.args)
