"""Running observation normalization (pure functions over a `RunningStats` pytree).

The statistics are the count, the mean and M2 (the sum of squared deviations
from the mean) of every observation seen so far, merged batch by batch with
Chan et al.'s parallel form of Welford's algorithm:

    n = n_a + n_b,  delta = mean_b - mean_a
    mean = mean_a + delta * n_b / n
    M2   = M2_a + M2_b + delta^2 * n_a * n_b / n

`normalize` returns `clip((obs - mean) / sqrt(var + eps), -clip, clip)` with the
population variance var = M2 / n. Before the first update (n = 0) and when
normalization is disabled (`train normalize_obs=false`), it is the identity.

`RunningStats` is an equinox Module whose leaves are plain float32 arrays, so
it checkpoints with safetensors like the network weights.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jax import Array

__all__ = ["RunningStats", "init", "update", "is_finite", "variance", "normalize", "CLIP", "EPS"]

#: Normalized observations are clipped to [-CLIP, CLIP].
CLIP = 10.0
#: Added to the variance before the square root.
EPS = 1e-8


class RunningStats(eqx.Module):
    """count (): observations merged so far; mean_O, m2_O (O,). `enabled` is static."""

    count: Array
    mean_O: Array
    m2_O: Array
    enabled: bool = eqx.field(static=True, default=True)


def init(size: int, *, enabled: bool = True) -> RunningStats:
    """Empty statistics for observations of length `size`."""
    return RunningStats(
        count=jnp.zeros((), jnp.float32),
        mean_O=jnp.zeros((size,), jnp.float32),
        m2_O=jnp.zeros((size,), jnp.float32),
        enabled=enabled,
    )


def update(stats: RunningStats, batch_NO: Array) -> RunningStats:
    """Merge a batch of N observations (N, O) into the statistics (no-op when disabled)."""
    if not stats.enabled:
        return stats
    batch_NO = batch_NO.astype(jnp.float32)
    n_b = jnp.asarray(batch_NO.shape[0], jnp.float32)
    mean_b = jnp.mean(batch_NO, axis=0)
    m2_b = jnp.sum(jnp.square(batch_NO - mean_b), axis=0)
    n = stats.count + n_b
    delta = mean_b - stats.mean_O
    return RunningStats(
        count=n,
        mean_O=stats.mean_O + delta * (n_b / n),
        m2_O=stats.m2_O + m2_b + jnp.square(delta) * (stats.count * n_b / n),
        enabled=stats.enabled,
    )


def variance(stats: RunningStats) -> Array:
    """Population variance (O,); ones before the first update."""
    return jnp.where(stats.count > 0, stats.m2_O / jnp.maximum(stats.count, 1.0), 1.0)


def normalize(stats: RunningStats, obs_O: Array, *, clip: float = CLIP, eps: float = EPS) -> Array:
    """obs_O (..., O) -> normalized and clipped (..., O); identity if disabled or empty."""
    if not stats.enabled:
        return obs_O
    z = (obs_O - stats.mean_O) / jnp.sqrt(variance(stats) + eps)
    return jnp.where(stats.count > 0, jnp.clip(z, -clip, clip), obs_O)


def is_finite(stats: RunningStats) -> Array:
    """() bool: every statistic is finite (a NaN or inf observation makes them NaN)."""
    return jnp.isfinite(stats.count) & jnp.all(jnp.isfinite(stats.mean_O)) & jnp.all(jnp.isfinite(stats.m2_O))
