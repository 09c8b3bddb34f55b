"""The pieces of PPO's loss: GAE, the clipped surrogate and value losses, KL estimates, diagnostics.

Pure functions of arrays (`ksimdsl.runtime.rl.ppo` combines them in `ppo_loss`
and `update`). Shape suffixes as in ppo.py: T time, E environments, A action,
N any flattened batch (every input of one function has the same shape).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from ksimdsl.runtime.rl import distributions as D

__all__ = [
    "gae",
    "clipped_surrogate_loss",
    "clipped_value_loss",
    "normalize_advantage",
    "approx_kl",
    "old_policy",
    "policy_kl",
    "clip_fraction",
    "explained_variance",
]


# --------------------------------------------------------------------------- GAE


def gae(
    reward_TE: Array,
    value_TE: Array,
    done_TE: Array,
    failure_TE: Array,
    bootstrap_value_TE: Array,
    last_value_E: Array,
    gamma: float,
    lam: float,
) -> tuple[Array, Array]:
    """Generalized advantage estimation -> (advantage_TE, return_TE).

    The value of what follows step t is

        next_t = 0                      if the episode ended at t by a failure,
                 bootstrap_value_TE[t]  if it ended at t by success or truncation,
                 value_TE[t + 1]        otherwise (last_value_E after the last step),

    and, scanning backwards,

        delta_t = reward_t + gamma * next_t - value_t
        adv_t   = delta_t + gamma * lam * (1 - done_t) * adv_{t+1}

    so the recursion never crosses an episode end. return_TE = adv + value.
    """
    next_value_TE = jnp.concatenate([value_TE[1:], last_value_E[None]], axis=0)

    def step(adv_next_E: Array, inp: tuple[Array, ...]) -> tuple[Array, Array]:
        reward_E, value_E, next_E, done_E, failure_E, bootstrap_E = inp
        next_E = jnp.where(done_E, jnp.where(failure_E, 0.0, bootstrap_E), next_E)
        delta_E = reward_E + gamma * next_E - value_E
        adv_E = delta_E + gamma * lam * jnp.where(done_E, 0.0, adv_next_E)
        return adv_E, adv_E

    _, advantage_TE = jax.lax.scan(
        step,
        jnp.zeros_like(last_value_E),
        (reward_TE, value_TE, next_value_TE, done_TE, failure_TE, bootstrap_value_TE),
        reverse=True,
    )
    return advantage_TE, advantage_TE + value_TE


# --------------------------------------------------------------------------- losses


def clipped_surrogate_loss(log_prob_N: Array, old_log_prob_N: Array, advantage_N: Array, clip: float) -> Array:
    """PPO's clipped policy objective, negated: () = -mean(min(r A, clip(r, 1-eps, 1+eps) A)).

    All inputs (N,) (any shape, same for all); r = exp(log_prob - old_log_prob).
    Where the clipped term is the smaller one the gradient is zero.
    """
    ratio_N = jnp.exp(log_prob_N - old_log_prob_N)
    unclipped_N = ratio_N * advantage_N
    clipped_N = jnp.clip(ratio_N, 1.0 - clip, 1.0 + clip) * advantage_N
    return -jnp.mean(jnp.minimum(unclipped_N, clipped_N))


def clipped_value_loss(value_N: Array, old_value_N: Array, return_N: Array, value_clip: float) -> Array:
    """() = 0.5 mean(max((v - R)^2, (v_old + clip(v - v_old, -c, c) - R)^2)); plain MSE/2 if c == 0.

    value_N, old_value_N, return_N: (N,) (any shape, same for all).
    """
    unclipped_N = jnp.square(value_N - return_N)
    if value_clip <= 0:
        return 0.5 * jnp.mean(unclipped_N)
    clipped_N = jnp.square(old_value_N + jnp.clip(value_N - old_value_N, -value_clip, value_clip) - return_N)
    return 0.5 * jnp.mean(jnp.maximum(unclipped_N, clipped_N))


def normalize_advantage(advantage_N: Array, eps: float = 1e-8) -> Array:
    """(A - mean(A)) / (std(A) + eps) over all elements."""
    return (advantage_N - jnp.mean(advantage_N)) / (jnp.std(advantage_N) + eps)


def approx_kl(log_ratio_N: Array) -> Array:
    """KL(pi_old || pi_new) estimate () with the k3 estimator mean((r - 1) - log r), r = exp(log_ratio)."""
    return jnp.mean(jnp.expm1(log_ratio_N) - log_ratio_N)


def old_policy(dist_TE: D.Distribution, action_TEA: Array) -> D.Normal | Array:
    """What `Batch.old_policy_TE` keeps of the actor's distributions: a Normal whole, a mixture's log pi(action)."""
    return dist_TE if isinstance(dist_TE, D.Normal) else D.log_prob(dist_TE, action_TEA)


def policy_kl(old_policy_N: D.Normal | Array, dist_N: D.Distribution, log_prob_N: Array) -> Array:
    """KL(pi_old || pi) () averaged over the samples, the quantity `lr_schedule=adaptive` follows.

    Normal head: exact (`D.normal_kl`, summed over action dims). Mixture head (no closed
    form): the k3 sample estimate `approx_kl` of the log-ratio log pi(a) - log pi_old(a) of
    the taken actions, `log_prob_N` being log pi(a); unbiased where a ~ pi_old.
    `old_policy_N` as `old_policy` makes it, any batch shape N.
    """
    if isinstance(old_policy_N, D.Normal):
        return jnp.mean(D.normal_kl(old_policy_N, dist_N))
    return approx_kl(log_prob_N - old_policy_N)


def clip_fraction(log_ratio_N: Array, clip: float) -> Array:
    """Fraction () of samples whose ratio lies outside [1 - clip, 1 + clip]."""
    return jnp.mean((jnp.abs(jnp.exp(log_ratio_N) - 1.0) > clip).astype(jnp.float32))


def explained_variance(value_N: Array, return_N: Array) -> Array:
    """1 - Var(R - V) / Var(R) (); 0 where the returns have no variance."""
    var_return = jnp.var(return_N)
    return jnp.where(var_return > 1e-12, 1.0 - jnp.var(return_N - value_N) / jnp.maximum(var_return, 1e-12), 0.0)
