"""GAE, the PPO losses, the jitted update and a toy task it must learn."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ksimdsl.abi import TaskSpec
from ksimdsl.errors import KsimError
from ksimdsl.runtime.rl import distributions as D
from ksimdsl.runtime.rl import normalize, ppo
from ksimdsl.runtime.rl.networks import PolicyConfig

KEY = jax.random.key(0)


# --------------------------------------------------------------------------- GAE


def test_gae_three_steps_by_hand():
    # gamma = lam = 0.5, so gamma * lam = 0.25. Rewards [1, 2, 3], values [0.5, 1, 1.5],
    # value after the rollout 2. Three environments (columns):
    #   env 0, no episode end:     next = [1, 1.5, 2]
    #       delta = [1 + .5*1 - .5, 2 + .5*1.5 - 1, 3 + .5*2 - 1.5] = [1, 1.75, 2.5]
    #       adv2 = 2.5; adv1 = 1.75 + .25*2.5 = 2.375; adv0 = 1 + .25*2.375 = 1.59375
    #   env 1, failure at t=1 (its bootstrap 9 must be ignored): next1 = 0
    #       delta1 = 2 + 0 - 1 = 1; adv2 = 2.5; adv1 = 1 (no carry across the end); adv0 = 1 + .25*1 = 1.25
    #   env 2, truncation at t=1 with bootstrap 4: next1 = 4
    #       delta1 = 2 + .5*4 - 1 = 3; adv2 = 2.5; adv1 = 3; adv0 = 1 + .25*3 = 1.75
    col = lambda *v: jnp.array(v, jnp.float32)[:, None].repeat(3, axis=1)  # noqa: E731
    reward_TE = col(1.0, 2.0, 3.0)
    value_TE = col(0.5, 1.0, 1.5)
    done_TE = jnp.array([[False] * 3, [False, True, True], [False] * 3])
    failure_TE = jnp.array([[False] * 3, [False, True, False], [False] * 3])
    bootstrap_TE = jnp.array([[0.0] * 3, [0.0, 9.0, 4.0], [0.0] * 3])
    last_value_E = jnp.full((3,), 2.0)

    adv_TE, ret_TE = ppo.gae(reward_TE, value_TE, done_TE, failure_TE, bootstrap_TE, last_value_E, 0.5, 0.5)

    expected = np.array([[1.59375, 1.25, 1.75], [2.375, 1.0, 3.0], [2.5, 2.5, 2.5]])
    np.testing.assert_allclose(adv_TE, expected, rtol=1e-6)
    np.testing.assert_allclose(ret_TE, expected + np.asarray(value_TE), rtol=1e-6)


def _gae_forward_sums(reward, value, done, failure, bootstrap, last_value, gamma, lam):
    """Independent reference: adv_t = sum_k (gamma lam)^k delta_{t+k} up to the episode end (float64 loops)."""
    T, E = reward.shape
    adv = np.zeros((T, E))
    for e in range(E):
        delta = []
        for t in range(T):
            if done[t, e]:
                nxt = 0.0 if failure[t, e] else bootstrap[t, e]
            else:
                nxt = value[t + 1, e] if t + 1 < T else last_value[e]
            delta.append(reward[t, e] + gamma * nxt - value[t, e])
        for t in range(T):
            total, k = 0.0, t
            while k < T:
                total += (gamma * lam) ** (k - t) * delta[k]
                if done[k, e]:
                    break
                k += 1
            adv[t, e] = total
    return adv


def test_gae_failure_success_truncation_matches_reference():
    T, E = 12, 3
    rng = np.random.default_rng(1)
    reward = rng.normal(size=(T, E))
    value = rng.normal(size=(T, E))
    bootstrap = rng.normal(size=(T, E)) * 5
    last_value = rng.normal(size=E)
    done = np.zeros((T, E), bool)
    failure = np.zeros((T, E), bool)
    done[3, 0] = failure[3, 0] = True  # failure
    done[7, 0] = True  # success (bootstrap)
    done[10, 0] = True  # truncation (bootstrap)
    done[0, 1] = failure[0, 1] = True
    done[11, 1] = True  # truncation on the last step: bootstrap, not last_value
    # env 2 never ends: bootstraps from last_value

    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    adv, ret = ppo.gae(f32(reward), f32(value), done, failure, f32(bootstrap), f32(last_value), 0.97, 0.9)
    expected = _gae_forward_sums(reward, value, done, failure, bootstrap, last_value, 0.97, 0.9)
    np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, expected + value, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- losses


def test_losses_match_numpy():
    rng = np.random.default_rng(2)
    logp, old, adv = rng.normal(scale=0.3, size=(3, 40))
    v, v_old, ret = rng.normal(size=(3, 40))
    clip, vclip = 0.2, 0.3

    surrogate = []
    for lp, lo, a in zip(logp, old, adv):
        r = math.exp(lp - lo)
        surrogate.append(min(r * a, min(max(r, 1 - clip), 1 + clip) * a))
    value_terms = []
    for vi, vo, R in zip(v, v_old, ret):
        vc = vo + min(max(vi - vo, -vclip), vclip)
        value_terms.append(max((vi - R) ** 2, (vc - R) ** 2))
    r = np.exp(logp - old)

    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    np.testing.assert_allclose(
        ppo.clipped_surrogate_loss(f32(logp), f32(old), f32(adv), clip), -np.mean(surrogate), rtol=1e-5
    )
    np.testing.assert_allclose(
        ppo.clipped_value_loss(f32(v), f32(v_old), f32(ret), vclip), 0.5 * np.mean(value_terms), rtol=1e-5
    )
    np.testing.assert_allclose(
        ppo.clipped_value_loss(f32(v), f32(v_old), f32(ret), 0.0), 0.5 * np.mean((v - ret) ** 2), rtol=1e-5
    )
    np.testing.assert_allclose(ppo.approx_kl(f32(logp - old)), np.mean((r - 1) - np.log(r)), rtol=1e-4)
    np.testing.assert_allclose(ppo.clip_fraction(f32(logp - old), clip), np.mean(np.abs(r - 1) > clip))
    norm_adv = ppo.normalize_advantage(f32(adv))
    np.testing.assert_allclose(norm_adv, (adv - adv.mean()) / adv.std(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ppo.explained_variance(f32(v), f32(ret)), 1 - np.var(ret - v) / np.var(ret), rtol=1e-5)
    assert float(ppo.explained_variance(f32(ret), f32(ret))) == pytest.approx(1.0)


def test_policy_gradient_is_zero_where_the_ratio_is_clipped():
    clip = 0.2
    ratio = jnp.array([1.5, 0.5, 1.5, 0.5, 1.1, 0.9])
    advantage = jnp.array([1.0, -1.0, -1.0, 1.0, 1.0, -1.0])
    # clipped (min picks the constant clipped term): r > 1+eps with A > 0, r < 1-eps with A < 0.
    clipped = np.array([True, True, False, False, False, False])
    grad = jax.grad(lambda lp: ppo.clipped_surrogate_loss(lp, jnp.zeros(6), advantage, clip))(jnp.log(ratio))
    np.testing.assert_array_equal(np.asarray(grad) == 0.0, clipped)


def test_value_gradient_is_zero_where_the_clipped_error_dominates():
    # old value 0, clip 0.2, return 1: v = 0.5 moved past the clip; clipped error (0.2 - 1)^2 = 0.64 >
    # unclipped (0.5 - 1)^2 = 0.25, so the loss is constant in v. v = 0.1 is inside the clip range.
    grad = jax.grad(lambda v: ppo.clipped_value_loss(v, jnp.zeros(2), jnp.ones(2), 0.2))(jnp.array([0.5, 0.1]))
    assert float(grad[0]) == 0.0 and float(grad[1]) != 0.0


# --------------------------------------------------------------------------- update

SMALL_CONFIGS = {
    "mlp-normal": PolicyConfig(kind="mlp", hidden=(32, 32)),
    "gru-mixture": PolicyConfig(kind="gru", hidden=(16, 16), layers=2, dist="mixture", mixtures=3),
}


def _collect(state: ppo.PPOState, obs_TEO: jax.Array, reset_TE: jax.Array, key: jax.Array):
    """Act like a rollout would: vmapped `act`, carry reset before the steps flagged in reset_TE."""
    model, norm = state.model, state.obs_norm_actor
    num_envs = obs_TEO.shape[1]
    carry0_E = jax.vmap(lambda _: ppo.initial_carry(model))(jnp.arange(num_envs))

    def step(carry_E, inp):
        obs_EO, reset_E, step_key = inp
        carry_E = jax.vmap(lambda c, r: ppo.reset_carry(model, c, r))(carry_E, reset_E)
        keys = jax.random.split(step_key, num_envs)
        action_EA, log_prob_E, carry_E = jax.vmap(lambda o, c, k: ppo.act(model, norm, o, c, key=k))(
            obs_EO, carry_E, keys
        )
        return carry_E, (action_EA, log_prob_E)

    keys_T = jax.random.split(key, obs_TEO.shape[0])
    _, (action_TEA, log_prob_TE) = jax.lax.scan(step, carry0_E, (obs_TEO, reset_TE, keys_T))
    return action_TEA, log_prob_TE, carry0_E


def _random_trajectory(state: ppo.PPOState, T: int, E: int, key: jax.Array) -> ppo.Trajectory:
    k_obs, k_act, k_rew, k_done = jax.random.split(key, 4)
    obs_TEO = jax.random.normal(k_obs, (T, E, 5)) * 3.0 + 1.0
    done_TE = jax.random.uniform(k_done, (T, E)) < 0.15
    reset_TE = jnp.concatenate([jnp.zeros((1, E), bool), done_TE[:-1]])
    action_TEA, log_prob_TE, carry_E = _collect(state, obs_TEO, reset_TE, k_act)
    return ppo.Trajectory(
        obs_actor_TEO=obs_TEO,
        obs_critic_TEC=obs_TEO,
        final_obs_critic_TEC=jnp.concatenate([obs_TEO[1:], obs_TEO[-1:]]),
        action_TEA=action_TEA,
        log_prob_TE=log_prob_TE,
        reward_TE=jax.random.normal(k_rew, (T, E)) + action_TEA[..., 0],
        done_TE=done_TE,
        failure_TE=done_TE & (obs_TEO[..., 0] > 1.0),
        carry_E=carry_E,
        reset_TE=reset_TE,
    )


def _init(policy: PolicyConfig, config: ppo.PPOConfig, seed: int = 0) -> ppo.PPOState:
    return ppo.init_ppo(
        policy, config, obs_actor_size=5, obs_critic_size=5, action_size=2, key=jax.random.key(seed)
    )


@pytest.mark.parametrize("name", list(SMALL_CONFIGS))
def test_update_reduces_the_loss_on_a_fixed_batch(name: str):
    config = ppo.PPOConfig(epochs=4, minibatches=2, lr=1e-3)
    state = _init(SMALL_CONFIGS[name], config)
    traj = _random_trajectory(state, T=8, E=8, key=jax.random.key(1))
    batch, _, _ = ppo.make_batch(state, traj)

    new_state, metrics = jax.jit(ppo.update)(state, traj, key=jax.random.key(2))

    loss_before, _ = ppo.ppo_loss(state.model, batch, config)
    loss_after, _ = ppo.ppo_loss(new_state.model, batch, config)
    assert float(loss_after) < float(loss_before) - 1e-3
    assert set(metrics) == set(ppo.METRICS) - {"kl"}  # kl: lr_schedule=adaptive only
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert int(new_state.step) == 1 and int(new_state.opt_step) == 8
    assert float(new_state.obs_norm_actor.count) == 64


def test_non_finite_rewards_and_observations_never_reach_the_parameters():
    """A NaN reward or observation (e.g. `log(x)` at x = 0) skips the optimizer steps it poisons
    and leaves the normalizers as they were; the steps are counted in `skipped_steps`."""
    config = ppo.PPOConfig(epochs=2, minibatches=2, lr=1e-3)
    state = _init(SMALL_CONFIGS["mlp-normal"], config)
    traj = _random_trajectory(state, T=8, E=8, key=jax.random.key(1))
    # env 0 (the first minibatch of some permutations) gets a NaN reward; env 5 an inf observation
    poisoned = eqx.tree_at(
        lambda t: (t.reward_TE, t.obs_actor_TEO),
        traj,
        (traj.reward_TE.at[3, 0].set(jnp.nan), traj.obs_actor_TEO.at[2, 5, 1].set(jnp.inf)),
    )
    new_state, metrics = jax.jit(ppo.update)(state, poisoned, key=jax.random.key(2))
    leaves = jax.tree.leaves(eqx.filter(new_state, eqx.is_inexact_array))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
    assert 1 <= float(metrics["skipped_steps"]) <= config.epochs * config.minibatches
    # the actor's normalizer saw an inf: its statistics are kept, not merged
    assert float(new_state.obs_norm_actor.count) == float(state.obs_norm_actor.count)
    clean_state, clean = jax.jit(ppo.update)(state, traj, key=jax.random.key(2))
    assert float(clean["skipped_steps"]) == 0.0
    assert float(clean_state.obs_norm_actor.count) == 64


def test_make_batch_values_every_state_under_the_updated_normalizer():
    """Values and bootstrap values both come from the critic on observations normalized with
    the statistics updated by this rollout, so GAE never mixes two normalizers."""
    config = ppo.PPOConfig(gamma=0.9, lam=0.8)
    state = _init(SMALL_CONFIGS["mlp-normal"], config)
    traj = _random_trajectory(state, T=6, E=5, key=jax.random.key(7))
    # every episode ends at the last step by truncation: its return bootstraps from the final state
    final_TEO = traj.final_obs_critic_TEC.at[-1].set(traj.obs_critic_TEC[-1] * 2.0 - 3.0)
    traj = eqx.tree_at(
        lambda t: (t.final_obs_critic_TEC, t.done_TE, t.failure_TE),
        traj,
        (final_TEO, traj.done_TE.at[-1].set(True), traj.failure_TE.at[-1].set(False)),
    )
    batch, _, norm_c = ppo.make_batch(state, traj)
    assert float(norm_c.count) > float(state.obs_norm_critic.count)  # the normalizer did change
    value = lambda o: state.model.critic(normalize.normalize(norm_c, o))  # noqa: E731
    want_E = traj.reward_TE[-1] + 0.9 * jax.vmap(value)(final_TEO[-1])
    np.testing.assert_allclose(batch.return_TE[-1], want_E, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(batch.value_TE, jax.vmap(jax.vmap(value))(traj.obs_critic_TEC), rtol=1e-5, atol=1e-5)


def test_gru_recomputation_reproduces_rollout_log_probs():
    """The update's scan over T with the stored carry and resets sees what the rollout's act() saw."""
    config = ppo.PPOConfig(normalize_obs=False)
    state = _init(SMALL_CONFIGS["gru-mixture"], config)
    traj = _random_trajectory(state, T=10, E=4, key=jax.random.key(3))
    assert bool(jnp.any(traj.reset_TE[1:]))  # the test must exercise resets
    batch, _, _ = ppo.make_batch(state, traj)
    dist_TE = jax.vmap(state.model.actor.unroll, in_axes=(1, 1, 0), out_axes=1)(
        batch.obs_actor_TEO, batch.reset_TE, batch.carry_E
    )
    np.testing.assert_allclose(D.log_prob(dist_TE, batch.action_TEA), traj.log_prob_TE, rtol=1e-5, atol=1e-5)
    _, metrics = ppo.ppo_loss(state.model, batch, config)
    assert float(metrics["approx_kl"]) < 1e-6 and float(metrics["clip_fraction"]) == 0.0


def test_update_is_deterministic_and_warmup_sets_lr():
    config = ppo.PPOConfig(epochs=2, minibatches=2, lr=1e-3, warmup=10, optimizer="adamw", weight_decay=1e-4)
    state = _init(SMALL_CONFIGS["mlp-normal"], config)
    traj = _random_trajectory(state, T=4, E=4, key=jax.random.key(4))
    update = jax.jit(ppo.update)
    s1, m1 = update(state, traj, key=KEY)
    s2, m2 = update(state, traj, key=KEY)
    assert set(m1) == set(m2) and all(float(m1[k]) == float(m2[k]) for k in m1)
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), s1.model, s2.model)))
    assert float(m1["lr"]) == pytest.approx(1e-3 * 4 / 10)  # 4 optimizer steps of a 10-step warmup
    _, m3 = update(s1, traj, key=KEY)
    assert float(m3["lr"]) == pytest.approx(1e-3 * 8 / 10)


def test_minibatches_must_divide_num_envs():
    state = _init(SMALL_CONFIGS["mlp-normal"], ppo.PPOConfig(minibatches=3))
    traj = _random_trajectory(state, T=2, E=4, key=KEY)
    with pytest.raises(KsimError, match="num_envs=4 must be a multiple of minibatches=3"):
        ppo.update(state, traj, key=KEY)


def test_configs_from_spec():
    spec = TaskSpec.from_dict(
        {
            "abi": 1,
            "task": "t",
            "model": "m.xml",
            "physics": {},
            "episode_steps": 10,
            "actuators": {"kind": "ctrl"},
            "action_size": 2,
            "obs": {
                "actor": [{"name": "a", "size": 3, "offset": 0}],
                "critic": [{"name": "c", "size": 4, "offset": 0}],
            },
            "rewards": [],
            "terminations": [],
            "mem_size": 0,
            "phys_inputs": [],
            "rand": {},
            "policy": {"kind": "gru", "hidden": [8], "dist": "mixture", "mixtures": 2},
            "train": {"lambda": 0.9, "entropy": 0.01, "minibatches": 1, "num_envs": 4},
        }
    )
    config = ppo.PPOConfig.from_spec(spec)
    assert (config.lam, config.entropy_coef, config.minibatches) == (0.9, 0.01, 1)
    state = ppo.init_ppo_from_spec(spec, key=KEY)
    dist, carry = state.model.actor(jnp.zeros(3), ppo.initial_carry(state.model))
    assert isinstance(dist, D.Mixture) and dist.mean_KA.shape == (2, 2) and carry.shape == (1, 8)
    assert ppo.value(state.model, state.obs_norm_critic, jnp.zeros(4)).shape == ()
    with pytest.raises(KsimError, match="optimizer"):
        ppo.PPOConfig.from_dict({"optimizer": "sgd"})


# --------------------------------------------------------------------------- learning


def test_ppo_learns_a_one_step_continuous_task():
    """Contextual bandit: reward -|a - target(obs)|^2, every step is its own episode."""
    T, E = 4, 16
    policy = PolicyConfig(kind="mlp", hidden=(32, 32), init_std=0.5)
    config = ppo.PPOConfig(epochs=4, minibatches=2, lr=3e-3, entropy_coef=0.0)
    state = _init(policy, config)

    def target(obs_O):
        return jnp.array([0.6, -0.4]) + 0.3 * obs_O[:2]

    @jax.jit
    def iteration(state: ppo.PPOState, key: jax.Array):
        k_obs, k_act, k_upd = jax.random.split(key, 3)
        obs_TEO = jax.random.normal(k_obs, (T, E, 5))
        reset_TE = jnp.ones((T, E), bool)
        action_TEA, log_prob_TE, carry_E = _collect(state, obs_TEO, reset_TE, k_act)
        reward_TE = -jnp.sum(jnp.square(action_TEA - jax.vmap(jax.vmap(target))(obs_TEO)), axis=-1)
        done_TE = jnp.ones((T, E), bool)
        traj = ppo.Trajectory(
            obs_actor_TEO=obs_TEO,
            obs_critic_TEC=obs_TEO,
            final_obs_critic_TEC=obs_TEO,
            action_TEA=action_TEA,
            log_prob_TE=log_prob_TE,
            reward_TE=reward_TE,
            done_TE=done_TE,
            failure_TE=done_TE,
            carry_E=carry_E,
            reset_TE=reset_TE,
        )
        return ppo.update(state, traj, key=k_upd)

    test_obs_NO = jax.random.normal(jax.random.key(99), (64, 5))

    def error(state: ppo.PPOState) -> float:
        policy_fn = ppo.make_policy(state)
        action_NA = jax.vmap(lambda o: policy_fn(o, policy_fn.initial_carry())[0])(test_obs_NO)
        return float(jnp.sqrt(jnp.mean(jnp.square(action_NA - jax.vmap(target)(test_obs_NO)))))

    assert error(state) > 0.4
    for key in jax.random.split(jax.random.key(5), 300):
        state, metrics = iteration(state, key)
    assert error(state) < 0.1
    assert float(metrics["action_std"]) < 0.5  # exploration shrank as the policy converged
