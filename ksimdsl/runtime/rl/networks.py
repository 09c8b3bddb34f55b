"""Policy and value networks (equinox), one environment per call.

The task's `policy` statement picks the actor:

* `policy mlp hidden=[256, 256]`: an MLP from the actor observation to the
  distribution head.
* `policy gru hidden=256 layers=2`: `layers` stacked GRU cells of width
  `hidden[0]`, then dense layers for the remaining `hidden[1:]` (none in this
  example), then the head. The recurrent state ("carry") is threaded
  explicitly.

Every actor has the same interface, so rollout and update code never branch on
the kind:

    actor.initial_carry()                    -> carry          (MLP: shape (0,))
    actor(obs_O, carry)                      -> (dist, carry)
    actor.reset(carry, reset)                -> carry          (initial carry where reset)
    actor.unroll(obs_TO, reset_T, carry)     -> dist with leading T (recomputes a sequence)

`dist` is a `distributions.Normal` or `distributions.Mixture`. The critic is an
MLP over the critic observation (the same hidden sizes), `critic(obs_C) -> ()`.
Callers vmap over environments. Observations are expected already normalized
(see `ksimdsl.runtime.rl.normalize`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from ksimdsl.settings import PolicySettings
from ksimdsl.runtime.rl import distributions as D

__all__ = [
    "PolicyConfig",
    "ACTIVATIONS",
    "MLP",
    "DistHead",
    "MLPActor",
    "GRUActor",
    "Actor",
    "Critic",
    "ActorCritic",
    "make_actor_critic",
]

ACTIVATIONS: Mapping[str, Callable[[Array], Array]] = {
    "elu": jax.nn.elu,
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "silu": jax.nn.silu,
    "gelu": jax.nn.gelu,
}

assert set(ACTIVATIONS) == set(PolicySettings.by_name()["activation"].choices), "networks and schema disagree"

#: Scale of the initial weights of the action-mean output layer: near-zero
#: initial means, so the first rollouts explore around the default pose.
ACTOR_OUTPUT_SCALE = 0.01


#: The task's `policy` settings (kind, hidden, layers, dist, mixtures, std bounds, activation):
#: the schema's own frozen dataclass, validated on construction (see ksimdsl.settings).
PolicyConfig = PolicySettings


# --------------------------------------------------------------------------- building blocks


class MLP(eqx.Module):
    """Dense layers `in -> hidden... -> out`; activation between layers, none after the last."""

    layers: tuple[eqx.nn.Linear, ...]
    activation: str = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        hidden: tuple[int, ...],
        out_size: int,
        *,
        activation: str,
        key: Array,
        final_scale: float = 1.0,
    ):
        sizes = (in_size, *hidden, out_size)
        keys = jax.random.split(key, len(sizes) - 1)
        layers = [eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys)]
        last = layers[-1]
        layers[-1] = eqx.tree_at(
            lambda layer: (layer.weight, layer.bias), last, (last.weight * final_scale, jnp.zeros_like(last.bias))
        )
        self.layers = tuple(layers)
        self.activation = activation

    def __call__(self, x_I: Array) -> Array:
        """x_I (in_size,) -> (out_size,)."""
        act = ACTIVATIONS[self.activation]
        for layer in self.layers[:-1]:
            x_I = act(layer(x_I))
        return self.layers[-1](x_I)


class DistHead(eqx.Module):
    """Turns the actor network's output vector into distribution parameters.

    normal: the network outputs the means (A,); the std is a learned,
    state-independent parameter `std_raw_A` (std = clip(softplus(raw), min, max)).
    mixture: the network outputs [logits (K) | means (K*A) | raw stds (K*A)]; the
    raw stds are offset so that a zero output gives `init_std`.
    """

    std_raw_A: Array | None
    kind: str = eqx.field(static=True)
    action_size: int = eqx.field(static=True)
    mixtures: int = eqx.field(static=True)
    min_std: float = eqx.field(static=True)
    max_std: float = eqx.field(static=True)
    std_offset: float = eqx.field(static=True)

    def __init__(self, cfg: PolicyConfig, action_size: int):
        self.kind = cfg.dist
        self.action_size = action_size
        self.mixtures = cfg.mixtures
        self.min_std = cfg.min_std
        self.max_std = cfg.max_std
        raw = D.raw_from_std(cfg.init_std)
        if cfg.dist == "normal":
            self.std_raw_A = jnp.full((action_size,), raw, jnp.float32)
            self.std_offset = 0.0
        else:
            self.std_raw_A = None
            self.std_offset = raw

    @property
    def in_size(self) -> int:
        """Length of the network output this head consumes."""
        if self.kind == "normal":
            return self.action_size
        return self.mixtures * (1 + 2 * self.action_size)

    def __call__(self, out: Array) -> D.Distribution:
        """out (in_size,) -> Normal(mean_A, std_A) | Mixture(logits_K, mean_KA, std_KA)."""
        if self.kind == "normal":
            return D.Normal(out, D.std_from_raw(self.std_raw_A, self.min_std, self.max_std))
        k, a = self.mixtures, self.action_size
        logits_K = out[:k]
        mean_KA = out[k : k + k * a].reshape(k, a)
        std_KA = D.std_from_raw(out[k + k * a :].reshape(k, a) + self.std_offset, self.min_std, self.max_std)
        return D.Mixture(logits_K, mean_KA, std_KA)


def _where_reset(reset: Array, initial: Array, carry: Array) -> Array:
    return jnp.where(reset, initial, carry)


# --------------------------------------------------------------------------- actors


class MLPActor(eqx.Module):
    """Feed-forward actor. Its carry is an empty array, so it fits the recurrent interface."""

    net: MLP
    head: DistHead

    def __init__(self, cfg: PolicyConfig, obs_size: int, action_size: int, *, key: Array):
        self.head = DistHead(cfg, action_size)
        self.net = MLP(
            obs_size, cfg.hidden, self.head.in_size, activation=cfg.activation, key=key, final_scale=ACTOR_OUTPUT_SCALE
        )

    def initial_carry(self) -> Array:
        return jnp.zeros((0,), jnp.float32)

    def reset(self, carry: Array, reset: Array) -> Array:
        return carry

    def __call__(self, obs_O: Array, carry: Array) -> tuple[D.Distribution, Array]:
        return self.head(self.net(obs_O)), carry

    def unroll(self, obs_TO: Array, reset_T: Array, carry: Array) -> D.Distribution:
        """Distributions for a whole sequence (leading T); no state, so one vmap."""
        del reset_T, carry
        return jax.vmap(lambda o: self.head(self.net(o)))(obs_TO)


class GRUActor(eqx.Module):
    """`layers` stacked GRU cells of width hidden[0], dense layers hidden[1:], then the head.

    carry: (layers, hidden[0]), zeros at the start of an episode.
    """

    cells: tuple[eqx.nn.GRUCell, ...]
    net: MLP
    head: DistHead

    def __init__(self, cfg: PolicyConfig, obs_size: int, action_size: int, *, key: Array):
        width = cfg.hidden[0]
        keys = jax.random.split(key, cfg.layers + 1)
        self.cells = tuple(
            eqx.nn.GRUCell(obs_size if i == 0 else width, width, key=keys[i]) for i in range(cfg.layers)
        )
        self.head = DistHead(cfg, action_size)
        self.net = MLP(
            width,
            cfg.hidden[1:],
            self.head.in_size,
            activation=cfg.activation,
            key=keys[-1],
            final_scale=ACTOR_OUTPUT_SCALE,
        )

    def initial_carry(self) -> Array:
        return jnp.zeros((len(self.cells), self.cells[0].hidden_size), jnp.float32)

    def reset(self, carry: Array, reset: Array) -> Array:
        """carry (layers, H), reset () bool -> the initial carry where reset, else carry."""
        return _where_reset(reset, self.initial_carry(), carry)

    def __call__(self, obs_O: Array, carry: Array) -> tuple[D.Distribution, Array]:
        """obs_O (O,), carry (layers, H) -> (dist, new carry (layers, H))."""
        x = obs_O
        new = []
        for cell, h in zip(self.cells, carry):
            x = cell(x, h)
            new.append(x)
        return self.head(self.net(x)), jnp.stack(new)

    def unroll(self, obs_TO: Array, reset_T: Array, carry: Array) -> D.Distribution:
        """Recompute a sequence: before step t the carry is reset where reset_T[t]."""

        def step(carry: Array, inp: tuple[Array, Array]) -> tuple[Array, D.Distribution]:
            obs_O, reset = inp
            dist, carry = self(obs_O, self.reset(carry, reset))
            return carry, dist

        _, dist_T = jax.lax.scan(step, carry, (obs_TO, reset_T))
        return dist_T


Actor = MLPActor | GRUActor


class Critic(eqx.Module):
    """State-value function: MLP over the critic observation."""

    net: MLP

    def __init__(self, cfg: PolicyConfig, obs_size: int, *, key: Array):
        self.net = MLP(obs_size, cfg.hidden, 1, activation=cfg.activation, key=key)

    def __call__(self, obs_C: Array) -> Array:
        """obs_C (C,) -> value ()."""
        return self.net(obs_C)[0]


class ActorCritic(eqx.Module):
    """The trainable model: actor (with its distribution head and std parameter) and critic."""

    actor: Actor
    critic: Critic

    @property
    def recurrent(self) -> bool:
        return isinstance(self.actor, GRUActor)


def make_actor_critic(
    cfg: PolicyConfig, obs_actor_size: int, obs_critic_size: int, action_size: int, *, key: Array
) -> ActorCritic:
    """Build an ActorCritic for `obs_actor_size` -> `action_size` actions, critic over `obs_critic_size`."""
    key_actor, key_critic = jax.random.split(key)
    actor_cls = GRUActor if cfg.kind == "gru" else MLPActor
    return ActorCritic(
        actor=actor_cls(cfg, obs_actor_size, action_size, key=key_actor),
        critic=Critic(cfg, obs_critic_size, key=key_critic),
    )
