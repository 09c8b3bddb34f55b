"""Proximal Policy Optimization: GAE, the clipped losses and the jitted update.

One training iteration of the runtime is `collect` (a rollout of T control
steps in E environments, see `ksimdsl.runtime.engine`) followed by

    state, metrics = update(state, traj, key=key)

which, inside one jit-able function,

1. merges the rollout's observations into the running normalizers,
2. recomputes the critic's values of the rollout with the new normalization
   and computes advantages and returns with GAE (`gae`),
3. runs `epochs` passes over the data, each split into `minibatches` groups of
   environments (shuffled along the ENV axis, time stays contiguous so that a
   recurrent actor is recomputed by scanning over T from the stored carry),
   taking one optimizer step on `ppo_loss` per minibatch (the optimizer and
   the learning-rate schedule are `ksimdsl.runtime.rl.schedule`).

GAE and the parts of the loss are pure functions in `ksimdsl.runtime.rl.losses`
(re-exported here).

Shape suffixes (docs/architecture.md, "Shape letters"): T time, E environments,
B environments of one minibatch, M minibatches, Y epochs, O / C actor / critic
observation, A action, N any flattened batch.

Rollout helpers, one environment per call (vmap them):
`act(model, obs_norm, obs_actor_O, carry, key=..)`, `value(model, obs_norm, obs_critic_C)`,
`reset_carry(model, carry, reset)`; `make_policy(state)` packs the actor and its
normalizer into a `Policy` for evaluation and export. Actions are raw and
unclipped: the runtime clips them to [-1, 1] where the actuators need it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax import Array

from ksimdsl.abi import PPO_METRICS, TaskSpec
from ksimdsl.errors import KsimError
from ksimdsl.runtime.rl import amp as AMP
from ksimdsl.runtime.rl import distributions as D
from ksimdsl.runtime.rl import normalize as N
from ksimdsl.runtime.rl import schedule
from ksimdsl.runtime.rl.losses import (
    approx_kl,
    clip_fraction,
    clipped_surrogate_loss,
    clipped_value_loss,
    explained_variance,
    gae,
    normalize_advantage,
    old_policy,
    policy_kl,
)
from ksimdsl.runtime.rl.networks import Actor, ActorCritic, PolicyConfig, make_actor_critic
from ksimdsl.runtime.rl.schedule import clip_gradients, learning_rate, make_optimizer
from ksimdsl.settings import TrainSettings, minibatch_problem, problems

__all__ = [
    "PPOConfig",
    "Trajectory",
    "PPOState",
    "Policy",
    "gae",
    "clipped_surrogate_loss",
    "clipped_value_loss",
    "normalize_advantage",
    "approx_kl",
    "policy_kl",
    "clip_fraction",
    "explained_variance",
    "ppo_loss",
    "learning_rate",
    "make_optimizer",
    "init_ppo",
    "init_ppo_from_spec",
    "Batch",
    "make_batch",
    "update",
    "act",
    "value",
    "reset_carry",
    "initial_carry",
    "make_policy",
    "METRICS",
]

#: Keys of the metrics dict returned by `update` (all scalars).
METRICS = PPO_METRICS


_TRAIN = TrainSettings()

#: PPOConfig field -> the TrainSettings field it comes from (the rest share their names).
_FROM_TRAIN = {"lam": "lam", "entropy_coef": "entropy"}


@dataclass(frozen=True)
class PPOConfig:
    """The PPO part of the task's `train` settings (`TrainSettings`, whose defaults and bounds it shares).

    `lam` is the task's `lambda`, `entropy_coef` its `entropy`. A `value_clip` or
    `max_grad_norm` of 0 disables that clipping; `warmup` is a number of
    optimizer steps of linear learning-rate warmup (0: none); `lr_schedule` and
    `desired_kl` choose the learning rate after it (`ksimdsl.runtime.rl.schedule`).
    Kept apart from `TrainSettings` so that loop settings (steps, seed, ...)
    never change the jitted update's static configuration.
    """

    epochs: int = _TRAIN.epochs
    minibatches: int = _TRAIN.minibatches
    lr: float = _TRAIN.lr
    optimizer: str = _TRAIN.optimizer
    weight_decay: float = _TRAIN.weight_decay
    warmup: int = _TRAIN.warmup
    lr_schedule: str = _TRAIN.lr_schedule
    desired_kl: float = _TRAIN.desired_kl
    gamma: float = _TRAIN.gamma
    lam: float = _TRAIN.lam
    clip: float = _TRAIN.clip
    value_clip: float = _TRAIN.value_clip
    entropy_coef: float = _TRAIN.entropy
    value_coef: float = _TRAIN.value_coef
    max_grad_norm: float = _TRAIN.max_grad_norm
    normalize_obs: bool = _TRAIN.normalize_obs
    normalize_adv: bool = _TRAIN.normalize_adv

    def __post_init__(self) -> None:
        values = {_FROM_TRAIN.get(f.name, f.name): getattr(self, f.name) for f in fields(self)}
        known = {TrainSettings.by_name()[name].key for name in values}
        # each value, and the rules between these values (num_envs is not known here)
        found = [p for p in problems(TrainSettings, values) if p.single or set(p.keys) <= known]
        if found:
            raise KsimError("; ".join(p.describe(f"train setting '{p.keys[0]}'") for p in found))

    @staticmethod
    def from_settings(train: TrainSettings) -> "PPOConfig":
        return PPOConfig(**{f.name: getattr(train, _FROM_TRAIN.get(f.name, f.name)) for f in fields(PPOConfig)})

    @staticmethod
    def from_dict(train: Mapping[str, Any]) -> "PPOConfig":
        """From a `SPEC["train"]`-style dict, validated by the schema."""
        return PPOConfig.from_settings(TrainSettings.from_dict(train))

    @staticmethod
    def from_spec(spec: TaskSpec) -> "PPOConfig":
        return PPOConfig.from_settings(spec.train)


# --------------------------------------------------------------------------- data


class Trajectory(eqx.Module):
    """One rollout of T control steps in E environments, as the collector records it.

    obs_actor_TEO, obs_critic_TEC: raw (unnormalized) observations the actions were taken on.
    final_obs_critic_TEC: raw critic observation of the state step t reached, before any
                       auto-reset: obs_critic_TEC[t + 1] unless the episode ended at t, then
                       its final state. `make_batch` values it with the same (updated)
                       normalizer as obs_critic_TEC, for the GAE bootstrap.
    action_TEA:        the sampled (unclipped) actions.
    log_prob_TE:       log pi_old(action | obs) at collection time.
    reward_TE:         reward of step t.
    done_TE:           the episode ended after step t, for any reason.
    failure_TE:        it ended by a failure termination (no bootstrap).
    carry_E:           the actor carry before step 0, (E, *carry shape).
    reset_TE:          the actor carry was reset to its initial value BEFORE step t.
    amp_feat_TEF, amp_next_TEF: AMP features of the state step t started from / reached (before any
                       auto-reset); None without an `amp` block (ksimdsl.runtime.rl.amp).
    """

    obs_actor_TEO: Array
    obs_critic_TEC: Array
    final_obs_critic_TEC: Array
    action_TEA: Array
    log_prob_TE: Array
    reward_TE: Array
    done_TE: Array
    failure_TE: Array
    carry_E: Array
    reset_TE: Array
    amp_feat_TEF: Array | None = None
    amp_next_TEF: Array | None = None


class Batch(eqx.Module):
    """What the loss needs, observations already normalized. Env axis: 1 for *_T*, 0 for carry_E.

    old_policy_TE (lr_schedule=adaptive, else None): the actor at the start of the
    update on these observations, what `policy_kl` compares the current actor with:
    its `D.Normal` (mean, std (T, E, A)) for the normal head, log pi(action) (T, E)
    for a mixture.
    """

    obs_actor_TEO: Array
    obs_critic_TEC: Array
    action_TEA: Array
    log_prob_TE: Array
    value_TE: Array
    advantage_TE: Array
    return_TE: Array
    reset_TE: Array
    carry_E: Array
    old_policy_TE: D.Normal | Array | None = None

    def take_envs(self, env_B: Array) -> "Batch":
        """The sub-batch of environments `env_B` (B,) (int indices), full time range."""
        return Batch(
            obs_actor_TEO=self.obs_actor_TEO[:, env_B],
            obs_critic_TEC=self.obs_critic_TEC[:, env_B],
            action_TEA=self.action_TEA[:, env_B],
            log_prob_TE=self.log_prob_TE[:, env_B],
            value_TE=self.value_TE[:, env_B],
            advantage_TE=self.advantage_TE[:, env_B],
            return_TE=self.return_TE[:, env_B],
            reset_TE=self.reset_TE[:, env_B],
            carry_E=self.carry_E[env_B],
            old_policy_TE=jax.tree.map(lambda x: x[:, env_B], self.old_policy_TE),
        )


class PPOState(eqx.Module):
    """Everything `update` changes, plus the (static) config it runs with.

    model: the ActorCritic; opt_state: optax state of `make_optimizer(config)`;
    obs_norm_actor / obs_norm_critic: running observation statistics;
    step: `update` calls so far; opt_step: optimizer steps so far; amp: the discriminator
    (`ksimdsl.runtime.rl.amp.AmpState`) of a task with an `amp` block, else None.
    """

    model: ActorCritic
    opt_state: optax.OptState
    obs_norm_actor: N.RunningStats
    obs_norm_critic: N.RunningStats
    step: Array
    opt_step: Array
    config: PPOConfig = eqx.field(static=True)
    amp: AMP.AmpState | None = None


# --------------------------------------------------------------------------- the loss


def _mean_std(dist: D.Distribution) -> Array:
    return jnp.mean(dist.std_A if isinstance(dist, D.Normal) else dist.std_KA)


def ppo_loss(model: ActorCritic, batch: Batch, config: PPOConfig) -> tuple[Array, dict[str, Array]]:
    """Total loss () of one minibatch and its parts.

    batch (one minibatch of B envs; its fields keep their _TE names): observations
    (T, B, O) / (T, B, C) normalized, action (T, B, A), log_prob (T, B) of the
    rollout policy, value (T, B) of the critic before this update (the centre of
    the value clip), advantage and return (T, B), reset (T, B), carry (B, *carry).
    The actor is recomputed over the whole sequence of each environment.

        loss = policy_loss + value_coef * value_loss - entropy_coef * entropy
    """
    dist_TB = jax.vmap(model.actor.unroll, in_axes=(1, 1, 0), out_axes=1)(
        batch.obs_actor_TEO, batch.reset_TE, batch.carry_E
    )
    log_prob_TB = D.log_prob(dist_TB, batch.action_TEA)
    value_TB = jax.vmap(jax.vmap(model.critic))(batch.obs_critic_TEC)
    advantage_TB = batch.advantage_TE
    if config.normalize_adv:
        advantage_TB = normalize_advantage(advantage_TB)

    policy_loss = clipped_surrogate_loss(log_prob_TB, batch.log_prob_TE, advantage_TB, config.clip)
    value_loss = clipped_value_loss(value_TB, batch.value_TE, batch.return_TE, config.value_clip)
    entropy = jnp.mean(D.entropy(dist_TB))
    loss = policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy

    log_ratio_TB = jax.lax.stop_gradient(log_prob_TB - batch.log_prob_TE)
    metrics = {
        "loss": loss,
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        "approx_kl": approx_kl(log_ratio_TB),
        "clip_fraction": clip_fraction(log_ratio_TB, config.clip),
        "action_std": jax.lax.stop_gradient(_mean_std(dist_TB)),
    }
    if batch.old_policy_TE is not None:  # lr_schedule=adaptive (only then: constant runs stay as they were)
        dist_TB, log_prob_TB = jax.lax.stop_gradient((dist_TB, log_prob_TB))
        metrics["kl"] = policy_kl(batch.old_policy_TE, dist_TB, log_prob_TB)
    return loss, metrics


# --------------------------------------------------------------------------- optimizer steps


def keep_if(condition: Array, new: Any, old: Any) -> Any:
    """`new` where the scalar `condition` holds, else `old` (two pytrees of one structure)."""
    new_arrays, static = eqx.partition(new, eqx.is_array)
    old_arrays, _ = eqx.partition(old, eqx.is_array)
    chosen = jax.tree.map(lambda a, b: jnp.where(condition, a, b), new_arrays, old_arrays)
    return eqx.combine(chosen, static)


# --------------------------------------------------------------------------- init and update


def init_ppo(
    policy: PolicyConfig,
    config: PPOConfig,
    *,
    obs_actor_size: int,
    obs_critic_size: int,
    action_size: int,
    key: Array,
    amp: AMP.AmpState | None = None,
) -> PPOState:
    """A fresh model, optimizer state and empty normalizers (and `amp`, a fresh discriminator)."""
    model = make_actor_critic(policy, obs_actor_size, obs_critic_size, action_size, key=key)
    return PPOState(
        model=model,
        opt_state=make_optimizer(config).init(eqx.filter(model, eqx.is_inexact_array)),
        obs_norm_actor=N.init(obs_actor_size, enabled=config.normalize_obs),
        obs_norm_critic=N.init(obs_critic_size, enabled=config.normalize_obs),
        step=jnp.zeros((), jnp.int32),
        opt_step=jnp.zeros((), jnp.int32),
        config=config,
        amp=amp,
    )


def init_ppo_from_spec(spec: TaskSpec, *, key: Array) -> PPOState:
    """`init_ppo` with the task's policy/train settings and observation/action sizes."""
    return init_ppo(
        spec.policy,
        PPOConfig.from_spec(spec),
        obs_actor_size=spec.obs_actor_size,
        obs_critic_size=spec.obs_critic_size,
        action_size=spec.action_size,
        key=key,
        amp=None if spec.amp is None else AMP.init_amp(spec.amp, key=jax.random.fold_in(key, 1)),
    )


def make_batch(state: PPOState, traj: Trajectory) -> tuple[Batch, N.RunningStats, N.RunningStats]:
    """Steps 1 and 2 of `update`: -> (batch, new obs_norm_actor, new obs_norm_critic).

    The normalizers merge the rollout's observations first; the batch holds the
    observations normalized with the updated statistics, the critic's values of
    them and of the states each step reached (`final_obs_critic_TEC`, the
    bootstrap), both under the same statistics, GAE advantages and returns
    (`gae`), and the actor's distributions under the same statistics, the
    `old_policy_TE` each optimizer step's KL is measured from (lr_schedule=adaptive).
    """
    config = state.config
    num_steps, num_envs = traj.reward_TE.shape
    obs_norm_actor = N.update(state.obs_norm_actor, traj.obs_actor_TEO.reshape(num_steps * num_envs, -1))
    obs_norm_critic = N.update(state.obs_norm_critic, traj.obs_critic_TEC.reshape(num_steps * num_envs, -1))
    # Statistics that a non-finite observation would poison keep their previous values.
    obs_norm_actor = keep_if(N.is_finite(obs_norm_actor), obs_norm_actor, state.obs_norm_actor)
    obs_norm_critic = keep_if(N.is_finite(obs_norm_critic), obs_norm_critic, state.obs_norm_critic)
    obs_critic_TEC = N.normalize(obs_norm_critic, traj.obs_critic_TEC)
    critic_TE = jax.vmap(jax.vmap(state.model.critic))
    value_TE = critic_TE(obs_critic_TEC)
    next_value_TE = critic_TE(N.normalize(obs_norm_critic, traj.final_obs_critic_TEC))
    advantage_TE, return_TE = gae(
        traj.reward_TE,
        value_TE,
        traj.done_TE,
        traj.failure_TE,
        next_value_TE,
        next_value_TE[-1],
        config.gamma,
        config.lam,
    )
    obs_actor_TEO = N.normalize(obs_norm_actor, traj.obs_actor_TEO)
    old_policy_TE = None
    if config.lr_schedule == "adaptive":
        dist_TE = jax.vmap(state.model.actor.unroll, in_axes=(1, 1, 0), out_axes=1)(
            obs_actor_TEO, traj.reset_TE, traj.carry_E
        )
        old_policy_TE = old_policy(dist_TE, traj.action_TEA)
    batch = Batch(
        obs_actor_TEO=obs_actor_TEO,
        obs_critic_TEC=obs_critic_TEC,
        action_TEA=traj.action_TEA,
        log_prob_TE=traj.log_prob_TE,
        value_TE=value_TE,
        advantage_TE=advantage_TE,
        return_TE=return_TE,
        reset_TE=traj.reset_TE,
        carry_E=traj.carry_E,
        old_policy_TE=old_policy_TE,
    )
    return batch, obs_norm_actor, obs_norm_critic


def update(
    state: PPOState,
    traj: Trajectory,
    *,
    key: Array,
    shard_minibatch: Callable[[Batch], Batch] | None = None,
) -> tuple[PPOState, dict[str, Array]]:
    """One PPO iteration on a rollout: normalizers, GAE, epochs x minibatches of optimizer steps.

    Returns the new state and `METRICS` (scalars): losses, entropy, approx_kl
    (k3, against the rollout's log-probabilities), kl (lr_schedule=adaptive only:
    `policy_kl`, against the actor at the start of the update, measured before
    each step), clip_fraction and action_std averaged over all minibatch steps; grad_norm
    (before clipping) averaged likewise; skipped_steps, how many optimizer steps
    were skipped because their loss or gradient was not finite (the parameters
    and the optimizer state stay as they were); explained_variance of the rollout's
    values; lr of the last optimizer step. With `lr_schedule=adaptive` each
    minibatch first moves the learning rate by its kl (`schedule.adapt_lr`),
    then steps with it. jit-able as a whole. `shard_minibatch`
    (multi-device runs) lays each minibatch out over the devices so that the
    gradient computation is data-parallel.
    """
    config = state.config
    num_envs = traj.reward_TE.shape[1]
    problem = minibatch_problem(num_envs, config.minibatches)
    if problem is not None:
        raise KsimError(f"train: {problem}")
    envs_per_minibatch = num_envs // config.minibatches

    # AMP (a task's `amp` block): the style reward joins the task reward; the discriminator trains.
    amp_state, amp_metrics = state.amp, {}
    if amp_state is not None:
        key, k_amp = jax.random.split(key)
        amp_state, style_TE, amp_metrics = AMP.update(
            amp_state, traj.amp_feat_TEF, traj.amp_next_TEF, traj.done_TE, key=k_amp, steps=config.epochs
        )
        traj = eqx.tree_at(lambda t: t.reward_TE, traj, traj.reward_TE + style_TE)

    # 1-2. normalizers merge the rollout, then values and GAE under the new statistics.
    batch, obs_norm_actor, obs_norm_critic = make_batch(state, traj)

    # 3. epochs x minibatches of gradient steps, minibatches split along the env axis.
    optimizer = make_optimizer(config)
    grad_fn = eqx.filter_value_and_grad(ppo_loss, has_aux=True)

    def minibatch_step(carry: tuple[ActorCritic, optax.OptState], env_B: Array):
        model, opt_state = carry
        minibatch = batch.take_envs(env_B)
        if shard_minibatch is not None:
            minibatch = shard_minibatch(minibatch)
        (loss, metrics), grads = grad_fn(model, minibatch, config)
        if config.lr_schedule == "adaptive":
            lr = schedule.adapt_lr(schedule.adaptive_lr(opt_state), metrics["kl"], config.desired_kl)
            opt_state = schedule.with_adaptive_lr(opt_state, lr)
        grad_norm = optax.tree.norm(grads)
        grads = clip_gradients(grads, config.max_grad_norm)
        updates, new_opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
        # A non-finite loss or gradient would make every parameter NaN: skip the step, count it.
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        model, opt_state = keep_if(finite, (eqx.apply_updates(model, updates), new_opt_state), (model, opt_state))
        skipped = 1.0 - finite.astype(jnp.float32)
        return (model, opt_state), metrics | {"grad_norm": grad_norm, "skipped_steps": skipped}

    def epoch(carry: tuple[ActorCritic, optax.OptState], epoch_key: Array):
        env_MB = jax.random.permutation(epoch_key, num_envs).reshape(config.minibatches, envs_per_minibatch)
        return jax.lax.scan(minibatch_step, carry, env_MB)

    (model, opt_state), metrics_YM = jax.lax.scan(
        epoch, (state.model, state.opt_state), jax.random.split(key, config.epochs)
    )

    num_opt_steps = config.epochs * config.minibatches
    opt_step = state.opt_step + num_opt_steps
    metrics = {name: jnp.mean(m) for name, m in metrics_YM.items()}
    metrics["skipped_steps"] = jnp.sum(metrics_YM["skipped_steps"])
    metrics["explained_variance"] = explained_variance(batch.value_TE, batch.return_TE)
    metrics["lr"] = schedule.step_lr(config, opt_state, opt_step - 1)
    new_state = PPOState(
        model=model,
        opt_state=opt_state,
        obs_norm_actor=obs_norm_actor,
        obs_norm_critic=obs_norm_critic,
        step=state.step + 1,
        opt_step=opt_step,
        config=config,
        amp=amp_state,
    )
    return new_state, {name: metrics[name] for name in METRICS if name in metrics} | amp_metrics


# --------------------------------------------------------------------------- acting


def initial_carry(model: ActorCritic) -> Array:
    """The actor's carry at the start of an episode (MLP: shape (0,))."""
    return model.actor.initial_carry()


def reset_carry(model: ActorCritic, carry: Array, reset: Array) -> Array:
    """carry, reset () bool -> the initial carry where reset (call before the step that follows a done)."""
    return model.actor.reset(carry, reset)


def act(
    model: ActorCritic,
    obs_norm: N.RunningStats,
    obs_actor_O: Array,
    carry: Array,
    *,
    key: Array,
    deterministic: bool = False,
) -> tuple[Array, Array, Array]:
    """One env: raw observation (O,) -> (action_A (raw, unclipped), log_prob (), new carry).

    `deterministic` (static) takes the distribution's mode instead of a sample.
    """
    dist, carry = model.actor(N.normalize(obs_norm, obs_actor_O), carry)
    action_A = D.mode(dist) if deterministic else D.sample(dist, key=key)
    return action_A, D.log_prob(dist, action_A), carry


def value(model: ActorCritic, obs_norm: N.RunningStats, obs_critic_C: Array) -> Array:
    """One env: raw critic observation (C,) -> value ()."""
    return model.critic(N.normalize(obs_norm, obs_critic_C))


class Policy(eqx.Module):
    """A self-contained policy for evaluation and export: normalization inside, raw actions out.

    policy.initial_carry() -> carry;  policy(obs_O, carry) -> (action_A, carry)
    (the mode; pass `key=` to sample instead); policy.reset_carry(carry, done) -> the
    initial carry where done (call after the step that ended an episode). One env per call.
    """

    actor: Actor
    obs_norm: N.RunningStats

    def initial_carry(self) -> Array:
        return self.actor.initial_carry()

    def reset_carry(self, carry: Array, done: Array) -> Array:
        return self.actor.reset(carry, done)

    def __call__(self, obs_O: Array, carry: Array, *, key: Array | None = None) -> tuple[Array, Array]:
        dist, carry = self.actor(N.normalize(self.obs_norm, obs_O), carry)
        action_A = D.mode(dist) if key is None else D.sample(dist, key=key)
        return action_A, carry


def make_policy(state: PPOState) -> Policy:
    """The current actor and actor normalizer of `state` as a `Policy`."""
    return Policy(actor=state.model.actor, obs_norm=state.obs_norm_actor)
