"""The PPO optimizer and its learning rate: warmup, the KL-adaptive schedule, gradient clipping.

`train lr_schedule=`:

* `constant` (the default): `optax.adam(learning_rate)` / `optax.adamw(...)` with
  `learning_rate(config, step)`, a linear warmup over `warmup` optimizer steps
  and then `lr`. Nothing of the schedule is state: the optimizer state is
  optax's own.
* `adaptive`: rsl_rl's KL-adaptive rule (Rudin et al. 2022, "Learning to walk in
  minutes"). The same optimizer with the warmup factor alone as its learning
  rate, then `scale_by_adaptive_lr`, whose state `AdaptiveLRState.lr` is the
  learning rate (a traced float32 scalar in the optimizer state, so it lives in
  the jitted update and in every checkpoint). Before each minibatch's step,
  `ppo.update` measures the KL between the policy at the start of the update
  and the current one on that minibatch and sets

      lr = max(lr / 1.5, 1e-5)   if kl > 2 desired_kl
      lr = min(lr * 1.5, 1e-2)   if kl < desired_kl / 2

  (`adapt_lr`); the step then uses the new value (times the warmup factor).

The two modes have different optimizer-state layouts, so a run resumes with the
`lr_schedule` (and the `optimizer`) it was trained with.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax import Array

from ksimdsl.settings import ADAPTIVE_LR_RANGE

__all__ = [
    "LR_FACTOR",
    "AdaptiveLRState",
    "learning_rate",
    "warmup_factor",
    "make_optimizer",
    "scale_by_adaptive_lr",
    "adapt_lr",
    "adaptive_lr",
    "with_adaptive_lr",
    "step_lr",
    "clip_gradients",
]

#: The adaptive schedule multiplies or divides the learning rate by this per minibatch.
LR_FACTOR = 1.5


class AdaptiveLRState(NamedTuple):
    """State of `scale_by_adaptive_lr`: the learning rate () float32 the next step scales by."""

    lr: Array


def warmup_factor(config: Any, opt_step: Array) -> Array:
    """min(1, (opt_step + 1) / warmup) at optimizer step `opt_step` (0-based); 1 without warmup."""
    if config.warmup <= 0:
        return jnp.asarray(1.0, jnp.float32)
    return jnp.minimum(1.0, (opt_step + 1.0) / config.warmup)


def learning_rate(config: Any, opt_step: Array) -> Array:
    """Learning rate of `lr_schedule=constant` at optimizer step `opt_step` (0-based): linear warmup, then lr."""
    if config.warmup <= 0:
        return jnp.asarray(config.lr, jnp.float32)
    return config.lr * jnp.minimum(1.0, (opt_step + 1.0) / config.warmup)


def scale_by_adaptive_lr(initial_lr: float) -> optax.GradientTransformation:
    """Multiply the updates by `AdaptiveLRState.lr` (starting at `initial_lr`), which `with_adaptive_lr` sets."""

    def init(params: Any) -> AdaptiveLRState:
        del params
        return AdaptiveLRState(lr=jnp.asarray(initial_lr, jnp.float32))

    def update(updates: Any, state: AdaptiveLRState, params: Any = None) -> tuple[Any, AdaptiveLRState]:
        del params
        return jax.tree.map(lambda u: u * state.lr.astype(u.dtype), updates), state

    return optax.GradientTransformation(init, update)


def make_optimizer(config: Any) -> optax.GradientTransformation:
    """adam or adamw(weight_decay) with the warmup; `adaptive` chains `scale_by_adaptive_lr` after it.

    `config`: a `ppo.PPOConfig`. Gradient clipping is `clip_gradients`, before the optimizer.
    """
    if config.lr_schedule == "adaptive":
        schedule: Any = partial(warmup_factor, config)
    else:
        schedule = partial(learning_rate, config)
    if config.optimizer == "adamw":
        base = optax.adamw(schedule, weight_decay=config.weight_decay)
    else:
        base = optax.adam(schedule)
    if config.lr_schedule == "adaptive":
        return optax.chain(base, scale_by_adaptive_lr(config.lr))
    return base


def adapt_lr(lr: Array, kl: Array, desired_kl: float) -> Array:
    """rsl_rl's rule: lr / 1.5 if kl > 2 desired_kl, lr * 1.5 if kl < desired_kl / 2, within ADAPTIVE_LR_RANGE.

    A KL that is not finite leaves lr as it is.
    """
    low, high = ADAPTIVE_LR_RANGE
    lr = jnp.asarray(lr, jnp.float32)
    down = jnp.maximum(lr / LR_FACTOR, low)
    up = jnp.minimum(lr * LR_FACTOR, high)
    return jnp.where(kl > 2.0 * desired_kl, down, jnp.where(kl < 0.5 * desired_kl, up, lr))


def adaptive_lr(opt_state: optax.OptState) -> Array:
    """The learning rate held in the optimizer state of `lr_schedule=adaptive`."""
    return opt_state[-1].lr


def with_adaptive_lr(opt_state: optax.OptState, lr: Array) -> optax.OptState:
    """`opt_state` of `lr_schedule=adaptive` with its learning rate set to `lr`."""
    return (*opt_state[:-1], AdaptiveLRState(lr=jnp.asarray(lr, jnp.float32)))


def step_lr(config: Any, opt_state: optax.OptState, opt_step: Array) -> Array:
    """The learning rate () the optimizer step `opt_step` (0-based) used, after it ran, warmup included."""
    if config.lr_schedule == "adaptive":
        return adaptive_lr(opt_state) * warmup_factor(config, opt_step)
    return learning_rate(config, opt_step)


def clip_gradients(grads: Any, max_norm: float) -> Any:
    """Clip the actor's and the critic's gradients (an ActorCritic) to global norm `max_norm`, each on its own.

    One global norm over both networks lets the critic (whose loss scales with
    the square of the returns) dominate it and shrink the actor's step by an
    order of magnitude; clipping them separately keeps the policy learning.
    `max_norm <= 0` disables clipping.
    """
    if max_norm <= 0:
        return grads

    def clip(tree: Any) -> Any:
        scale = jnp.minimum(1.0, max_norm / (optax.tree.norm(tree) + 1e-6))
        return jax.tree.map(lambda g: g * scale, tree)

    return eqx.tree_at(lambda m: (m.actor, m.critic), grads, (clip(grads.actor), clip(grads.critic)))
