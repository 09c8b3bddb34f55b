"""`height_scan(BODY, grid=[nx, ny], spacing=S)`: the body's height above the ground on a grid under it.

The value is `[nx * ny]` elements of the engine's `height_scan` physics array
(docs/architecture.md); the engine casts the rays. Scans with the same
arguments share their elements. The checker resolves the body (did-you-mean),
checks the grid (positive whole numbers, at most `HEIGHT_SCAN_MAX_POINTS`
points) and the spacing (a positive number, in meters), and finds the model's
ground (`ksimdsl.model.ground`): it must have some, and all of it of a kind
both engines intersect alike.
"""

from __future__ import annotations

import math

from ksimdsl.frontend import ast
from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.check.context import Part, fmt_num
from ksimdsl.frontend.check.names import names_note, no_match_message
from ksimdsl.frontend.model_info import is_glob, match_names
from ksimdsl.model.ground import ground_geoms, ground_problem

__all__ = ["HeightScans"]

_GROUND_NOTE = "the ground is every geom of the world (or of a body welded to it) that collides"


class HeightScans(Part):
    """Checks `height_scan(...)` calls and registers their points."""

    def call(self, node: ast.Call) -> t.Expr:
        bound = self.cx.calls.bind(bi.HEIGHT_SCAN, node)
        body_arg = bound["body"]
        if not isinstance(body_arg, ast.Str):
            self.fail(body_arg.span, 'height_scan() takes a body name as a string, e.g. height_scan("torso", ...)')
        body = self.body(body_arg)
        nx, ny = self.grid(bound["grid"])
        spacing = self.spacing(bound["spacing"])
        self.ground(node)
        query = t.HeightScanQuery(body, nx, ny, spacing)
        scans = self.cx.height_scans
        if query not in scans:
            scans[query] = sum(q.size for q in scans)
        offset = scans[query]
        elements = tuple((offset + k,) for k in range(query.size))
        read = t.PhysRead("height_scan", elements, t.Type("float", (query.size,)), node.span)
        return t.Quantity("height_scan", body_arg.value, read, read.type, (), node.span)

    def body(self, arg: ast.Str) -> int:
        names = self.m.body_names
        if is_glob(arg.value):
            self.fail(arg.span, "height_scan() takes one body name, not a glob")
        ids = match_names(arg.value, names)
        if not ids:
            self.fail(arg.span, no_match_message(arg.value, names, "body"), names_note("body", names))
        return ids[0]

    def grid(self, node: ast.Expr) -> tuple[int, int]:
        if not isinstance(node, ast.Vector) or len(node.items) != 2:
            self.fail(node.span, "height_scan()'s grid must be two whole numbers [nx, ny], e.g. grid=[11, 17]")
        nx, ny = (self.cx.consts.const_int(i, "height_scan()'s grid size", minimum=1) for i in node.items)
        if nx * ny > bi.HEIGHT_SCAN_MAX_POINTS:
            self.fail(
                node.span,
                f"height_scan()'s grid has {nx} x {ny} = {nx * ny} points, more than {bi.HEIGHT_SCAN_MAX_POINTS}",
            )
        return nx, ny

    def spacing(self, node: ast.Expr) -> float:
        what = "height_scan()'s spacing"
        self.cx.units.require_plain(node, what, "it is a length, in meters (a plain number)")
        value = self.cx.consts.const_float(node, what)
        if not (value > 0 and math.isfinite(value)):
            self.fail(node.span, f"{what} must be a positive length in meters, got {fmt_num(value)}")
        return value

    def ground(self, node: ast.Call) -> None:
        """The model's ground geoms (once per task): there must be some, all of a scannable kind."""
        if self.cx.ground_geoms is not None:
            return
        model = self.m.model
        ground = ground_geoms(model)
        self.cx.ground_geoms = ()  # a problem is reported once, at the first call
        if not ground:
            self.fail(
                node.span,
                "height_scan() needs ground to cast its rays on, but the model has none",
                _GROUND_NOTE + "; add a `floor` line under `model`",
            )
        for g in ground:
            problem = ground_problem(model, g)
            if problem is not None:
                name = self.m.geom_names[g] or f"#{g}"
                self.fail(node.span, f"height_scan(): ground geom '{name}' {problem}", _GROUND_NOTE)
        self.cx.ground_geoms = ground
