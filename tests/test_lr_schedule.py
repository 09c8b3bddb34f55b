"""`train lr_schedule=adaptive desired_kl=...`: rsl_rl's KL-adaptive learning rate.

The rule on hand-made KL values, the closed-form and sample KLs it follows, the
jitted update stepping with the adapted value, a C MuJoCo training run that logs
`lr` and `kl`, the learning rate's round trip through a checkpoint and resume,
and the settings' errors (their positions are in tests/diagnostics/check_settings.test).
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fixtures.cartpole import cartpole_task

from ksimdsl import settings as S
from ksimdsl.errors import KsimError
from ksimdsl.runtime.rl import distributions as D
from ksimdsl.runtime.rl import ppo, schedule
from ksimdsl.runtime.training.checkpoint import (
    CheckpointMeta,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    spec_hash,
)
from ksimdsl.runtime.training.overrides import apply_overrides
from ksimdsl.runtime.training.runs import read_metrics
from ksimdsl.runtime.training.train import TIMING_KEYS, RunPlan, train
from tests.test_ppo import SMALL_CONFIGS, _init, _random_trajectory

KEY = jax.random.key(0)


# --------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    "lr, kl, expected",
    [
        (1e-3, 0.05, 1e-3 / 1.5),  # kl > 2 desired_kl: down
        (1e-3, 0.0201, 1e-3 / 1.5),
        (1e-3, 0.0199, 1e-3),  # between desired_kl / 2 and 2 desired_kl: kept
        (1e-3, 0.01, 1e-3),
        (1e-3, 0.0051, 1e-3),
        (1e-3, 0.0049, 1.5e-3),  # kl < desired_kl / 2: up
        (1e-3, 0.0, 1.5e-3),
        (1.2e-5, 1.0, 1e-5),  # down stops at 1e-5
        (1e-5, 1.0, 1e-5),
        (8e-3, 0.0, 1e-2),  # up stops at 1e-2
        (1e-2, 0.0, 1e-2),
        (1e-3, math.nan, 1e-3),  # a KL that is not finite changes nothing
        (1e-3, math.inf, 1e-3 / 1.5),
    ],
)
def test_adapt_lr_follows_rsl_rl_rule(lr, kl, expected):
    got = schedule.adapt_lr(jnp.float32(lr), jnp.float32(kl), 0.01)
    assert got.dtype == jnp.float32
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_adapt_lr_repeated_reaches_the_bounds_and_stays():
    lr = jnp.float32(3e-4)
    seen = []
    for _ in range(12):
        lr = schedule.adapt_lr(lr, jnp.float32(1.0), 0.01)
        seen.append(float(lr))
    assert seen[0] == pytest.approx(2e-4, rel=1e-6) and seen[-1] == pytest.approx(1e-5, rel=1e-6)
    assert seen == sorted(seen, reverse=True) and seen.index(min(seen)) == 8  # 3e-4 / 1.5^9 < 1e-5
    for i in range(20):  # 1e-5 * 1.5^17 < 1e-2 < 1e-5 * 1.5^18
        lr = schedule.adapt_lr(lr, jnp.float32(0.0), 0.01)
        assert float(lr) == pytest.approx(min(1e-5 * 1.5 ** (i + 1), 1e-2), rel=1e-5)


# --------------------------------------------------------------------------- the KL it follows


def test_normal_kl_closed_form_by_hand():
    # dim 0: KL(N(0, 1) || N(1, 2^2)) = log 2 + (1 + 1) / (2 * 4) - 1/2;  dim 1: equal Gaussians, 0
    p = D.Normal(mean_A=jnp.array([0.0, 0.5]), std_A=jnp.array([1.0, 0.5]))
    q = D.Normal(mean_A=jnp.array([1.0, 0.5]), std_A=jnp.array([2.0, 0.5]))
    assert float(D.normal_kl(p, q)) == pytest.approx(math.log(2.0) + 0.25 - 0.5, rel=1e-6)
    assert float(D.normal_kl(p, p)) == 0.0
    assert float(D.normal_kl(q, p)) == pytest.approx(-math.log(2.0) + (4 + 1) / 2 - 0.5, rel=1e-6)


def test_mixture_sample_estimate_agrees_with_the_closed_form():
    """The k3 estimate (mixture head) of one-component mixtures ~ the exact KL of their Gaussians."""
    k_old, k_new, k_sample = jax.random.split(jax.random.key(3), 3)
    n, a = 40_000, 3
    old = D.Normal(mean_A=0.3 * jax.random.normal(k_old, (n, a)), std_A=jnp.full((n, a), 0.5))
    new = D.Normal(mean_A=old.mean_A + 0.1, std_A=jnp.full((n, a), 0.55))
    def mix(d: D.Normal) -> D.Mixture:
        return D.Mixture(logits_K=jnp.zeros((n, 1)), mean_KA=d.mean_A[:, None], std_KA=d.std_A[:, None])

    action_NA = D.sample(old, key=k_sample)
    exact = ppo.policy_kl(ppo.old_policy(old, action_NA), new, D.log_prob(new, action_NA))
    np.testing.assert_allclose(exact, jnp.mean(D.normal_kl(old, new)), rtol=1e-6)
    estimate = ppo.policy_kl(ppo.old_policy(mix(old), action_NA), mix(new), D.log_prob(mix(new), action_NA))
    assert float(exact) > 0.05 and float(estimate) == pytest.approx(float(exact), rel=0.05)
    # a mixture's old policy is the log-probability of the taken action
    np.testing.assert_allclose(ppo.old_policy(mix(old), action_NA), D.log_prob(old, action_NA), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- the jitted update


@pytest.mark.parametrize("name", list(SMALL_CONFIGS))
def test_update_moves_lr_per_minibatch_by_the_rule(name):
    """epochs=2 x minibatches=2 = 4 steps. The first step of an update sees the unchanged policy
    (kl = 0: up); with a tiny desired_kl every later step sees a larger kl (down); with
    desired_kl=1 every step goes up, until the 1e-2 ceiling."""
    up = ppo.PPOConfig(epochs=2, minibatches=2, lr=1e-3, lr_schedule="adaptive", desired_kl=1.0)
    state = _init(SMALL_CONFIGS[name], up)
    traj = _random_trajectory(state, T=6, E=4, key=jax.random.key(1))
    update = jax.jit(ppo.update)
    s1, m1 = update(state, traj, key=KEY)
    assert float(m1["lr"]) == pytest.approx(1e-3 * 1.5**4, rel=1e-5)
    assert float(schedule.adaptive_lr(s1.opt_state)) == float(m1["lr"])
    assert 0.0 <= float(m1["kl"]) < 0.5
    _, m2 = update(s1, traj, key=KEY)
    assert float(m2["lr"]) == pytest.approx(1e-2, rel=1e-6)

    down = dataclasses.replace(up, desired_kl=1e-9)
    _, m = jax.jit(ppo.update)(_init(SMALL_CONFIGS[name], down), traj, key=KEY)
    assert float(m["lr"]) == pytest.approx(1e-3 * 1.5 / 1.5**3, rel=1e-5)
    assert float(m["kl"]) > 2e-9


def test_the_step_uses_the_adapted_lr():
    """One step: adaptive from lr=1e-3 with kl = 0 goes up to 1.5e-3 first, so its parameters
    are those of a constant 1.5e-3 step."""
    adaptive = ppo.PPOConfig(epochs=1, minibatches=1, lr=1e-3, lr_schedule="adaptive", desired_kl=0.01)
    constant = dataclasses.replace(adaptive, lr=1.5e-3, lr_schedule="constant")
    state_a = _init(SMALL_CONFIGS["mlp-normal"], adaptive)
    state_c = _init(SMALL_CONFIGS["mlp-normal"], constant)
    traj = _random_trajectory(state_a, T=6, E=4, key=jax.random.key(1))
    new_a, m_a = jax.jit(ppo.update)(state_a, traj, key=KEY)
    new_c, m_c = jax.jit(ppo.update)(state_c, traj, key=KEY)
    assert float(m_a["lr"]) == pytest.approx(1.5e-3, rel=1e-6) and float(m_c["lr"]) == pytest.approx(1.5e-3)
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), new_a.model, state_a.model)
    assert max(jax.tree.leaves(moved)) > 1e-4
    for a, c in zip(jax.tree.leaves(new_a.model), jax.tree.leaves(new_c.model)):
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-8)


def test_warmup_scales_the_adaptive_lr():
    config = ppo.PPOConfig(epochs=1, minibatches=2, lr=1e-3, warmup=10, lr_schedule="adaptive", desired_kl=1.0)
    state = _init(SMALL_CONFIGS["mlp-normal"], config)
    traj = _random_trajectory(state, T=6, E=4, key=jax.random.key(1))
    s1, m1 = jax.jit(ppo.update)(state, traj, key=KEY)
    # two steps up (1e-3 * 1.5^2), the second one at 2/10 of the warmup
    assert float(schedule.adaptive_lr(s1.opt_state)) == pytest.approx(2.25e-3, rel=1e-6)
    assert float(m1["lr"]) == pytest.approx(2.25e-3 * 2 / 10, rel=1e-6)


def test_constant_schedule_keeps_lr_and_optax_state():
    """The default: lr stays, no kl is computed, and the optimizer state is optax.adam's own
    (so checkpoints of runs from before lr_schedule existed still resume)."""
    config = ppo.PPOConfig(epochs=2, minibatches=2, lr=1e-3)
    state = _init(SMALL_CONFIGS["mlp-normal"], config)
    params = eqx.filter(state.model, eqx.is_inexact_array)
    assert jax.tree.structure(state.opt_state) == jax.tree.structure(optax.adam(lambda _: 1e-3).init(params))
    adaptive = _init(SMALL_CONFIGS["mlp-normal"], dataclasses.replace(config, lr_schedule="adaptive"))
    assert isinstance(adaptive.opt_state[-1], schedule.AdaptiveLRState)
    traj = _random_trajectory(state, T=6, E=4, key=jax.random.key(1))
    update = jax.jit(ppo.update)
    for i in range(2):
        state, metrics = update(state, traj, key=jax.random.key(i))
        assert float(metrics["lr"]) == pytest.approx(1e-3) and "kl" not in metrics
    assert float(metrics["approx_kl"]) > 0.0


# --------------------------------------------------------------------------- settings


def test_settings_are_checked_everywhere():
    with pytest.raises(KsimError, match="train setting 'lr_schedule' must be one of constant, adaptive, got 'adaptiv'"):
        S.TrainSettings(lr_schedule="adaptiv")
    with pytest.raises(KsimError, match=r"unknown train lr_schedule 'adaptiv' \(expected one of constant, adaptive\)"):
        S.TrainSettings.from_dict({"lr_schedule": "adaptiv"})
    with pytest.raises(KsimError, match="train setting 'desired_kl' must be positive, got 0"):
        S.TrainSettings(desired_kl=0)
    # lr starts the adaptive rate, which stays in [1e-5, 1e-2]; a constant lr may be larger
    assert S.TrainSettings(lr=0.05).lr == 0.05
    with pytest.raises(KsimError, match=r"with lr_schedule=adaptive, lr .* \[1e-05, 0.01\]; got lr=0.05"):
        S.TrainSettings(lr=0.05, lr_schedule="adaptive")
    with pytest.raises(KsimError, match=r"with lr_schedule=adaptive, lr .* got lr=0.05"):
        ppo.PPOConfig(lr=0.05, lr_schedule="adaptive")
    spec = cartpole_task().spec
    with pytest.raises(KsimError) as err:
        apply_overrides(spec, ["lr_schedule=adaptiv", "desired_kl=0"])
    text = str(err.value)
    assert "command line:1:13: error: bad value for 'lr_schedule': expected one of constant, adaptive" in text
    assert "(did you mean 'adaptive'?)" in text
    assert "command line:1:32: error: bad value for 'desired_kl': must be positive, got 0" in text
    tuned = apply_overrides(spec, ["lr_schedule=adaptive", "desired_kl=0.02"])
    assert (tuned.train.lr_schedule, tuned.train.desired_kl) == ("adaptive", 0.02)


# --------------------------------------------------------------------------- training runs (C MuJoCo engine)

#: 2 epochs x 2 minibatches: 4 optimizer steps, so 4 lr moves, per iteration.
TINY = ["num_envs=8", "rollout=8", "minibatches=2", "epochs=2", "checkpoint_every=2", "lr=1e-3"]


def _run(tmp_path, name, *extra, resume=False):
    spec, kernels, path = cartpole_task("numba")
    spec = apply_overrides(spec, TINY + list(extra))
    result = train(spec, kernels, model_path=path, engine="mujoco",
                   plan=RunPlan(tmp_path / name, resume=resume, progress=False))  # fmt: skip
    records = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_metrics(tmp_path / name)]
    return spec, result, records


def test_training_logs_lr_and_kl_and_resumes_with_the_adapted_lr(tmp_path):
    spec, _, straight = _run(tmp_path, "straight", "lr_schedule=adaptive", "steps=4")
    lrs = [r["lr"] for r in straight]
    assert all(1e-5 <= lr <= 1e-2 for lr in lrs) and all(r["kl"] >= 0 and math.isfinite(r["kl"]) for r in straight)
    # lr moves by factors of 1.5 from its start, or from a bound it was clipped to
    powers = [[math.log(lr / base) / math.log(1.5) for base in (1e-3, 1e-2, 1e-5)] for lr in lrs]
    assert all(any(abs(p - round(p)) < 1e-4 for p in ps) for ps in powers)
    # the first iteration barely moves the policy (kl far below desired_kl / 2): lr goes up
    assert lrs[0] > 1e-3 and len(set(lrs)) > 1

    # stopped after 2 iterations and resumed: the checkpoint holds the lr, and the run continues exactly
    _, first, _ = _run(tmp_path, "resumed", "lr_schedule=adaptive", "steps=2")
    arrays, _ = read_checkpoint(first.checkpoint)
    assert float(arrays["ppo.opt_state[1].lr"]) == lrs[1]
    _, _, resumed = _run(tmp_path, "resumed", "lr_schedule=adaptive", "steps=4", resume=True)
    assert resumed == straight

    _, _, constant = _run(tmp_path, "constant", "steps=2")
    assert [r["lr"] for r in constant] == [pytest.approx(1e-3)] * 2 and not any("kl" in r for r in constant)
    assert all("approx_kl" in r for r in constant)


def test_resuming_with_another_lr_schedule_says_so(tmp_path):
    spec = cartpole_task().spec
    constant = ppo.init_ppo_from_spec(spec, key=KEY)
    meta = CheckpointMeta(iteration=1, env_steps=8, wall_s=1.0, task=spec.task, spec_hash=spec_hash(spec), engine="mjx")
    save_checkpoint(tmp_path, {"ppo": constant}, meta)
    adaptive = dataclasses.replace(spec, train=dataclasses.replace(spec.train, lr_schedule="adaptive"))
    template = ppo.init_ppo_from_spec(adaptive, key=KEY)
    with pytest.raises(KsimError, match=r"has no array 'ppo\.opt_state.*the optimizer or lr_schedule change\?"):
        load_checkpoint(tmp_path, {"ppo": template}, spec=adaptive)
