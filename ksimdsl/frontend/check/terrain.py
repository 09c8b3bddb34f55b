"""The `terrain` line of the model block and its tile lines, checked into a `ksimdsl.model.terrain.Terrain`.

    terrain rows=5 size=8m resolution=0.05m seed=0
        rough  amplitude=0.02m..0.10m
        stairs height=0.02m..0.15m width=0.3m

Lengths are written in `m` or as plain numbers (meters); a tile parameter may be
a range `lo..hi` (interpolated by the row's difficulty). Every problem is
reported at the value it comes from; `Terrain.problems` (the sizes that cannot
be built, too many height samples) at the setting it names.
"""

from __future__ import annotations

from ksimdsl.errors import did_you_mean
from ksimdsl.frontend import ast
from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend.check.context import Part, Reported, fmt_num
from ksimdsl.model.terrain import TERRAIN_NAME, TILE_KINDS, Param, ParamSpec, Terrain, Tile

__all__ = ["TerrainChecker", "TERRAIN_SETTINGS", "TERRAIN_LENGTHS"]

#: `terrain key=value` settings (lengths in m); defaults in `_DEFAULTS`.
TERRAIN_SETTINGS = {
    "rows": bi.Setting("int", minimum=1, le=1000),
    "cols": bi.Setting("int", minimum=1, le=1000),
    "size": bi.Setting("float", gt=0.0),
    "resolution": bi.Setting("float", gt=0.0),
    "seed": bi.Setting("int", minimum=0, le=2**32 - 1),
    "platform": bi.Setting("float", minimum=0.0),
    "border": bi.Setting("float", minimum=0.0),
    "friction": bi.Setting("float", minimum=0.0),
}
#: The settings that are lengths (m); the others are plain numbers.
TERRAIN_LENGTHS = frozenset({"size", "resolution", "platform", "border"})
_DEFAULTS = {"rows": 10, "size": 8.0, "resolution": 0.1, "seed": 0, "platform": 1.0, "border": 0.0}


class TerrainChecker(Part):
    """`terrain ...` against the bare model (`self.m`): a `Terrain` of explicit numbers."""

    def terrain(self, part: ast.ModelTerrain) -> Terrain:
        self.check_model(part)
        errors = len(self.cx.sink.diagnostics)
        single = []
        for s in part.settings:
            if isinstance(s.value, ast.Range):
                self.cx.sink.error(
                    s.value.span, f"terrain setting '{s.key}' takes one value; ranges lo..hi are for the tile lines"
                )
            else:
                single.append(s)
        vals = self.cx.settings.validate(single, TERRAIN_SETTINGS, "terrain")
        for key, (_, s) in vals.items():
            self.attempt(self.cx.units.require_length, s.value, f"terrain setting '{key}'", key in TERRAIN_LENGTHS)
        tiles = tuple(t for t in (self.attempt(self.tile, line) for line in part.tiles) if t is not None)
        if not part.tiles:
            self.cx.sink.error(
                part.span,
                "the terrain needs at least one tile line below it",
                "e.g. an indented `rough amplitude=0.02m..0.1m`; tile kinds: " + ", ".join(TILE_KINDS),
            )
        if len(self.cx.sink.diagnostics) > errors:
            raise Reported
        v = {**_DEFAULTS, "cols": len(tiles), **{k: value for k, (value, _) in vals.items()}}
        terrain = Terrain(
            rows=int(v["rows"]),
            cols=int(v["cols"]),
            size=float(v["size"]),
            resolution=float(v["resolution"]),
            tiles=tiles,
            seed=int(v["seed"]),
            platform=float(v["platform"]),
            border=float(v["border"]),
            friction=None if v.get("friction") is None else float(v["friction"]),
        )
        if "cols" in vals and terrain.cols < len(part.tiles):
            unused = part.tiles[terrain.cols]
            self.cx.sink.error(
                unused.kind_span,
                f"cols={terrain.cols}, so this tile line and those after it are never used",
                "column c has the kind of tile line c mod the number of lines",
            )
        for key, message in terrain.problems():
            at = vals.get(key)
            self.cx.sink.error(at[1].value.span if at is not None else part.span, message)
        if len(self.cx.sink.diagnostics) > errors:
            raise Reported
        return terrain

    def check_model(self, part: ast.ModelTerrain) -> None:
        m = self.m
        for g in range(m.model.ngeom):
            if int(m.model.geom_bodyid[g]) == 0 and int(m.model.geom_type[g]) in (0, 1):  # mjGEOM_PLANE, HFIELD
                name = m.geom_names[g] or f"#{g}"
                self.fail(part.span, f"the model already has a floor (geom '{name}'); remove `terrain`")
        if TERRAIN_NAME in m.geom_names:
            self.fail(part.span, f"the model already has a geom named '{TERRAIN_NAME}'; remove `terrain`")
        if m.root is None:
            self.fail(
                part.span,
                "`terrain` places the robot on a tile at every reset: the model's root body needs a free joint",
            )

    def tile(self, line: ast.TerrainTile) -> Tile:
        self.cx.settings.choose(line.kind, line.kind_span, TILE_KINDS, "terrain tile kind", "tile kinds")
        table = TILE_KINDS[line.kind]
        where = f"{line.kind} tile"
        errors = len(self.cx.sink.diagnostics)
        params: dict[str, Param] = {}
        for s in line.settings:
            if s.key not in table:
                valid = ", ".join(table) if table else "none"
                self.cx.sink.error(
                    s.key_span,
                    f"unknown {where} setting '{s.key}'" + did_you_mean(s.key, table),
                    f"valid {where} settings: {valid}",
                )
            elif s.key in params:
                self.cx.sink.error(s.key_span, f"duplicate {where} setting '{s.key}'")
            else:
                param = self.attempt(self.param, s, table[s.key], where)
                if param is not None:
                    params[s.key] = param
        unknown = any(s.key not in table for s in line.settings)  # a misspelled key: no "needs" error too
        for key, spec in table.items():
            if spec.required and not unknown and not any(s.key == key for s in line.settings):
                self.cx.sink.error(line.span, f"a {where} needs {key}=... (one value, or lo..hi by difficulty)")
        if len(self.cx.sink.diagnostics) > errors:
            raise Reported
        return Tile(line.kind, tuple(params[k] for k in table if k in params))

    def param(self, s: ast.Setting, spec: ParamSpec, where: str) -> Param:
        label = f"{where} setting '{s.key}'"
        ends = (s.value.lo, s.value.hi) if isinstance(s.value, ast.Range) else (s.value,)
        values = []
        for node in ends:
            self.cx.units.require_length(node, label, spec.length)
            x = self.cx.consts.const_float(node, label)
            if spec.minimum is not None and x < spec.minimum:
                self.fail(node.span, f"{label} must be at least {fmt_num(spec.minimum)}, got {fmt_num(x)}")
            if spec.positive and not x > 0:
                self.fail(node.span, f"{label} must be positive, got {fmt_num(x)}")
            values.append(x)
        return Param(s.key, values[0], values[-1])
