"""Adversarial motion priors (Peng et al. 2021): the discriminator, its loss and the style reward.

A task's `amp` block (docs/motions.md "AMP") names transition features phi(s), computable from qpos
and qvel (`ksimdsl.model.amp_features`). The collector records phi of every state a rollout visits
(`Trajectory.amp_feat_TEF`, and `amp_next_TEF` of the state each step reached); the reference clip's
features at the control period are a table of the spec (`AmpSpec.reference`, K rows). Inside the
jitted `ppo.update`, before GAE, `update`

1. scores every policy transition x = (phi(s), phi(s')) with the discriminator D as it stands and adds
   the style reward  weight * max(0, 1 - 0.25 (D(x) - 1)^2)  to the task reward (0 for a transition
   that ends an episode: s' is then the next episode's first state);
2. takes `steps` adam steps (one per PPO epoch) on the least-squares GAN loss

       L = mean_ref (D - 1)^2 + mean_policy (D + 1)^2 + gp * mean_ref |dD/dx|^2

   over all the rollout's transitions and as many reference transitions (consecutive rows of the
   table) drawn uniformly.

Features are normalized by the reference table's mean and std (fixed at initialization), so D and its
gradient penalty see inputs of unit scale. There is no replay buffer: the policy samples are the
current rollout's. Shape letters: F features, X = 2F a transition, K reference rows, N transitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array

from ksimdsl.abi import AmpSpec
from ksimdsl.runtime.rl.networks import MLP

__all__ = [
    "AmpConfig",
    "AmpState",
    "init_amp",
    "style_reward",
    "disc_loss",
    "gradient_penalty",
    "update",
    "state_features",
]

#: Activation of the discriminator's hidden layers.
DISC_ACTIVATION = "relu"


@dataclass(frozen=True)
class AmpConfig:
    weight: float
    gp: float
    lr: float


class AmpState(eqx.Module):
    """The discriminator (an MLP over normalized transitions, X -> 1), its adam state, the reference
    table ref_KF and the normalization mean_F / std_F (from the table)."""

    disc: MLP
    opt_state: optax.OptState
    ref_KF: Array
    mean_F: Array
    std_F: Array
    config: AmpConfig = eqx.field(static=True)


def init_amp(spec: AmpSpec, *, key: Array) -> AmpState:
    ref_KF = jnp.asarray(np.asarray(spec.reference, np.float32))
    num_features = ref_KF.shape[1]
    s = spec.settings
    disc = MLP(2 * num_features, tuple(s.hidden), 1, activation=DISC_ACTIVATION, key=key)
    config = AmpConfig(weight=float(s.weight), gp=float(s.gp), lr=float(s.lr))
    return AmpState(
        disc=disc,
        opt_state=optax.adam(config.lr).init(eqx.filter(disc, eqx.is_inexact_array)),
        ref_KF=ref_KF,
        mean_F=jnp.mean(ref_KF, axis=0),
        std_F=jnp.std(ref_KF, axis=0) + 1e-2,
        config=config,
    )


def state_features(spec: AmpSpec, xp: Any) -> Callable[[Any, Any], Any]:
    """(qpos_EQ, qvel_EV) -> phi_EF (float32) with numpy (`xp=np`) or jax.numpy."""
    from ksimdsl.model.amp_features import features

    pieces = spec.features
    return lambda qpos, qvel: features(pieces, qpos, qvel, xp).astype(xp.float32)


def style_reward(d_N: Array) -> Array:
    """max(0, 1 - 0.25 (d - 1)^2): 1 where D calls a transition the reference's (+1), 0 from d <= -1."""
    return jnp.maximum(0.0, 1.0 - 0.25 * jnp.square(d_N - 1.0))


def gradient_penalty(disc: Callable[[Array], Array], x_NX: Array) -> Array:
    """mean over N of |grad_x D(x)|^2 (D: one transition (X,) -> a scalar)."""
    g_NX = jax.vmap(jax.grad(disc))(x_NX)
    return jnp.mean(jnp.sum(jnp.square(g_NX), axis=-1))


def _masked_mean(x_N: Array, mask_N: Array) -> Array:
    m = mask_N.astype(jnp.float32)
    return jnp.sum(x_N * m) / jnp.maximum(jnp.sum(m), 1.0)


def disc_loss(
    disc: Callable[[Array], Array], x_ref_NX: Array, x_pol_NX: Array, mask_N: Array, gp: float
) -> tuple[Array, dict[str, Array]]:
    """The least-squares GAN loss with the gradient penalty on the reference; `mask_N` the valid policy rows."""
    d_ref_N = jax.vmap(disc)(x_ref_NX)
    d_pol_N = jax.vmap(disc)(x_pol_NX)
    penalty = gradient_penalty(disc, x_ref_NX)
    loss = jnp.mean(jnp.square(d_ref_N - 1.0)) + _masked_mean(jnp.square(d_pol_N + 1.0), mask_N) + gp * penalty
    return loss, {
        "amp/disc_loss": loss,
        "amp/grad_penalty": penalty,
        "amp/disc_acc_ref": jnp.mean((d_ref_N > 0).astype(jnp.float32)),
        "amp/disc_acc_policy": _masked_mean((d_pol_N < 0).astype(jnp.float32), mask_N),
    }


def _scalar(disc: MLP) -> Callable[[Array], Array]:
    return lambda x_X: disc(x_X)[0]


def _normalize(state: AmpState, feat_NF: Array) -> Array:
    return (feat_NF - state.mean_F) / state.std_F


def update(
    state: AmpState, feat_TEF: Array, next_TEF: Array, done_TE: Array, *, key: Array, steps: int
) -> tuple[AmpState, Array, dict[str, Array]]:
    """-> (new state, the weighted style reward_TE of the rollout (under D before the update), metrics)."""
    T, E, F = feat_TEF.shape
    x_pol_NX = jnp.concatenate(
        [_normalize(state, feat_TEF.reshape(T * E, F)), _normalize(state, next_TEF.reshape(T * E, F))], axis=-1
    )
    x_pol_NX = jnp.where(jnp.isfinite(x_pol_NX), x_pol_NX, 0.0)
    mask_N = ~done_TE.reshape(T * E)
    d_N = jax.vmap(_scalar(state.disc))(x_pol_NX)
    reward_N = jnp.where(mask_N, state.config.weight * style_reward(d_N), 0.0)
    ref_KF = _normalize(state, state.ref_KF)
    optimizer = optax.adam(state.config.lr)

    def loss_fn(disc: MLP, x_ref_NX: Array) -> tuple[Array, dict[str, Array]]:
        return disc_loss(_scalar(disc), x_ref_NX, x_pol_NX, mask_N, state.config.gp)

    grad_fn = eqx.filter_value_and_grad(loss_fn, has_aux=True)

    def step(carry: tuple[MLP, optax.OptState], step_key: Array):
        disc, opt_state = carry
        i_N = jax.random.randint(step_key, (T * E,), 0, ref_KF.shape[0] - 1)
        x_ref_NX = jnp.concatenate([ref_KF[i_N], ref_KF[i_N + 1]], axis=-1)
        (loss, metrics), grads = grad_fn(disc, x_ref_NX)
        updates, new_opt_state = optimizer.update(grads, opt_state, eqx.filter(disc, eqx.is_inexact_array))
        finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
        new = (eqx.apply_updates(disc, updates), new_opt_state)
        arrays = jax.tree.map(
            lambda a, b: jnp.where(finite, a, b), eqx.filter(new, eqx.is_array), eqx.filter(carry, eqx.is_array)
        )
        return eqx.combine(arrays, eqx.filter(carry, eqx.is_array, inverse=True)), metrics

    (disc, opt_state), metrics_S = jax.lax.scan(
        step, (state.disc, state.opt_state), jax.random.split(key, max(1, steps))
    )
    metrics = {name: jnp.mean(m) for name, m in metrics_S.items()}
    metrics["reward/amp_style"] = jnp.mean(reward_N)
    new_state = AmpState(disc, opt_state, state.ref_KF, state.mean_F, state.std_F, state.config)
    return new_state, reward_N.reshape(T, E), metrics
