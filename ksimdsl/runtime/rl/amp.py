"""Adversarial motion priors (Peng et al. 2021): the discriminator, its loss, replay and the style reward.

A task's `amp` block (docs/motions.md "AMP") names transition features phi(s), computable from qpos
and qvel (`ksimdsl.model.amp_features`). The collector records phi of every state a rollout visits
(`Trajectory.amp_feat_TEF`, and `amp_next_TEF` of the state each step reached); the reference clip's
features at the control period are a table of the spec (`AmpSpec.reference`, K rows). Inside the
jitted `ppo.update`, before GAE, `update`

1. scores every policy transition x = (phi(s), phi(s')) with the discriminator D as it stands and adds
   the style reward  weight * max(0, 1 - 0.25 (D(x) - 1)^2)  to the task reward (0 for a transition
   that ends an episode: s' is then the next episode's first state);
2. takes `steps` adam steps (one per PPO epoch) on the least-squares GAN loss

       L = mean_ref (D - 1)^2 + P + gp * mean_ref |dD/dx|^2
           + logit_reg * |w_out|^2 + weight_decay * sum_layers |w|^2

   with as many reference transitions (consecutive rows of the table) as the rollout has, drawn
   uniformly. P is the policy term: with `replay=0`, P = mean_policy (D + 1)^2 over the rollout's
   transitions; with a replay buffer holding any, P = half that plus half the same mean over as many
   transitions drawn uniformly from the buffer (older policies' transitions keep D from forgetting
   them while it chases the newest, AMP's replay);
3. writes the rollout's valid transitions (not those that end an episode) into the buffer.

The replay buffer (`Replay`) is a ring of `replay` rows of normalized transitions with a write index
and a count of rows filled: static shapes, filled inside the jit. Once a rollout has more valid
transitions than the ring holds, only its last `replay` go in. Checkpoints leave the buffer out (its
attribute name `replay` is in `checkpoint.TRANSIENT_FIELDS`): after a resume it starts empty and refills.

Features are normalized by the reference table's mean and std (fixed at initialization), so D and its
gradient penalty see inputs of unit scale. Shape letters: F features, X = 2F a transition, K reference
rows, N transitions of the rollout, R rows of the replay buffer.
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
    "Replay",
    "empty_replay",
    "replay_insert",
    "replay_sample",
    "disc_regularizer",
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
    replay: int = 0
    logit_reg: float = 0.0
    weight_decay: float = 0.0


class Replay(eqx.Module):
    """A ring of policy transitions: x_RX (normalized), the next row to write and how many rows hold one."""

    x_RX: Array
    index: Array  # int32 ()
    filled: Array  # int32 ()


class AmpState(eqx.Module):
    """The discriminator (an MLP over normalized transitions, X -> 1), its adam state, the reference
    table ref_KF, the normalization mean_F / std_F (from the table) and the replay buffer (None with
    `replay=0`; never in a checkpoint)."""

    disc: MLP
    opt_state: optax.OptState
    ref_KF: Array
    mean_F: Array
    std_F: Array
    config: AmpConfig = eqx.field(static=True)
    replay: Replay | None = None


def empty_replay(rows: int, size: int) -> Replay:
    """A replay buffer of `rows` transitions of `size` numbers, none filled."""
    return Replay(jnp.zeros((rows, size), jnp.float32), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def replay_insert(replay: Replay, x_NX: Array, mask_N: Array) -> Replay:
    """Write the rows of x_NX where mask_N, in order, at the ring's write index (wrapping around); of more
    valid rows than the ring holds only the last R go in. Static shapes: rows not written are dropped."""
    R = replay.x_RX.shape[0]
    m_N = mask_N.astype(jnp.int32)
    n = jnp.sum(m_N)
    rank_N = jnp.cumsum(m_N) - 1  # each valid row's place among the valid rows
    keep_N = mask_N & (rank_N >= n - R)
    pos_N = jnp.where(keep_N, (replay.index + rank_N % R) % R, R)  # R: out of range, dropped
    x_RX = replay.x_RX.at[pos_N].set(x_NX.astype(replay.x_RX.dtype), mode="drop")
    index = (replay.index + n % R) % R
    filled = jnp.minimum(replay.filled + jnp.minimum(n, R), R)
    return Replay(x_RX, index.astype(jnp.int32), filled.astype(jnp.int32))


def replay_sample(replay: Replay, n: int, *, key: Array) -> Array:
    """n rows drawn uniformly (with replacement) from the filled rows (row 0, zeros, from an empty buffer)."""
    i_N = jax.random.randint(key, (n,), 0, jnp.maximum(replay.filled, 1))
    return replay.x_RX[i_N]


def init_amp(spec: AmpSpec, *, key: Array) -> AmpState:
    ref_KF = jnp.asarray(np.asarray(spec.reference, np.float32))
    num_features = ref_KF.shape[1]
    s = spec.settings
    disc = MLP(2 * num_features, tuple(s.hidden), 1, activation=DISC_ACTIVATION, key=key)
    config = AmpConfig(
        weight=float(s.weight),
        gp=float(s.gp),
        lr=float(s.lr),
        replay=int(s.replay),
        logit_reg=float(s.logit_reg),
        weight_decay=float(s.weight_decay),
    )
    return AmpState(
        disc=disc,
        opt_state=optax.adam(config.lr).init(eqx.filter(disc, eqx.is_inexact_array)),
        ref_KF=ref_KF,
        mean_F=jnp.mean(ref_KF, axis=0),
        std_F=jnp.std(ref_KF, axis=0) + 1e-2,
        config=config,
        replay=empty_replay(config.replay, 2 * num_features) if config.replay > 0 else None,
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
    disc: Callable[[Array], Array],
    x_ref_NX: Array,
    x_pol_NX: Array,
    mask_N: Array,
    gp: float,
    x_replay_MX: Array | None = None,
    replay_share: Array | float = 0.5,
) -> tuple[Array, dict[str, Array]]:
    """The least-squares GAN loss with the gradient penalty on the reference; `mask_N` the valid policy rows.

    With `x_replay_MX` (transitions from the replay buffer) the policy term is
    (1 - replay_share) * its mean over x_pol_NX + replay_share * its mean over x_replay_MX."""
    d_ref_N = jax.vmap(disc)(x_ref_NX)
    d_pol_N = jax.vmap(disc)(x_pol_NX)
    penalty = gradient_penalty(disc, x_ref_NX)
    policy_term = _masked_mean(jnp.square(d_pol_N + 1.0), mask_N)
    metrics = {
        "amp/disc_acc_ref": jnp.mean((d_ref_N > 0).astype(jnp.float32)),
        "amp/disc_acc_policy": _masked_mean((d_pol_N < 0).astype(jnp.float32), mask_N),
    }
    if x_replay_MX is not None:
        d_rep_M = jax.vmap(disc)(x_replay_MX)
        policy_term = (1.0 - replay_share) * policy_term + replay_share * jnp.mean(jnp.square(d_rep_M + 1.0))
        metrics["amp/disc_acc_replay"] = jnp.mean((d_rep_M < 0).astype(jnp.float32))
    loss = jnp.mean(jnp.square(d_ref_N - 1.0)) + policy_term + gp * penalty
    return loss, {"amp/disc_loss": loss, "amp/grad_penalty": penalty, **metrics}


def disc_regularizer(disc: MLP, logit_reg: float, weight_decay: float) -> Array:
    """logit_reg * |w|^2 of the output layer + weight_decay * |w|^2 of every layer (weights, not biases)."""
    out = jnp.zeros(())
    if logit_reg > 0:
        out = out + logit_reg * jnp.sum(jnp.square(disc.layers[-1].weight))
    if weight_decay > 0:
        out = out + weight_decay * sum(jnp.sum(jnp.square(layer.weight)) for layer in disc.layers)
    return out


def _scalar(disc: MLP) -> Callable[[Array], Array]:
    return lambda x_X: disc(x_X)[0]


def _normalize(state: AmpState, feat_NF: Array) -> Array:
    return (feat_NF - state.mean_F) / state.std_F


def update(
    state: AmpState, feat_TEF: Array, next_TEF: Array, done_TE: Array, *, key: Array, steps: int
) -> tuple[AmpState, Array, dict[str, Array]]:
    """-> (new state, the weighted style reward_TE of the rollout (under D before the update), metrics)."""
    T, E, F = feat_TEF.shape
    N = T * E
    config = state.config
    x_pol_NX = jnp.concatenate(
        [_normalize(state, feat_TEF.reshape(N, F)), _normalize(state, next_TEF.reshape(N, F))], axis=-1
    )
    x_pol_NX = jnp.where(jnp.isfinite(x_pol_NX), x_pol_NX, 0.0)
    mask_N = ~done_TE.reshape(N)
    d_N = jax.vmap(_scalar(state.disc))(x_pol_NX)
    reward_N = jnp.where(mask_N, config.weight * style_reward(d_N), 0.0)
    ref_KF = _normalize(state, state.ref_KF)
    optimizer = optax.adam(config.lr)
    replay = state.replay
    # half the policy term from the buffer once it holds anything (before the first insert: none)
    share = None if replay is None else jnp.where(replay.filled > 0, 0.5, 0.0)

    def loss_fn(disc: MLP, x_ref_NX: Array, x_rep_NX: Array | None) -> tuple[Array, dict[str, Array]]:
        loss, metrics = disc_loss(_scalar(disc), x_ref_NX, x_pol_NX, mask_N, config.gp, x_rep_NX, share)
        if config.logit_reg > 0 or config.weight_decay > 0:
            reg = disc_regularizer(disc, config.logit_reg, config.weight_decay)
            loss = loss + reg
            metrics = {**metrics, "amp/disc_loss": loss, "amp/disc_reg": reg}
        return loss, metrics

    grad_fn = eqx.filter_value_and_grad(loss_fn, has_aux=True)

    def step(carry: tuple[MLP, optax.OptState], step_key: Array):
        disc, opt_state = carry
        i_N = jax.random.randint(step_key, (N,), 0, ref_KF.shape[0] - 1)
        x_ref_NX = jnp.concatenate([ref_KF[i_N], ref_KF[i_N + 1]], axis=-1)
        x_rep_NX = None if replay is None else replay_sample(replay, N, key=jax.random.fold_in(step_key, 1))
        (loss, metrics), grads = grad_fn(disc, x_ref_NX, x_rep_NX)
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
    if replay is not None:
        replay = replay_insert(replay, x_pol_NX, mask_N)
        metrics["amp/replay_filled"] = replay.filled.astype(jnp.float32) / replay.x_RX.shape[0]
    new_state = AmpState(
        disc=disc,
        opt_state=opt_state,
        ref_KF=state.ref_KF,
        mean_F=state.mean_F,
        std_F=state.std_F,
        config=config,
        replay=replay,
    )
    return new_state, reward_N.reshape(T, E), metrics
