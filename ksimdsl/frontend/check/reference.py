"""The `reference` statement (a motion clip, `ksimdsl.model.motion`) and the `ref.*` quantities that read it."""

from __future__ import annotations

import os

import numpy as np

from ksimdsl.errors import did_you_mean
from ksimdsl.frontend import ast
from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.check.context import Part, Reported
from ksimdsl.frontend.check.names import names_note, no_match_message
from ksimdsl.frontend.model_info import is_glob, match_names
from ksimdsl.model.motion import ClipError, MappedClip, load_clip, map_clip

_EXAMPLE = '`reference "clips/walk.npz" loop`'


class References(Part):
    """Loads and maps the clip of the `reference` statement; types `ref.NAME` and `ref.body_pos("...")`."""

    def __init__(self, cx) -> None:
        super().__init__(cx)
        self.stmt: ast.ReferenceStmt | None = None
        self.clip: MappedClip | None = None
        self.loop = True
        self.random_start = True
        self.failed = False  # the statement had an error: `ref.*` stays quiet
        self.bodies: dict[int, int] = {}  # model body id -> its position in the body table
        self.path = ""  # the clip file, absolute

    # ----------------------------------------------------------------- the statement

    def statement(self, stmt: ast.Statement | None) -> None:
        """Check the `reference` statement (if any); an error marks the reference failed."""
        if stmt is None:
            return
        assert isinstance(stmt, ast.ReferenceStmt)
        self.stmt = stmt
        try:
            self._options(stmt)
            self.clip = self._load(stmt)
        except Reported:
            self.failed = True
            raise

    def _options(self, stmt: ast.ReferenceStmt) -> None:
        chosen: dict[str, ast.Name] = {}
        known = [o for group in bi.REF_OPTIONS.values() for o in group]
        for option in stmt.options:
            group = next((g for g, names in bi.REF_OPTIONS.items() if option.id in names), None)
            if group is None:
                self.fail(
                    option.span,
                    f"unknown reference option '{option.id}'{did_you_mean(option.id, known)}",
                    "options: loop or clamp (at the clip's end), random or fixed (the start of an episode)",
                )
            if group in chosen:
                first = chosen[group].id
                what = "the end of the clip" if group == "end" else "the start phase"
                if first == option.id:
                    self.fail(option.span, f"reference option '{option.id}' given twice")
                self.fail(option.span, f"'{first}' and '{option.id}' both choose {what}; give one of them")
            chosen[group] = option
        self.loop = chosen["end"].id == "loop" if "end" in chosen else True
        self.random_start = chosen["start"].id == "random" if "start" in chosen else True

    def _load(self, stmt: ast.ReferenceStmt) -> MappedClip:
        written = stmt.path
        if not written:
            self.fail(stmt.path_span, f"empty clip path; write the .npz file, e.g. {_EXAMPLE}")
        base = os.path.dirname(os.path.abspath(self.cx.source.path))
        path = self.path = os.path.abspath(written if os.path.isabs(written) else os.path.join(base, written))
        if not os.path.isfile(path):
            where = "not found (relative paths start at the task file's directory)"
            self.fail(stmt.path_span, f"clip file '{written}' {'is a directory' if os.path.isdir(path) else where}")
        try:
            clip = load_clip(path)
        except ClipError as e:
            self.fail(stmt.path_span, str(e).replace(path, written))
        try:
            return map_clip(clip, self.m.model)
        except ClipError as e:
            self.fail(stmt.path_span, f"clip '{written}' does not fit the model: {e}")

    # ----------------------------------------------------------------- ref.NAME

    def _require(self, span) -> MappedClip:
        if self.failed:
            raise Reported
        if self.clip is None:
            self.fail(
                span, f"'ref' reads the reference motion, but the task has no `reference` statement (e.g. {_EXAMPLE})"
            )
        return self.clip

    def quantity(self, node: ast.Attr) -> t.Expr:
        """`ref.NAME` (an `ast.Attr` on the name `ref`)."""
        name, span = node.name, node.span
        if name not in bi.REF_QUANTITIES:
            self.fail(
                node.name_span,
                f"unknown reference quantity 'ref.{name}'{did_you_mean(name, bi.REF_QUANTITIES)}",
                "ref." + ", ref.".join(bi.REF_QUANTITIES),
            )
        if name == "body_pos":
            self.fail(span, 'ref.body_pos is a lookup; call it with a body name, as in ref.body_pos("torso")')
        clip = self._require(span)
        m = self.m
        joints = m.hinge_slide_joints
        labels: tuple[str, ...] = ()
        if name == "joint_pos":
            value = self.read("qpos", [m.jnt_qpos_adr(j) for j in joints], span)
            labels = tuple(m.joint_names[j] for j in joints)
        elif name == "joint_vel":
            value = self.read("qvel", [m.jnt_dof_adr(j) for j in joints], span)
            labels = tuple(m.joint_names[j] for j in joints)
        elif name == "qpos":
            value, labels = self.read("qpos", range(m.nq), span, quat_adr=clip.quat_adr), m.qpos_labels
        elif name == "qvel":
            value, labels = self.read("qvel", range(m.nv), span), m.dof_names
        elif name in ("base_pos", "base_quat"):
            root = self.cx.lookups.root(f"ref.{name}", span)
            q = root.qpos_adr
            cols = range(q, q + 3) if name == "base_pos" else range(q + 3, q + 7)
            value = self.read("qpos", cols, span, quat_adr=clip.quat_adr)
        else:  # phase
            value = t.RefRead("phase", (), t.FLOAT, (), span)
        if value.type.shape == (0,):
            self.fail(span, f"'ref.{name}' is empty for this model")
        return t.Quantity(f"ref.{name}", None, value, value.type, labels, span)

    def body_pos(self, node: ast.Call) -> t.Expr:
        """`ref.body_pos("name")`: the reference's world position of a body."""
        span = node.span
        if node.kwargs:
            self.fail(node.kwargs[0].span, "ref.body_pos() takes no keyword arguments")
        if len(node.args) != 1 or not isinstance(node.args[0], ast.Str):
            self.fail(span, 'ref.body_pos() takes one body name as a string, e.g. ref.body_pos("torso")')
        arg = node.args[0]
        assert isinstance(arg, ast.Str)
        self._require(span)
        names = self.m.body_names
        if is_glob(arg.value):
            self.fail(arg.span, "ref.body_pos() takes one body name, not a glob")
        ids = match_names(arg.value, names)
        if not ids:
            self.fail(arg.span, no_match_message(arg.value, names, "body"), names_note("body", names))
        k = self.bodies.setdefault(ids[0], len(self.bodies))
        value = self.read("body_pos", range(3 * k, 3 * k + 3), span)
        return t.Quantity("ref.body_pos", arg.value, value, value.type, (), span)

    def call(self, node: ast.Call) -> t.Expr:
        """A call `NAME.f(...)`: only `ref.body_pos(...)` exists."""
        base, _, method = node.func.partition(".")
        if base == "ref" and method == "body_pos":
            return self.body_pos(node)
        if base == "ref":
            if method in bi.REF_QUANTITIES:
                self.fail(node.func_span, f"'ref.{method}' is a quantity, not a function; write it without parentheses")
            self.fail(node.func_span, f"unknown reference lookup 'ref.{method}'{did_you_mean(method, ['body_pos'])}")
        self.fail(node.func_span, f"unknown function '{node.func}'; '.NAME(...)' calls exist only as ref.body_pos(...)")

    @staticmethod
    def read(table: str, columns, span, quat_adr: tuple[int, ...] = ()) -> t.RefRead:
        """`columns` of a clip table; the quaternions at `quat_adr` that lie whole inside them are marked."""
        cols = tuple(int(c) for c in columns)
        pos = {c: k for k, c in enumerate(cols)}
        quats = tuple(pos[a] for a in quat_adr if all(pos.get(a + i) == pos.get(a, -9) + i for i in range(4)))
        return t.RefRead(table, cols, t.Type("float", (len(cols),)), quats, span)

    # ----------------------------------------------------------------- reset and the result

    def reset_writes(self, stmt: ast.ResetStmt) -> tuple[t.Write, ...]:
        """`from reference`: qpos and qvel set from the reference's frame at the episode's start phase."""
        span = stmt.from_reference
        if span is None:
            return ()
        qpos = self.quantity(ast.Attr(ast.Name("ref", span), "qpos", span, span))
        qvel = self.quantity(ast.Attr(ast.Name("ref", span), "qvel", span, span))
        m = self.m
        return (
            t.Write("qpos", tuple(range(m.nq)), "=", qpos, span),
            t.Write("qvel", tuple(range(m.nv)), "=", qvel, span),
        )

    def definition(self) -> t.ReferenceDef | None:
        """The checked reference (None without a `reference` statement)."""
        clip, stmt = self.clip, self.stmt
        if clip is None or stmt is None:
            return None
        bodies = tuple(self.bodies)
        body_pos = np.stack([clip.body_pos_F3(b) for b in bodies], axis=1) if bodies else None
        return t.ReferenceDef(
            path=stmt.path,
            resolved_path=self.path,
            loop=self.loop,
            random_start=self.random_start,
            fps=clip.fps,
            qpos=clip.qpos_FQ,
            qvel=clip.qvel_FV,
            quat_adr=clip.quat_adr,
            bodies=bodies,
            body_names=tuple(self.m.body_names[b] for b in bodies),
            body_pos=body_pos,
            qvel_given=clip.qvel_given,
            span=stmt.span,
        )
