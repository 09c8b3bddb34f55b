"""Height scans on MJX: the downward rays of `height_scan(...)` for one env, in JAX.

MJX's `mjx.ray` has no height fields, so the rays are intersected here with
the ground of `engine/heightscan.py` directly; the ground is static, so its
geometry is a set of constants, and a ray straight down has a closed form per
kind of geom, written after C MuJoCo's `engine_ray.c` so that both engines
(and `mj_ray`) agree:

* plane: the height of the plane over the point, where its front faces up
  (MuJoCo's `ray_plane`; infinite, see `engine/heightscan.py`);
* box: the nearest face the ray crosses at or after its start (MuJoCo's `ray_box`);
* height field (z axis vertical): MuJoCo's triangulation of the grid, each cell
  split along its diagonal from (row r, col c) to (r + 1, c + 1), the surface
  linear on each triangle (not a bilinear patch), zero outside the field.

The ground height at a point is the highest hit at or below the ray's start
(the first surface a downward ray meets).

    scans = MjxHeightScan(ScanTables.from_spec(spec, mj_model))
    height_H = scans.one(data.xpos, data.xmat)      # one env, inside the vmap
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from ksimdsl.runtime.engine.heightscan import BOX, HFIELD, MISS, PLANE, RAY_TOP, ScanTables

__all__ = ["MjxHeightScan"]

_MINVAL = float(mujoco.mjMINVAL)
#: The two other axes of each box face's axis (MuJoCo's `iface`).
_IFACE = ((1, 2), (0, 2), (0, 1))


class MjxHeightScan:
    """The scan points and ground of a task as JAX constants; `one` evaluates one env's scans."""

    def __init__(self, tables: ScanTables):
        self.size = tables.size
        self.body_H = np.asarray(tables.body_H)
        self.offset_H2 = jnp.asarray(tables.offset_H2, jnp.float32)
        types = tables.type_G
        # a plane whose front does not face up is never hit by a downward ray (MuJoCo rejects it too)
        planes = np.flatnonzero((types == PLANE) & (tables.mat_G9[:, 8] >= _MINVAL))
        self.plane_pos_P3 = jnp.asarray(tables.pos_G3[planes], jnp.float32)
        self.plane_normal_P3 = jnp.asarray(tables.mat_G9[planes][:, [2, 5, 8]], jnp.float32)
        boxes = np.flatnonzero(types == BOX)
        self.box_pos_X3 = jnp.asarray(tables.pos_G3[boxes], jnp.float32)
        self.box_mat_X9 = jnp.asarray(tables.mat_G9[boxes], jnp.float32)
        self.box_size_X3 = jnp.asarray(tables.size_G3[boxes], jnp.float32)
        self.hfields = [
            (
                jnp.asarray(tables.pos_G3[h.slot], jnp.float32),
                tables.mat_G9[h.slot].astype(np.float32),
                h.size.astype(np.float32),
                jnp.asarray(h.data_RC, jnp.float32),
            )
            for h in tables.hfields
        ]
        assert all(t in (PLANE, BOX, HFIELD) for t in types)

    def one(self, xpos_B3: jax.Array, xmat_B33: jax.Array) -> jax.Array:
        """The (H,) scan values of one env from its body poses (xpos, xmat as in mjx.Data)."""
        pos_H3 = xpos_B3[self.body_H]
        mat_H9 = xmat_B33.reshape(xmat_B33.shape[0], 9)[self.body_H]
        # the body's heading: its x axis in the world's xy plane
        hx, hy = mat_H9[:, 0], mat_H9[:, 3]
        norm = jnp.sqrt(hx * hx + hy * hy)
        level = norm > 1e-9
        safe = jnp.where(level, norm, 1.0)
        c, s = jnp.where(level, hx / safe, 1.0), jnp.where(level, hy / safe, 0.0)
        ox, oy = self.offset_H2[:, 0], self.offset_H2[:, 1]
        x = pos_H3[:, 0] + c * ox - s * oy
        y = pos_H3[:, 1] + s * ox + c * oy
        z = pos_H3[:, 2]
        ground = self.ground_z(x, y, z + RAY_TOP)
        return jnp.minimum(z - ground, MISS)

    def ground_z(self, x_H: jax.Array, y_H: jax.Array, top_H: jax.Array) -> jax.Array:
        """Height of the first ground a ray from (x, y, top) straight down meets; -inf where none."""
        best = jnp.full(x_H.shape, -jnp.inf, jnp.float32)
        if self.plane_pos_P3.shape[0]:
            best = jnp.maximum(best, jnp.max(self._planes(x_H, y_H, top_H), axis=1))
        if self.box_pos_X3.shape[0]:
            best = jnp.maximum(best, jnp.max(self._boxes(x_H, y_H, top_H), axis=1))
        for hfield in self.hfields:
            best = jnp.maximum(best, self._hfield(hfield, x_H, y_H, top_H))
        return best

    def _planes(self, x_H, y_H, top_H) -> jax.Array:
        p, n = self.plane_pos_P3, self.plane_normal_P3
        dx, dy = x_H[:, None] - p[None, :, 0], y_H[:, None] - p[None, :, 1]
        z = p[None, :, 2] - (n[None, :, 0] * dx + n[None, :, 1] * dy) / n[None, :, 2]
        return jnp.where(z <= top_H[:, None], z, -jnp.inf)

    def _boxes(self, x_H, y_H, top_H) -> jax.Array:
        p, m, size = self.box_pos_X3, self.box_mat_X9, self.box_size_X3
        d = (x_H[:, None] - p[None, :, 0], y_H[:, None] - p[None, :, 1], top_H[:, None] - p[None, :, 2])
        # the ray in the box's frame: lp = R^T (start - pos), lv = R^T (0, 0, -1)
        lp = [d[0] * m[None, :, i] + d[1] * m[None, :, 3 + i] + d[2] * m[None, :, 6 + i] for i in range(3)]
        lv = [-m[None, :, 6 + i] for i in range(3)]
        dist = jnp.full(lp[0].shape, jnp.inf, jnp.float32)
        for i, (j0, j1) in enumerate(_IFACE):
            crosses = jnp.abs(lv[i]) > _MINVAL
            lv_i = jnp.where(crosses, lv[i], 1.0)
            for side in (-1.0, 1.0):
                sol = (side * size[None, :, i] - lp[i]) / lv_i
                q0, q1 = lp[j0] + sol * lv[j0], lp[j1] + sol * lv[j1]
                ok = crosses & (sol >= 0) & (jnp.abs(q0) <= size[None, :, j0]) & (jnp.abs(q1) <= size[None, :, j1])
                dist = jnp.minimum(dist, jnp.where(ok, sol, jnp.inf))
        return jnp.where(jnp.isfinite(dist), top_H[:, None] - dist, -jnp.inf)

    @staticmethod
    def _hfield(hfield, x_H, y_H, top_H) -> jax.Array:
        pos, m, size, data_RC = hfield
        nrow, ncol = data_RC.shape
        dx, dy = x_H - pos[0], y_H - pos[1]
        lx, ly = m[0] * dx + m[3] * dy, m[1] * dx + m[4] * dy  # R^T (point - pos); z is vertical
        inside = (jnp.abs(lx) <= size[0]) & (jnp.abs(ly) <= size[1])
        u = (lx + size[0]) / (2.0 * size[0] / (ncol - 1))
        v = (ly + size[1]) / (2.0 * size[1] / (nrow - 1))
        c = jnp.clip(jnp.floor(u), 0, ncol - 2)
        r = jnp.clip(jnp.floor(v), 0, nrow - 2)
        fu, fv = u - c, v - r
        ci, ri = c.astype(jnp.int32), r.astype(jnp.int32)
        h00, h01 = data_RC[ri, ci], data_RC[ri, ci + 1]  # h01: the next column (x)
        h10, h11 = data_RC[ri + 1, ci], data_RC[ri + 1, ci + 1]  # h10: the next row (y)
        below = h00 + fu * (h01 - h00) + fv * (h11 - h01)  # triangle (r, c), (r+1, c+1), (r, c+1)
        above = h00 + fv * (h10 - h00) + fu * (h11 - h10)  # triangle (r, c), (r+1, c+1), (r+1, c)
        z = pos[2] + size[2] * jnp.where(fu >= fv, below, above)
        return jnp.where(inside & (z <= top_H), z, -jnp.inf)
