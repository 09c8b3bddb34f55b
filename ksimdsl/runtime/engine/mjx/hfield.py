"""`physics sphere_hfield=deepest`: one contact per sphere on a height field in MJX's JAX implementation.

MJX collides a sphere with a height field by testing it against every prism of
the grid cells under it and keeping a 4-point contact manifold (its
`hfield_sphere` collider has `ncon=4`), where a sphere on a plane gets 1.
Every contact is a fixed slot with its constraint rows (4 per contact of a
condim-3 pyramid), active or not, so a Go1's four feet on a height field solve
76 constraint rows per step instead of 28: on the 2-core CPU go1_rough's
whole control step runs at 55% of go1_walk's (64 envs; README, "Rough terrain").

A sphere touches a smooth surface at one point, so `deepest` keeps only the
deepest of those prism contacts: the same contact slots and constraint rows as
on a plane (97% of go1_walk's rate in the same measurement). It is an approximation of MJX's
own result, which matters where a sphere sits across a crease of the grid
(a stair edge, a sharp rough cell). Capsules and boxes on a height field keep
MJX's manifold (a capsule lying on the ground needs two contacts to rest). The
C MuJoCo engine and MuJoCo Warp keep their own contacts.

MJX looks the collision function up by geom types when it sizes the contacts
(`mjx.make_data`) and when it traces a step, so the engine makes both inside
`collisions(physics)`:

    with collisions(spec.physics.sphere_hfield):
        data = mjx.step(model, data)        # traced with one contact per sphere on a height field

The function table it swaps an entry of is MJX's internal one
(`mujoco.mjx._src.collision_driver`); where a MuJoCo release lacks it, asking
for `deepest` is a clear error and `manifold` (the default) never touches it.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from ksimdsl.errors import KsimError
from ksimdsl.settings import PhysicsSettings

__all__ = ["collisions", "SPHERE_HFIELD_CHOICES"]

#: `physics sphere_hfield=` values (the settings schema's): MJX's own manifold, or one contact.
SPHERE_HFIELD_CHOICES: tuple[str, ...] = tuple(PhysicsSettings.table()["sphere_hfield"].choices)

_LOCK = threading.RLock()


def _mjx_internals() -> tuple[dict, Any, Callable[..., Any]]:
    """MJX's collision table, the (HFIELD, SPHERE) key and a 1-contact sphere collider built from its parts."""
    try:
        import jax.numpy as jnp
        from mujoco.mjx._src import collision_convex as convex
        from mujoco.mjx._src import collision_driver as driver
        from mujoco.mjx._src import math as mjx_math
        from mujoco.mjx._src.types import GeomType

        table = driver._COLLISION_FUNC
        key = (GeomType.HFIELD, GeomType.SPHERE)
        prisms, sphere_convex, collider = convex._hfield_collision, convex._sphere_convex, convex.collider
        assert key in table
    except (ImportError, AttributeError, AssertionError) as exc:  # pragma: no cover - another MJX release
        raise KsimError(
            f"physics sphere_hfield=deepest: this mujoco-mjx has no collision table ksimdsl knows ({exc}); "
            "use sphere_hfield=manifold, or the mujoco-mjx of README.md, 'Tested versions'"
        ) from None

    @collider(ncon=1)
    def hfield_sphere_deepest(h: Any, s: Any, subgrid_size: tuple[int, int]) -> Any:
        """The deepest of MJX's prism contacts of a sphere, in the world frame (one contact)."""
        dist, pos, n = prisms(sphere_convex, h, s, jnp.max(s.size), subgrid_size)
        i = jnp.argmin(dist)
        return dist[i], h.mat @ pos[i] + h.pos, mjx_math.make_frame(h.mat @ n[i])

    return table, key, hfield_sphere_deepest


_DEEPEST: tuple[dict, Any, Callable[..., Any]] | None = None


@contextmanager
def collisions(sphere_hfield: str) -> Iterator[None]:
    """MJX's collision functions for `sphere_hfield` while the block runs (sizing data, tracing a step)."""
    global _DEEPEST
    if sphere_hfield not in SPHERE_HFIELD_CHOICES:
        raise KsimError(f"physics sphere_hfield={sphere_hfield!r}: expected one of {', '.join(SPHERE_HFIELD_CHOICES)}")
    if sphere_hfield == "manifold":
        yield
        return
    with _LOCK:
        if _DEEPEST is None:
            _DEEPEST = _mjx_internals()
        table, key, deepest = _DEEPEST
        own = table[key]
        table[key] = deepest
        try:
            yield
        finally:
            table[key] = own
