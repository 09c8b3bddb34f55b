"""Rough terrain: one MuJoCo height field of `rows x cols` square tiles, harder along the rows.

A task's `model` block may say

    terrain rows=5 size=8m resolution=0.05m seed=0
        flat
        rough  amplitude=0.02m..0.10m
        slope  grade=0..0.3
        stairs height=0.02m..0.15m width=0.3m

Tile (r, c) is centred at x = (r - (rows - 1) / 2) * size, y = (c - (cols - 1) / 2) * size
(the grid is centred on the world origin, rows along x), and has difficulty
d = r / (rows - 1) (0 with one row); column c has the kind of tile line c mod
the number of lines. A parameter written `lo..hi` is lo + d * (hi - lo). The kinds:

* `flat`: height 0;
* `rough amplitude=A [cell=C]`: heights uniform in [0, A], drawn on a grid of
  spacing C (default: the resolution) and interpolated bilinearly;
* `slope grade=G`: a pyramid, its sides of slope G (rise / run) rising from 0
  at the tile's edge to its central platform (G < 0: a pit);
* `stairs height=H width=W`: pyramid stairs, steps H high and W deep rising
  from 0 at the tile's edge to the central platform (H < 0: descending stairs).

Every tile keeps a flat square `platform` (side in m) at its centre, except
rough tiles. A flat `border` (m) surrounds the grid. The ground height a robot
spawns on is the highest sample of its tile's platform (`tile_origins`).

`heights` is deterministic per seed: each tile draws from its own
`numpy.random.RandomState((seed, row, col))` (whose stream numpy keeps fixed
across versions), so the checker, the compiler and both engines build the
same field, sample for sample. `add_terrain` adds it to a `mujoco.MjSpec`: an
hfield asset and a geom, both named `terrain`, in the world body.

This module imports nothing from the rest of ksimdsl (mujoco only inside `add_terrain`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

__all__ = [
    "TERRAIN_NAME",
    "MAX_SAMPLES",
    "MAX_TILES",
    "BASE_DEPTH",
    "ParamSpec",
    "TILE_KINDS",
    "Param",
    "Tile",
    "Terrain",
    "TerrainError",
    "generate",
    "heights",
    "tile_origins",
    "add_terrain",
]

#: The name of the terrain's geom and of its hfield asset.
TERRAIN_NAME = "terrain"
#: Height samples at most (MJX keeps the field on the device; the C engine copies it per randomized env).
MAX_SAMPLES = 2_000_000
#: Tiles at most (the compiled reset kernel holds one ground height per tile).
MAX_TILES = 4096
#: Depth of the height field's solid base below its lowest sample (m).
BASE_DEPTH = 1.0
#: Relative tolerance for sizes that must be whole multiples of the resolution.
_MULTIPLE_TOL = 1e-6


class TerrainError(Exception):
    """Terrain parameters that cannot be built (message is user-facing, one line)."""


@dataclass(frozen=True)
class ParamSpec:
    """A tile kind's parameter: a length (`m` or a plain number) or a plain number, its bounds."""

    length: bool  # a length in m (a plain number is meters too)
    required: bool
    minimum: float | None = None  # inclusive
    positive: bool = False
    doc: str = ""


#: Tile kind -> its parameters.
TILE_KINDS: Mapping[str, Mapping[str, ParamSpec]] = {
    "flat": {},
    "rough": {
        "amplitude": ParamSpec(True, True, minimum=0.0, doc="noise heights in [0, amplitude]"),
        "cell": ParamSpec(True, False, positive=True, doc="spacing of the noise grid (default: the resolution)"),
    },
    "slope": {"grade": ParamSpec(False, True, doc="rise over run of the pyramid's sides (< 0: a pit)")},
    "stairs": {
        "height": ParamSpec(True, True, doc="rise of each step (< 0: stairs down into a pit)"),
        "width": ParamSpec(True, True, positive=True, doc="depth of each step"),
    },
}


@dataclass(frozen=True)
class Param:
    """One tile parameter: `lo` at difficulty 0, `hi` at difficulty 1 (equal for a single value)."""

    name: str
    lo: float
    hi: float

    def at(self, difficulty: float) -> float:
        return self.lo + (self.hi - self.lo) * difficulty


@dataclass(frozen=True)
class Tile:
    kind: str
    params: tuple[Param, ...] = ()

    def value(self, name: str, difficulty: float, default: float | None = None) -> float:
        for p in self.params:
            if p.name == name:
                return p.at(difficulty)
        if default is None:
            raise TerrainError(f"a {self.kind} tile needs {name}=...")
        return default


@dataclass(frozen=True)
class Terrain:
    """The terrain's parameters (lengths in m); column c is `tiles[c % len(tiles)]`."""

    rows: int
    cols: int
    size: float
    resolution: float
    tiles: tuple[Tile, ...]
    seed: int = 0
    platform: float = 1.0
    border: float = 0.0
    friction: float | None = None

    # ---- the sample grid

    @property
    def cells_per_tile(self) -> int:
        return round(self.size / self.resolution)

    @property
    def border_cells(self) -> int:
        return round(self.border / self.resolution)

    @property
    def samples(self) -> tuple[int, int]:
        """(ny, nx): samples along y (the hfield's rows) and along x (its columns)."""
        n, b = self.cells_per_tile, self.border_cells
        return self.cols * n + 2 * b + 1, self.rows * n + 2 * b + 1

    def difficulty(self, row: int) -> float:
        return row / (self.rows - 1) if self.rows > 1 else 0.0

    def tile(self, col: int) -> Tile:
        return self.tiles[col % len(self.tiles)]

    def center(self, row: int, col: int) -> tuple[float, float]:
        return (row - (self.rows - 1) / 2) * self.size, (col - (self.cols - 1) / 2) * self.size

    def problems(self) -> list[tuple[str, str]]:
        """[(setting, message)]: what makes these parameters unbuildable (the checker reports them)."""
        out: list[tuple[str, str]] = []
        if self.rows < 1 or self.cols < 1:
            out.append(("rows" if self.rows < 1 else "cols", "the terrain needs at least one row and one column"))
        elif self.rows * self.cols > MAX_TILES:
            out.append(("rows", f"the terrain has {self.rows} x {self.cols} tiles, more than {MAX_TILES}"))
        if not self.size > 0 or not self.resolution > 0:
            return out + [("size" if not self.size > 0 else "resolution", "terrain size and resolution must be positive")]
        if not self.tiles:
            out.append(("", "the terrain needs at least one tile line (flat, rough, slope or stairs)"))
        for key, length in (("size", self.size), ("border", self.border)):
            cells = length / self.resolution
            if abs(cells - round(cells)) > _MULTIPLE_TOL * max(1.0, cells):
                res = _fmt(self.resolution)
                out.append((key, f"{key} ({_fmt(length)}m) must be a whole multiple of the resolution ({res}m)"))
        if self.cells_per_tile < 2:
            out.append(("resolution", f"the resolution ({_fmt(self.resolution)}m) must be at most half the tile size"))
        if not 0 <= self.platform < self.size:
            size = _fmt(self.size)
            out.append(("platform", f"platform ({_fmt(self.platform)}m) must be smaller than the tile size ({size}m)"))
        ny, nx = self.samples if not out else (0, 0)
        if ny * nx > MAX_SAMPLES:
            out.append((
                "resolution",
                f"the terrain has {nx} x {ny} = {nx * ny} height samples, more than {MAX_SAMPLES}: "
                "use a coarser resolution (a larger spacing) or fewer or smaller tiles",
            ))
        return out

    # ---- SPEC literals

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "cols": self.cols,
            "size": self.size,
            "resolution": self.resolution,
            "seed": self.seed,
            "platform": self.platform,
            "border": self.border,
            "friction": self.friction,
            "tiles": [{"kind": t.kind, "params": [[p.name, p.lo, p.hi] for p in t.params]} for t in self.tiles],
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "Terrain":
        d = dict(d)
        tiles = tuple(
            Tile(str(t["kind"]), tuple(Param(str(n), float(lo), float(hi)) for n, lo, hi in t.get("params", ())))
            for t in d.pop("tiles")
        )
        friction = d.pop("friction", None)
        return Terrain(
            rows=int(d.pop("rows")),
            cols=int(d.pop("cols")),
            size=float(d.pop("size")),
            resolution=float(d.pop("resolution")),
            tiles=tiles,
            seed=int(d.pop("seed", 0)),
            platform=float(d.pop("platform", 1.0)),
            border=float(d.pop("border", 0.0)),
            friction=None if friction is None else float(friction),
            **d,  # anything else is a TypeError for the caller
        )


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# --------------------------------------------------------------------------- the heights


def generate(terrain: Terrain) -> np.ndarray:
    """Ground heights (m), shape (ny, nx) = `terrain.samples`, freshly computed (`heights` caches them);
    [j, i] is at x = -Lx/2 + i * resolution, y = -Ly/2 + j * resolution (the hfield's layout).

    Raises TerrainError for parameters that cannot be built (`Terrain.problems`).
    """
    problems = terrain.problems()
    if problems:
        raise TerrainError(problems[0][1])
    ny, nx = terrain.samples
    n, b = terrain.cells_per_tile, terrain.border_cells
    out = np.zeros((ny, nx))
    local = (np.arange(n + 1) - n / 2) * terrain.resolution  # sample offsets from a tile's centre
    for r in range(terrain.rows):
        for c in range(terrain.cols):
            rng = np.random.RandomState([terrain.seed, r, c])
            tile = _tile_heights(terrain, terrain.tile(c), terrain.difficulty(r), local, rng)
            out[b + c * n : b + (c + 1) * n + 1, b + r * n : b + (r + 1) * n + 1] = tile
    return out


@functools.lru_cache(maxsize=4)
def heights(terrain: Terrain) -> np.ndarray:
    """`generate(terrain)`, computed once per parameters (the checker, the compiler and the model
    loader each ask); read-only."""
    out = generate(terrain)
    out.setflags(write=False)
    return out


def _tile_heights(terrain: Terrain, tile: Tile, d: float, local: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """Heights of one tile's (n + 1) x (n + 1) samples, [y, x]."""
    half = terrain.size / 2
    ring = np.maximum(np.abs(local)[None, :], np.abs(local)[:, None])  # distance from the centre, in the max norm
    inward = half - np.maximum(ring, terrain.platform / 2)  # from the tile's edge towards its platform
    if tile.kind == "flat":
        return np.zeros_like(ring)
    if tile.kind == "slope":
        return tile.value("grade", d) * inward
    if tile.kind == "stairs":
        width = tile.value("width", d)
        if not width > 0:
            raise TerrainError(f"stairs width must be positive, got {_fmt(width)}")
        return tile.value("height", d) * np.floor(inward / width + 1e-9)
    if tile.kind == "rough":
        amplitude = tile.value("amplitude", d)
        cell = tile.value("cell", d, default=terrain.resolution)
        if not cell > 0:
            raise TerrainError(f"rough cell must be positive, got {_fmt(cell)}")
        coarse = max(1, round(terrain.size / cell))
        grid = rng.random_sample((coarse + 1, coarse + 1)) * amplitude  # [y, x]
        at = (local + half) / terrain.size * coarse  # each sample's position on the coarse grid
        i0 = np.clip(np.floor(at).astype(int), 0, coarse - 1)
        f = at - i0
        along_x = grid[:, i0] * (1 - f) + grid[:, i0 + 1] * f  # (coarse + 1, n + 1)
        return along_x[i0, :] * (1 - f)[:, None] + along_x[i0 + 1, :] * f[:, None]
    raise TerrainError(f"unknown tile kind '{tile.kind}'")


def tile_origins(terrain: Terrain) -> np.ndarray:
    """(rows * cols, 3): tile r * cols + c's centre x, y and the ground height a robot spawns on there
    (the highest sample of its central platform, at least the centre sample)."""
    h = heights(terrain)
    n, b = terrain.cells_per_tile, terrain.border_cells
    k = min(n // 2, int(math.floor(terrain.platform / 2 / terrain.resolution + 1e-9)))  # platform half-width, samples
    out = np.zeros((terrain.rows * terrain.cols, 3))
    for r in range(terrain.rows):
        for c in range(terrain.cols):
            i, j = b + r * n + n // 2, b + c * n + n // 2  # the centre sample (x index i, y index j)
            x, y = terrain.center(r, c)
            out[r * terrain.cols + c] = (x, y, h[j - k : j + k + 1, i - k : i + k + 1].max())
    return out


# --------------------------------------------------------------------------- the MjSpec edit


def add_terrain(spec: Any, terrain: Terrain, material: str | None = None) -> None:
    """Add the height field asset and geom `terrain` to the world body of `spec`.

    The samples are stored normalized to [0, 1] (min 0, max 1, as MuJoCo keeps them) with the
    geom at the lowest height and the field's elevation the range, so the surface is `heights`.
    """
    import mujoco

    h = heights(terrain)
    ny, nx = h.shape
    lo, hi = float(h.min()), float(h.max())
    span = hi - lo
    data = (h - lo) / span if span > 0 else np.zeros_like(h)
    lx, ly = (nx - 1) * terrain.resolution, (ny - 1) * terrain.resolution
    spec.add_hfield(
        name=TERRAIN_NAME,
        size=[lx / 2, ly / 2, span if span > 0 else 1e-3, BASE_DEPTH],
        nrow=ny,
        ncol=nx,
        userdata=data.ravel().tolist(),
    )
    geom = spec.worldbody.add_geom(
        name=TERRAIN_NAME, type=mujoco.mjtGeom.mjGEOM_HFIELD, hfieldname=TERRAIN_NAME, pos=[0.0, 0.0, lo]
    )
    if terrain.friction is not None:
        geom.friction = [float(terrain.friction), 0.005, 0.0001]
    if material is not None:
        geom.material = material
