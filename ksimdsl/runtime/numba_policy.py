"""The actor's forward pass in numba, run by the C-MuJoCo engine's worker threads.

On a CPU the collector's per-step JAX call (a few small matrix products) costs
more in dispatch than in arithmetic, and it runs while the physics threads
wait. For the common actor, an MLP with a `normal` head, `HostActor` holds a
float32 snapshot of the weights and the observation normalizer, and
`HostActor.act` evaluates

    action = mean(normalize(obs)) + std * eps,     log_prob = log N(action; mean, std)

for a range of envs inside `@njit(nogil=True)`, so every worker thread runs
the policy for its own chunk of envs right before stepping their physics. The
standard-normal draws `eps_EA` come from the caller (the env's seeded numpy
generator), keeping rollouts reproducible.

The formulas are those of `ksimdsl.runtime.normalize.normalize`,
`networks.MLP` / `networks.DistHead` (normal) and `distributions.log_prob`;
tests/test_mujoco_engine.py checks the two implementations against each other.
Other actors (GRU, mixture heads) keep using the JAX path (`HostActor.supports`).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from numba import njit

from ksimdsl.runtime import distributions as D
from ksimdsl.runtime import normalize as N
from ksimdsl.runtime.networks import ActorCritic, MLPActor

__all__ = ["HostActor", "ACTIVATIONS"]

#: Activation name -> code understood by `_act_range`.
ACTIVATIONS = {"elu": 0, "relu": 1, "tanh": 2, "silu": 3, "gelu": 4}

_LOG_SQRT_2PI = np.float32(0.5 * np.log(2.0 * np.pi))


@dataclass(frozen=True)
class HostActor:
    """A float32 snapshot of an MLP actor with a normal head, evaluated by numba.

    weights: per layer (out, in); biases: per layer (out,);
    norm_*: the actor normalizer as `(obs - mean) * inv_std`, clipped, when active.
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    activation: int
    std_A: np.ndarray
    norm_mean_O: np.ndarray
    norm_inv_std_O: np.ndarray
    norm_active: bool
    norm_clip: float

    @staticmethod
    def supports(model: ActorCritic) -> bool:
        """True for actors this module can evaluate (MLP, normal head, a known activation)."""
        actor = model.actor
        return (
            isinstance(actor, MLPActor) and actor.head.kind == "normal" and actor.net.activation in ACTIVATIONS
        )

    @staticmethod
    def from_model(model: ActorCritic, obs_norm: N.RunningStats) -> "HostActor":
        """Snapshot the current actor weights and normalizer (call once per rollout)."""
        if not HostActor.supports(model):
            raise TypeError(f"no numba forward pass for {type(model.actor).__name__} with this head")
        actor = model.actor
        weights = tuple(np.ascontiguousarray(layer.weight, np.float32) for layer in actor.net.layers)
        biases = tuple(np.ascontiguousarray(layer.bias, np.float32) for layer in actor.net.layers)
        head = actor.head
        std_A = np.asarray(D.std_from_raw(head.std_raw_A, head.min_std, head.max_std), np.float32)
        active = bool(obs_norm.enabled) and float(obs_norm.count) > 0
        inv_std = np.asarray(1.0 / jnp.sqrt(N.variance(obs_norm) + N.EPS), np.float32)
        return HostActor(
            weights=weights,
            biases=biases,
            activation=ACTIVATIONS[actor.net.activation],
            std_A=std_A,
            norm_mean_O=np.asarray(obs_norm.mean_O, np.float32),
            norm_inv_std_O=inv_std,
            norm_active=active,
            norm_clip=float(N.CLIP),
        )

    @property
    def log_std_sum(self) -> float:
        return float(np.sum(np.log(self.std_A)))

    def act(self, lo: int, hi: int, obs_EO: np.ndarray, eps_EA: np.ndarray, action_EA: np.ndarray,
            log_prob_E: np.ndarray) -> None:  # fmt: skip
        """Rows [lo, hi): action_EA = mean + std * eps_EA (raw, unclipped), log_prob_E = its log density."""
        _act_range(
            lo, hi, obs_EO, self.norm_mean_O, self.norm_inv_std_O, self.norm_active, np.float32(self.norm_clip),
            self.weights, self.biases, self.activation, self.std_A, eps_EA, action_EA, log_prob_E,
        )  # fmt: skip


@njit(nogil=True, cache=True, fastmath=False)
def _activate(x, kind):
    if kind == 0:  # elu
        return x if x > 0 else np.float32(np.expm1(x))
    if kind == 1:  # relu
        return x if x > 0 else np.float32(0.0)
    if kind == 2:
        return np.float32(np.tanh(x))
    if kind == 3:  # silu
        return np.float32(x / (1.0 + np.exp(-x)))
    # gelu, tanh approximation (jax.nn.gelu's default)
    return np.float32(0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))))


# Re-association lets LLVM vectorize the dot products (8 float32 lanes): ~5x faster, and the
# result differs from a sequential sum only in rounding.
@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _act_range(lo, hi, obs_EO, norm_mean_O, norm_inv_std_O, norm_active, norm_clip, weights, biases, activation,
               std_A, eps_EA, action_EA, log_prob_E):  # fmt: skip
    n_layers = len(weights)
    width = obs_EO.shape[1]
    for layer in range(n_layers):
        width = max(width, weights[layer].shape[0])
    x = np.empty(width, np.float32)
    y = np.empty(width, np.float32)
    n_obs = obs_EO.shape[1]
    n_act = std_A.shape[0]
    log_norm = np.float32(0.0)
    for a in range(n_act):
        log_norm += np.float32(np.log(std_A[a])) + _LOG_SQRT_2PI
    for e in range(lo, hi):
        for i in range(n_obs):
            v = obs_EO[e, i]
            if norm_active:
                v = (v - norm_mean_O[i]) * norm_inv_std_O[i]
                v = min(max(v, -norm_clip), norm_clip)
            x[i] = v
        for layer in range(n_layers):
            w = weights[layer]
            b = biases[layer]
            n_out, n_in = w.shape
            for o in range(n_out):
                acc = np.float32(0.0)
                for i in range(n_in):
                    acc += w[o, i] * x[i]
                y[o] = acc + b[o]
            last = layer == n_layers - 1
            for o in range(n_out):
                x[o] = y[o] if last else _activate(y[o], activation)
        log_prob = np.float32(0.0)
        for a in range(n_act):
            action = x[a] + std_A[a] * np.float32(eps_EA[e, a])
            action_EA[e, a] = action
            z = (action - x[a]) / std_A[a]
            log_prob += np.float32(-0.5) * z * z
        log_prob_E[e] = log_prob - log_norm
