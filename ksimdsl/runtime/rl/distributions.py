"""Action distributions of the policy, as plain pytrees and pure functions.

Two families, selected by the task's `policy ... dist=`:

* `Normal`: a diagonal Gaussian, `mean_A`, `std_A`.
* `Mixture`: a mixture of K diagonal Gaussians whose components are *joint over
  the action dimensions*: one categorical choice picks component k, and then
  every action dimension is drawn from that component's Gaussian. This is the
  standard mixture-density policy head; it can represent multi-modal joint
  actions ("either both legs forward or both back"), which a per-dimension
  mixture cannot.

Shapes are written per environment; every function also accepts any number of
leading batch dimensions (`mean_A` may be `mean_TEA`), so callers need not
vmap. Actions are raw and unbounded: nothing here squashes or clips them.

The parameters come out of the network head (`ksimdsl.runtime.rl.networks`);
`std_from_raw` maps an unconstrained network output to a standard deviation in
`[min_std, max_std]`.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

__all__ = [
    "Normal",
    "Mixture",
    "Distribution",
    "std_from_raw",
    "raw_from_std",
    "sample",
    "log_prob",
    "entropy",
    "mode",
    "normal_kl",
]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class Normal(eqx.Module):
    """Diagonal Gaussian. `mean_A`, `std_A`: (..., A)."""

    mean_A: Array
    std_A: Array


class Mixture(eqx.Module):
    """Mixture of K diagonal Gaussians, components joint over the A action dims.

    `logits_K`: (..., K) unnormalized component log-weights;
    `mean_KA`, `std_KA`: (..., K, A).
    """

    logits_K: Array
    mean_KA: Array
    std_KA: Array


Distribution = Normal | Mixture


def std_from_raw(raw: Array, min_std: float, max_std: float) -> Array:
    """`clip(softplus(raw), min_std, max_std)`, elementwise."""
    return jnp.clip(jax.nn.softplus(raw), min_std, max_std)


def raw_from_std(std: float) -> float:
    """Inverse of softplus: the raw value whose `std_from_raw` is `std` (inside the bounds)."""
    if std <= 0:
        raise ValueError(f"std must be positive, got {std}")
    return std + math.log(-math.expm1(-std))  # log(exp(std) - 1), stable for large std


def _normal_log_prob(mean: Array, std: Array, a: Array) -> Array:
    """Elementwise log N(a; mean, std^2)."""
    z = (a - mean) / std
    return -0.5 * z * z - jnp.log(std) - _LOG_SQRT_2PI


def _normal_entropy(std: Array) -> Array:
    """Elementwise entropy of N(., std^2): 0.5 + log(sqrt(2 pi) std)."""
    return 0.5 + _LOG_SQRT_2PI + jnp.log(std)


def sample(dist: Distribution, *, key: Array) -> Array:
    """Draw one action per batch element: (..., A)."""
    if isinstance(dist, Normal):
        return dist.mean_A + dist.std_A * jax.random.normal(key, dist.mean_A.shape, dist.mean_A.dtype)
    if isinstance(dist, Mixture):
        key_k, key_a = jax.random.split(key)
        k = jax.random.categorical(key_k, dist.logits_K, axis=-1)  # (...)
        mean_A = _select_component(dist.mean_KA, k)
        std_A = _select_component(dist.std_KA, k)
        return mean_A + std_A * jax.random.normal(key_a, mean_A.shape, mean_A.dtype)
    raise TypeError(f"not a distribution: {type(dist).__name__}")


def log_prob(dist: Distribution, action_A: Array) -> Array:
    """Log density of `action_A` (..., A), summed over action dims: (...)."""
    if isinstance(dist, Normal):
        return jnp.sum(_normal_log_prob(dist.mean_A, dist.std_A, action_A), axis=-1)
    if isinstance(dist, Mixture):
        log_w_K = jax.nn.log_softmax(dist.logits_K, axis=-1)
        comp_K = jnp.sum(_normal_log_prob(dist.mean_KA, dist.std_KA, action_A[..., None, :]), axis=-1)
        return jax.nn.logsumexp(log_w_K + comp_K, axis=-1)
    raise TypeError(f"not a distribution: {type(dist).__name__}")


def entropy(dist: Distribution) -> Array:
    """Entropy in nats, summed over action dims: (...).

    Normal: exact. Mixture: the mixture entropy has no closed form; this returns
    the standard differentiable upper bound

        H(mixture) <= H(categorical(w)) + sum_k w_k H(N_k),

    (the entropy of the joint (component, action) pair), which is tight when
    the components do not overlap. Maximizing it keeps both the component
    weights and each component's std from collapsing.
    """
    if isinstance(dist, Normal):
        return jnp.sum(_normal_entropy(dist.std_A), axis=-1)
    if isinstance(dist, Mixture):
        log_w_K = jax.nn.log_softmax(dist.logits_K, axis=-1)
        w_K = jnp.exp(log_w_K)
        categorical = -jnp.sum(w_K * log_w_K, axis=-1)
        components_K = jnp.sum(_normal_entropy(dist.std_KA), axis=-1)
        return categorical + jnp.sum(w_K * components_K, axis=-1)
    raise TypeError(f"not a distribution: {type(dist).__name__}")


def normal_kl(p: Normal, q: Normal) -> Array:
    """KL(p || q) of two diagonal Gaussians in nats, summed over action dims: (...).

        sum_a log(q.std / p.std) + (p.std^2 + (p.mean - q.mean)^2) / (2 q.std^2) - 1/2

    A mixture has no closed form (see `ppo.policy_kl` for its sample estimate).
    """
    ratio = jnp.square(p.std_A / q.std_A)
    z = (p.mean_A - q.mean_A) / q.std_A
    return jnp.sum(0.5 * (ratio + z * z - 1.0) - 0.5 * jnp.log(ratio), axis=-1)


def mode(dist: Distribution) -> Array:
    """Deterministic action (..., A): the mean; for a mixture, the mean of its most likely component."""
    if isinstance(dist, Normal):
        return dist.mean_A
    if isinstance(dist, Mixture):
        return _select_component(dist.mean_KA, jnp.argmax(dist.logits_K, axis=-1))
    raise TypeError(f"not a distribution: {type(dist).__name__}")


def _select_component(x_KA: Array, k: Array) -> Array:
    """x_KA (..., K, A) at component index k (...) -> (..., A)."""
    return jnp.take_along_axis(x_KA, k[..., None, None], axis=-2)[..., 0, :]
