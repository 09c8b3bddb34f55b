"""Contact queries on MJX: `contact(a, b)` / `contact_force(a, b)` of every env, for both MJX implementations.

A query is a pair of geom sets; its value per env is whether any geom of one
set touches (dist < 0) any geom of the other, and the summed normal force of
those contacts (the efc_force rows of each contact: the pyramid's 2 (condim - 1)
edges, or the elliptic cone's first row).

The two implementations keep contacts differently:

* JAX (`impl=jax`): every env has H fixed contact slots (`data._impl.contact`,
  one row per possible contact, `dist` large when apart) and its own
  `efc_force` rows; the tables are per slot, so the query is per env (vmapped).
* Warp (`impl=warp`): one pool of `naconmax` contacts shared by all envs of the
  batch (`data._impl.contact__*`, not batched), of which the first `nacon` are
  real, each tagged with the env (`worldid`) it belongs to; `efc__force` is per
  env. The query runs once over the pool and sums each env's contacts with a
  segment sum, so its cost is the pool's size, not envs x pool.

    queries = ContactQueries.create(spec.contact_queries, mj_model, template, impl)
    touching_EP, force_EP = queries.batch(data_E)        # (E, P) each, float32
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

__all__ = ["ContactQueries"]


@dataclass(frozen=True)
class ContactQueries:
    """Static tables of the P contact queries (pairs of geom sets over the G geoms)."""

    side_a_PG: np.ndarray  # bool: geom g is on side a of query p
    side_b_PG: np.ndarray
    impl: str  # "jax" | "warp"
    pyramidal: bool
    # impl=jax: the efc_force rows of each of the H contact slots
    rows_HZ: np.ndarray
    valid_HZ: np.ndarray

    @property
    def size(self) -> int:
        return int(self.side_a_PG.shape[0])

    @staticmethod
    def create(queries: Sequence[Any], mj_model: mujoco.MjModel, template: Any, impl: str) -> "ContactQueries":
        """Tables for `queries` (SPEC["contact_queries"]) on `mj_model`; `template` is one env's MJX Data."""
        ngeom = mj_model.ngeom
        side_a = np.zeros((len(queries), ngeom), dtype=bool)
        side_b = np.zeros((len(queries), ngeom), dtype=bool)
        for c, q in enumerate(queries):
            side_a[c, [int(g) for g in q["geoms_a"]]] = True
            side_b[c, [int(g) for g in q["geoms_b"]]] = True
        pyramidal = mj_model.opt.cone == mujoco.mjtCone.mjCONE_PYRAMIDAL
        rows, valid = np.zeros((0, 1), np.int32), np.zeros((0, 1), np.float32)
        if impl == "jax":
            contact = template._impl.contact
            adr = np.asarray(contact.efc_address, dtype=np.int64).reshape(-1)
            dim = np.asarray(contact.dim, dtype=np.int64).reshape(-1)
            nrows = _rows_per_contact(dim, pyramidal)
            width = int(nrows.max()) if adr.size else 1
            rows_all = adr[:, None] + np.arange(width)[None, :]
            ok = (np.arange(width)[None, :] < nrows[:, None]) & (adr[:, None] >= 0)
            rows, valid = np.where(ok, rows_all, 0).astype(np.int32), ok.astype(np.float32)
        return ContactQueries(side_a, side_b, impl, bool(pyramidal), rows, valid)

    def batch(self, data_E: Any) -> tuple[jax.Array, jax.Array]:
        """(touching_EP, force_EP) of a batch of envs (outside any vmap over envs)."""
        num_envs = data_E.qpos.shape[0]
        if self.size == 0:
            z = jnp.zeros((num_envs, 0), jnp.float32)
            return z, z
        if self.impl == "warp":
            return self._warp(data_E, num_envs)
        if self.rows_HZ.shape[0] == 0:  # the model has no contact slots
            z = jnp.zeros((num_envs, self.size), jnp.float32)
            return z, z
        return jax.vmap(self._jax_one)(data_E)

    def _match_PH(self, geom_H2: jax.Array) -> jax.Array:
        g1_H, g2_H = geom_H2[:, 0], geom_H2[:, 1]
        side_a, side_b = jnp.asarray(self.side_a_PG), jnp.asarray(self.side_b_PG)
        return (side_a[:, g1_H] & side_b[:, g2_H]) | (side_b[:, g1_H] & side_a[:, g2_H])

    def _jax_one(self, data: Any) -> tuple[jax.Array, jax.Array]:
        contact = data._impl.contact
        active_PH = self._match_PH(contact.geom) & (contact.dist < 0)[None, :]
        force_H = jnp.sum(data._impl.efc_force[self.rows_HZ] * self.valid_HZ, axis=1)
        touching_P = jnp.any(active_PH, axis=1).astype(jnp.float32)
        force_P = jnp.sum(jnp.where(active_PH, force_H[None, :], 0.0), axis=1)
        return touching_P, force_P

    def _warp(self, data_E: Any, num_envs: int) -> tuple[jax.Array, jax.Array]:
        impl = data_E._impl
        dist_H = impl.contact__dist
        pool = dist_H.shape[0]
        if pool == 0:
            z = jnp.zeros((num_envs, self.size), jnp.float32)
            return z, z
        real_H = jnp.arange(pool) < impl.nacon.reshape(-1)[0]
        world_H = impl.contact__worldid
        active_PH = self._match_PH(impl.contact__geom) & (real_H & (dist_H < 0))[None, :]
        # the normal force of each pooled contact, from its env's efc_force rows
        efc_force_EJ = impl.efc__force
        njmax = efc_force_EJ.shape[1]
        adr_HZ = impl.contact__efc_address.reshape(pool, -1)  # Z = the most pyramid edges of a contact
        width = adr_HZ.shape[1] if self.pyramidal else 1
        dim_H = impl.contact__dim
        nrows_H = jnp.where(dim_H <= 1, 1, 2 * (dim_H - 1)) if self.pyramidal else jnp.ones_like(dim_H)
        rows_HZ = adr_HZ[:, :1] + jnp.arange(width)[None, :]
        ok_HZ = (jnp.arange(width)[None, :] < nrows_H[:, None]) & (adr_HZ[:, :1] >= 0) & (rows_HZ < njmax)
        env_H = jnp.clip(world_H, 0, num_envs - 1)
        force_HZ = efc_force_EJ[env_H[:, None], jnp.clip(rows_HZ, 0, njmax - 1)]
        force_H = jnp.sum(jnp.where(ok_HZ, force_HZ, 0.0), axis=1)
        count_EP = jax.ops.segment_sum(active_PH.T.astype(jnp.float32), world_H, num_segments=num_envs)
        force_EP = jax.ops.segment_sum(jnp.where(active_PH, force_H[None, :], 0.0).T, world_H, num_segments=num_envs)
        return (count_EP > 0).astype(jnp.float32), force_EP

def _rows_per_contact(dim: np.ndarray, pyramidal: bool) -> np.ndarray:
    """efc_force rows that make up each contact's normal force."""
    return np.where(dim <= 1, 1, 2 * (dim - 1)) if pyramidal else np.ones_like(dim)
