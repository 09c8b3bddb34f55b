"""Action distributions, actor/critic networks and the running observation normalizer."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

from ksimdsl.errors import KsimError
from ksimdsl.runtime.rl import distributions as D
from ksimdsl.runtime.rl import normalize as N
from ksimdsl.runtime.rl.networks import GRUActor, MLPActor, PolicyConfig, make_actor_critic

KEY = jax.random.key(0)


def _mixture(seed: int = 0, k: int = 3, a: int = 2) -> D.Mixture:
    ks = jax.random.split(jax.random.key(seed), 3)
    return D.Mixture(
        logits_K=jax.random.normal(ks[0], (k,)),
        mean_KA=jax.random.normal(ks[1], (k, a)),
        std_KA=jax.random.uniform(ks[2], (k, a), minval=0.3, maxval=1.5),
    )


# --------------------------------------------------------------------------- distributions


def test_normal_log_prob_matches_scipy_norm():
    mean = jnp.array([0.3, -1.0, 2.0])
    std = jnp.array([0.5, 1.2, 0.1])
    a = jnp.array([0.0, -0.5, 2.05])
    expected = jnp.sum(norm.logpdf(a, loc=mean, scale=std))
    np.testing.assert_allclose(D.log_prob(D.Normal(mean, std), a), expected, rtol=1e-5)


def test_normal_entropy_closed_form():
    std = jnp.array([0.5, 1.2, 0.1])
    expected = sum(0.5 * math.log(2 * math.pi * math.e * s * s) for s in np.asarray(std, np.float64))
    np.testing.assert_allclose(D.entropy(D.Normal(jnp.zeros(3), std)), expected, rtol=1e-5)


def test_mixture_log_prob_matches_brute_force():
    dist = _mixture()
    a = np.array([0.2, -0.4])
    logits, mean, std = (np.asarray(x, np.float64) for x in (dist.logits_K, dist.mean_KA, dist.std_KA))
    w = np.exp(logits) / np.exp(logits).sum()
    density = 0.0
    for k in range(len(w)):
        comp = 1.0
        for i in range(len(a)):
            comp *= math.exp(-0.5 * ((a[i] - mean[k, i]) / std[k, i]) ** 2) / (math.sqrt(2 * math.pi) * std[k, i])
        density += w[k] * comp
    np.testing.assert_allclose(D.log_prob(dist, jnp.asarray(a, jnp.float32)), math.log(density), rtol=1e-5)


def test_mixture_entropy_is_an_upper_bound_tight_for_separated_components():
    def monte_carlo_entropy(dist: D.Mixture) -> float:
        keys = jax.random.split(KEY, 20000)
        a_NA = jax.vmap(lambda k: D.sample(dist, key=k))(keys)
        return float(-jnp.mean(jax.vmap(lambda a: D.log_prob(dist, a))(a_NA)))

    overlapping = _mixture()
    assert float(D.entropy(overlapping)) > monte_carlo_entropy(overlapping) + 0.05

    separated = D.Mixture(overlapping.logits_K, overlapping.mean_KA * 100.0, overlapping.std_KA)
    np.testing.assert_allclose(float(D.entropy(separated)), monte_carlo_entropy(separated), atol=0.05)


def test_mixture_of_one_component_equals_normal():
    mean, std = jnp.array([0.1, -0.2]), jnp.array([0.4, 0.9])
    mix = D.Mixture(jnp.zeros(1), mean[None], std[None])
    normal = D.Normal(mean, std)
    a = jnp.array([0.5, 0.5])
    np.testing.assert_allclose(D.log_prob(mix, a), D.log_prob(normal, a), rtol=1e-6)
    np.testing.assert_allclose(D.entropy(mix), D.entropy(normal), rtol=1e-6)


def test_std_bounds_hold_in_samples():
    min_std, max_std = 0.05, 0.8
    raw = jnp.array([-20.0, 20.0, D.raw_from_std(0.3)])
    std = D.std_from_raw(raw, min_std, max_std)
    np.testing.assert_allclose(std, [min_std, max_std, 0.3], rtol=1e-5)
    dist = D.Normal(jnp.array([1.0, -1.0, 0.0]), std)
    a_NA = jax.vmap(lambda k: D.sample(dist, key=k))(jax.random.split(KEY, 20000))
    np.testing.assert_allclose(jnp.mean(a_NA, 0), dist.mean_A, atol=0.02)
    np.testing.assert_allclose(jnp.std(a_NA, 0), [min_std, max_std, 0.3], rtol=0.03)


def test_mixture_samples_pick_components_by_weight():
    weights = np.array([0.2, 0.5, 0.3])
    dist = D.Mixture(
        jnp.log(jnp.asarray(weights, jnp.float32)),
        jnp.array([[-10.0], [0.0], [10.0]]),
        jnp.full((3, 1), 0.1),
    )
    a_N = jax.vmap(lambda k: D.sample(dist, key=k))(jax.random.split(KEY, 20000))[:, 0]
    freq = [float(jnp.mean(a_N < -5)), float(jnp.mean(jnp.abs(a_N) < 5)), float(jnp.mean(a_N > 5))]
    np.testing.assert_allclose(freq, weights, atol=0.015)


def test_mode():
    assert jnp.array_equal(D.mode(D.Normal(jnp.array([0.3, 0.7]), jnp.ones(2))), jnp.array([0.3, 0.7]))
    dist = D.Mixture(jnp.array([0.0, 2.0, 1.0]), jnp.array([[1.0, 1.0], [2.0, -2.0], [3.0, 3.0]]), jnp.ones((3, 2)))
    assert jnp.array_equal(D.mode(dist), jnp.array([2.0, -2.0]))


def test_functions_broadcast_over_leading_dims():
    batched = jax.tree.map(lambda *xs: jnp.stack(xs), *[_mixture(seed=s) for s in range(4)])
    a_BA = jax.random.normal(KEY, (4, 2))
    np.testing.assert_allclose(D.log_prob(batched, a_BA), jax.vmap(D.log_prob)(batched, a_BA), rtol=1e-6)
    np.testing.assert_allclose(D.entropy(batched), jax.vmap(D.entropy)(batched), rtol=1e-6)
    np.testing.assert_allclose(D.mode(batched), jax.vmap(D.mode)(batched))
    assert D.sample(batched, key=KEY).shape == (4, 2)


# --------------------------------------------------------------------------- networks


def test_policy_config_from_dict_and_validation():
    cfg = PolicyConfig.from_dict({"kind": "gru", "hidden": 64, "layers": 2, "dist": "mixture", "mixtures": 4})
    assert cfg.hidden == (64,) and cfg.layers == 2 and cfg.mixtures == 4
    assert PolicyConfig.from_dict({}).hidden == (256, 256)
    with pytest.raises(KsimError, match="unknown policy kind 'lstm'"):
        PolicyConfig.from_dict({"kind": "lstm"})
    with pytest.raises(KsimError, match="min_std"):
        PolicyConfig.from_dict({"min_std": 2.0, "max_std": 1.0})


@pytest.mark.parametrize(
    "cfg",
    [
        PolicyConfig(kind="mlp", hidden=(16, 16), dist="normal", init_std=0.4),
        PolicyConfig(kind="mlp", hidden=(16,), dist="mixture", mixtures=3, init_std=0.4),
        PolicyConfig(kind="gru", hidden=(16, 8), layers=2, dist="normal", init_std=0.4),
    ],
    ids=["mlp-normal", "mlp-mixture", "gru-normal"],
)
def test_actor_critic_shapes_and_initial_std(cfg: PolicyConfig):
    model = make_actor_critic(cfg, obs_actor_size=5, obs_critic_size=7, action_size=3, key=KEY)
    carry = model.actor.initial_carry()
    assert carry.shape == ((0,) if cfg.kind == "mlp" else (cfg.layers, cfg.hidden[0]))
    dist, carry2 = model.actor(jnp.ones(5), carry)
    assert carry2.shape == carry.shape
    assert D.sample(dist, key=KEY).shape == (3,)
    std = dist.std_A if isinstance(dist, D.Normal) else dist.std_KA
    np.testing.assert_allclose(std, 0.4, rtol=0.05)  # near-zero initial output layer
    assert model.critic(jnp.ones(7)).shape == ()
    assert isinstance(model.actor, GRUActor if cfg.kind == "gru" else MLPActor)


def test_gru_reset_makes_output_independent_of_history():
    cfg = PolicyConfig(kind="gru", hidden=(16,), layers=2)
    actor = make_actor_critic(cfg, 4, 4, 2, key=KEY).actor
    obs_a_TO = jax.random.normal(jax.random.key(1), (6, 4))
    obs_b_TO = obs_a_TO.at[:3].set(jax.random.normal(jax.random.key(2), (3, 4)))  # same from t=3 on
    no_reset_T = jnp.zeros(6, bool)
    reset_T = no_reset_T.at[3].set(True)
    carry = actor.initial_carry()

    diff_without = actor.unroll(obs_a_TO, no_reset_T, carry).mean_A - actor.unroll(obs_b_TO, no_reset_T, carry).mean_A
    assert float(jnp.max(jnp.abs(diff_without[3:]))) > 1e-6  # history leaks through the carry

    mean_a = actor.unroll(obs_a_TO, reset_T, carry).mean_A
    mean_b = actor.unroll(obs_b_TO, reset_T, carry).mean_A
    np.testing.assert_array_equal(mean_a[3:], mean_b[3:])
    # ... and equals a fresh start on the suffix.
    np.testing.assert_allclose(mean_a[3:], actor.unroll(obs_a_TO[3:], no_reset_T[3:], carry).mean_A, rtol=1e-6)


def test_gru_unroll_equals_step_by_step():
    cfg = PolicyConfig(kind="gru", hidden=(8,), layers=1, dist="mixture", mixtures=2)
    actor = make_actor_critic(cfg, 3, 3, 2, key=KEY).actor
    obs_TO = jax.random.normal(KEY, (5, 3))
    reset_T = jnp.array([False, False, True, False, False])
    carry = actor.initial_carry() + 0.5  # a non-initial carry at t=0
    means = []
    for t in range(5):
        dist, carry = actor(obs_TO[t], actor.reset(carry, reset_T[t]))
        means.append(dist.mean_KA)
    np.testing.assert_allclose(
        actor.unroll(obs_TO, reset_T, actor.initial_carry() + 0.5).mean_KA, jnp.stack(means), rtol=1e-5, atol=1e-7
    )


# --------------------------------------------------------------------------- normalizer


def test_normalizer_matches_numpy_over_several_merges():
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=[3.0, -1.0, 100.0], scale=[0.5, 2.0, 10.0], size=(n, 3)) for n in (7, 50, 1, 200)]
    stats = N.init(3)
    for b in batches:
        stats = N.update(stats, jnp.asarray(b, jnp.float32))
    everything = np.concatenate(batches)
    assert float(stats.count) == len(everything)
    np.testing.assert_allclose(stats.mean_O, everything.mean(0), rtol=1e-5)
    np.testing.assert_allclose(N.variance(stats), everything.var(0), rtol=1e-4)

    obs = jnp.asarray(everything[0], jnp.float32)
    np.testing.assert_allclose(
        N.normalize(stats, obs), (everything[0] - everything.mean(0)) / everything.std(0), rtol=1e-4, atol=1e-5
    )


def test_normalizer_clips_and_is_identity_when_empty_or_disabled():
    stats = N.update(N.init(2), jnp.array([[0.0, 0.0], [2.0, 2.0]]))  # mean 1, std 1
    np.testing.assert_allclose(N.normalize(stats, jnp.array([1e6, -1e6])), [N.CLIP, -N.CLIP])
    raw = jnp.array([50.0, -3.0])
    np.testing.assert_array_equal(N.normalize(N.init(2), raw), raw)
    disabled = N.update(N.init(2, enabled=False), jnp.ones((4, 2)))
    assert float(disabled.count) == 0.0
    np.testing.assert_array_equal(N.normalize(disabled, raw), raw)
