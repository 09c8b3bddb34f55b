"""The actor's forward pass in numba, run by the C-MuJoCo engine's worker threads.

On a CPU the collector's per-step JAX call (a few small matrix products) costs
more in dispatch than in arithmetic, and it runs while the physics threads
wait. For MLP actors, `HostActor` holds a float32 snapshot of the weights and
the observation normalizer, and `HostActor.act` evaluates, with a `normal` head,

    action = mean(normalize(obs)) + std * eps,     log_prob = log N(action; mean, std)

and with a `mixture(K)` head (components joint over the action dims)

    k ~ categorical(softmax(logits)),  action = mean_k + std_k * eps,
    log_prob = logsumexp_k(log_softmax(logits)_k + log N(action; mean_k, std_k))

for a range of envs inside `@njit(nogil=True)`, so every worker thread runs
the policy for its own chunk of envs right before stepping their physics. The
random draws come from the caller (`draw_noise`, the collector's seeded numpy
generator), keeping rollouts reproducible: A standard-normal values per env,
plus one uniform value that picks the mixture component.

The formulas are those of `ksimdsl.runtime.rl.normalize.normalize`,
`networks.MLP` / `networks.DistHead` and `distributions.log_prob`;
tests/test_mujoco_engine.py checks the two implementations against each other.
GRU actors keep using the JAX path (`HostActor.supports`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from numba import njit

from ksimdsl.runtime.rl import distributions as D
from ksimdsl.runtime.rl import normalize as N
from ksimdsl.runtime.engine.mujoco.cstep import Specialized
from ksimdsl.runtime.rl.networks import ActorCritic, MLPActor

__all__ = ["HostActor", "ACTIVATIONS", "ActorWeights"]

#: Activation name -> code understood by `_act_range`.
ACTIVATIONS = {"elu": 0, "relu": 1, "tanh": 2, "silu": 3, "gelu": 4}

_LOG_SQRT_2PI = np.float32(0.5 * np.log(2.0 * np.pi))


#: Distribution head name -> code understood by `_act_range`.
HEADS = {"normal": 0, "mixture": 1}


class ActorWeights(NamedTuple):
    """What `_act_range` reads of the actor (numba takes the namedtuple as one argument)."""

    norm_mean_O: np.ndarray
    norm_inv_std_O: np.ndarray
    norm_active: bool
    norm_clip: np.float32
    weights: tuple[np.ndarray, ...]  # per layer (out, in)
    biases: tuple[np.ndarray, ...]
    activation: int
    head: int
    std_A: np.ndarray
    mixtures: int
    min_std: np.float32
    max_std: np.float32
    std_offset: np.float32


@dataclass(frozen=True)
class HostActor:
    """A float32 snapshot of an MLP actor with a normal or mixture head, evaluated by numba.

    weights: per layer (out, in); biases: per layer (out,);
    std_A: the normal head's std (ones for a mixture, whose stds are network outputs);
    mixtures, min_std, max_std, std_offset: the mixture head's settings (`networks.DistHead`);
    norm_*: the actor normalizer as `(obs - mean) * inv_std`, clipped, when active.
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    activation: int
    head: int
    std_A: np.ndarray
    mixtures: int
    min_std: float
    max_std: float
    std_offset: float
    norm_mean_O: np.ndarray
    norm_inv_std_O: np.ndarray
    norm_active: bool
    norm_clip: float

    @staticmethod
    def supports(model: ActorCritic) -> bool:
        """True for actors this module can evaluate (MLP, normal or mixture head, a known activation)."""
        actor = model.actor
        return isinstance(actor, MLPActor) and actor.head.kind in HEADS and actor.net.activation in ACTIVATIONS

    @staticmethod
    def from_model(model: ActorCritic, obs_norm: N.RunningStats) -> "HostActor":
        """Snapshot the current actor weights and normalizer (call once per rollout)."""
        if not HostActor.supports(model):
            raise TypeError(f"no numba forward pass for {type(model.actor).__name__} with this head")
        actor = model.actor
        weights = tuple(np.ascontiguousarray(layer.weight, np.float32) for layer in actor.net.layers)
        biases = tuple(np.ascontiguousarray(layer.bias, np.float32) for layer in actor.net.layers)
        head = actor.head
        if head.kind == "normal":
            std_A = np.asarray(D.std_from_raw(head.std_raw_A, head.min_std, head.max_std), np.float32)
        else:
            std_A = np.ones(head.action_size, np.float32)
        active = bool(obs_norm.enabled) and float(obs_norm.count) > 0
        inv_std = np.asarray(1.0 / jnp.sqrt(N.variance(obs_norm) + N.EPS), np.float32)
        return HostActor(
            weights=weights,
            biases=biases,
            activation=ACTIVATIONS[actor.net.activation],
            head=HEADS[head.kind],
            std_A=std_A,
            mixtures=int(head.mixtures) if head.kind == "mixture" else 1,
            min_std=float(head.min_std),
            max_std=float(head.max_std),
            std_offset=float(head.std_offset),
            norm_mean_O=np.asarray(obs_norm.mean_O, np.float32),
            norm_inv_std_O=inv_std,
            norm_active=active,
            norm_clip=float(N.CLIP),
        )

    @property
    def noise_size(self) -> int:
        """Random values `act` reads per env: A standard normals, plus a uniform one for a mixture."""
        return len(self.std_A) + (1 if self.head == HEADS["mixture"] else 0)

    def draw_noise(self, rng: np.random.Generator, num_envs: int) -> np.ndarray:
        """(E, noise_size) float32: standard normals, then (mixture) a uniform [0, 1) column."""
        eps_EN = np.empty((num_envs, self.noise_size), np.float32)
        eps_EN[:, : len(self.std_A)] = rng.standard_normal((num_envs, len(self.std_A)), dtype=np.float32)
        if self.noise_size > len(self.std_A):
            eps_EN[:, -1] = rng.random(num_envs, dtype=np.float32)
        return eps_EN

    def act(self, lo: int, hi: int, obs_EO: np.ndarray, eps_EN: np.ndarray, action_EA: np.ndarray,
            log_prob_E: np.ndarray) -> None:  # fmt: skip
        """Rows [lo, hi): action_EA = a sample (raw, unclipped) from the draws `eps_EN` (see `draw_noise`),
        log_prob_E = its log density."""
        self._act_range(lo, hi, self.packed, obs_EO, eps_EN, action_EA, log_prob_E)

    @functools.cached_property
    def _act_range(self) -> Specialized:
        return Specialized(_act_range)

    @functools.cached_property
    def packed(self) -> ActorWeights:
        """The snapshot as `_act_range` takes it (settings as float32 scalars)."""
        f32 = ("norm_clip", "min_std", "max_std", "std_offset")
        fields = {f: getattr(self, f) for f in ActorWeights._fields}
        return ActorWeights(**(fields | {f: np.float32(fields[f]) for f in f32}))


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
def _act_range(lo, hi, actor, obs_EO, eps_EN, action_EA, log_prob_E):
    """Rows [lo, hi) of obs_EO -> sampled action_EA and log_prob_E, from the draws eps_EN (see `HostActor`)."""
    weights, biases, std_A, mixtures = actor.weights, actor.biases, actor.std_A, actor.mixtures
    norm_mean_O, norm_inv_std_O, norm_clip = actor.norm_mean_O, actor.norm_inv_std_O, actor.norm_clip
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
    std_KA = np.empty((mixtures, n_act), np.float32)  # mixture scratch, reused for every env
    terms_K = np.empty(mixtures, np.float32)
    for e in range(lo, hi):
        for i in range(n_obs):
            v = obs_EO[e, i]
            if actor.norm_active:
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
                x[o] = y[o] if last else _activate(y[o], actor.activation)
        if actor.head == 0:
            log_prob = np.float32(0.0)
            for a in range(n_act):
                action = x[a] + std_A[a] * np.float32(eps_EN[e, a])
                action_EA[e, a] = action
                z = (action - x[a]) / std_A[a]
                log_prob += np.float32(-0.5) * z * z
            log_prob_E[e] = log_prob - log_norm
        else:
            log_prob_E[e] = _mixture(x, mixtures, n_act, actor.min_std, actor.max_std, actor.std_offset, eps_EN[e],
                                     action_EA[e], std_KA, terms_K)  # fmt: skip


@njit(nogil=True, cache=True)
def _softplus(v):
    return v + np.log1p(np.exp(-v)) if v > 0 else np.log1p(np.exp(v))


@njit(nogil=True, cache=True)
def _logsumexp(v, n):
    """log(sum(exp(v[:n]))), shifted by the maximum so that no term overflows."""
    top = v[0]
    for k in range(1, n):
        top = max(top, v[k])
    total = np.float32(0.0)
    for k in range(n):
        total += np.float32(np.exp(v[k] - top))
    return top + np.float32(np.log(total))


@njit(nogil=True, cache=True)
def _mixture(x, K, A, min_std, max_std, std_offset, eps_N, action_A, std_KA, terms_K):
    """Mixture head on the network output x = [logits (K) | means (K*A) | raw stds (K*A)]:
    writes the sampled action into action_A and returns its log density."""
    log_norm = _logsumexp(x, K)  # log_softmax(logits)_k = x[k] - log_norm
    for k in range(K):
        for a in range(A):
            raw = x[K + K * A + k * A + a] + std_offset
            std_KA[k, a] = min(max(np.float32(_softplus(raw)), min_std), max_std)
    # the component: inverse CDF of softmax(logits) at the uniform draw (last column)
    u = eps_N[A]
    chosen = K - 1
    cdf = np.float32(0.0)
    for k in range(K):
        cdf += np.float32(np.exp(x[k] - log_norm))
        if u < cdf:
            chosen = k
            break
    for a in range(A):
        action_A[a] = x[K + chosen * A + a] + std_KA[chosen, a] * np.float32(eps_N[a])
    # log density: logsumexp over components of log w_k + log N(action; mean_k, std_k)
    for k in range(K):
        lp = x[k] - log_norm
        for a in range(A):
            z = (action_A[a] - x[K + k * A + a]) / std_KA[k, a]
            lp += np.float32(-0.5) * z * z - np.float32(np.log(std_KA[k, a])) - _LOG_SQRT_2PI
        terms_K[k] = lp
    return _logsumexp(terms_K, K)
