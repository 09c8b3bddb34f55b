"""The training loop: run directories, determinism, interrupt + resume, max_seconds,
the watchdog, command-line overrides, and cartpole actually learning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from fixtures.cartpole import cartpole_task

from ksimdsl.errors import KsimError
from ksimdsl.runtime import engine as engines
from ksimdsl.runtime.rl import ppo
from ksimdsl.runtime.engine.base import RolloutStats
from ksimdsl.runtime.tools.evaluate import evaluate, run_episodes
from ksimdsl.runtime.training.overrides import apply_overrides, valid_keys
from ksimdsl.runtime.training.runs import MetricsLog, read_metrics
from ksimdsl.runtime.training.train import TIMING_KEYS, RunPlan, train
from ksimdsl.runtime.training.watchdog import STALL_EXIT_CODE, Watchdog

#: Tiny training settings. test_cli.py trains with the same ones (and the task's own policy), so the
#: session's persistent JAX cache compiles the training step once for both files.
TINY = ["num_envs=8", "rollout=8", "minibatches=2", "epochs=1", "checkpoint_every=2"]


def tiny_task(*extra: str):
    spec, kernels, path = cartpole_task()
    return apply_overrides(spec, TINY + list(extra)), kernels, path


def without_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


# --------------------------------------------------------------------------- MJX training loop


def test_runs_are_reproducible_and_an_interrupted_run_resumes_identically(tmp_path, monkeypatch):
    spec, kernels, path = tiny_task("steps=4")
    sources = {"cartpole_kernel.py": "# generated\n"}
    straight = train(
        spec, kernels, model_path=path,
        plan=RunPlan(tmp_path / "a", task_text="task cartpole\n", generated_sources=sources, progress=False),
    )
    assert straight.stop_reason == "steps" and straight.iterations == 4 and straight.env_steps == 4 * 8 * 8
    a = read_metrics(tmp_path / "a")
    assert [r["iteration"] for r in a] == [1, 2, 3, 4]

    # the run directory holds everything the contract promises
    required = {"iteration", "env_steps", "wall_s", "episode_return", "episode_length", "sps", "reward",
                "reward/balance", "reward_raw/balance", "termination/fell", "truncation_rate", "loss",
                "policy_loss", "value_loss", "approx_kl", "entropy", "lr", "level", "nan_resets"}
    assert required <= set(a[-1])
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["task"] == "cartpole" and config["spec"]["train"]["num_envs"] == 8
    assert config["versions"]["jax"] == jax.__version__
    assert (tmp_path / "a" / "task.ksim").read_text() == "task cartpole\n"
    assert (tmp_path / "a" / "generated" / "cartpole_kernel.py").read_text() == "# generated\n"
    trained = mujoco.MjModel.from_xml_path(str(tmp_path / "a" / "model.xml"))  # the model as trained
    assert (trained.nq, trained.nu, trained.opt.timestep) == (2, 1, spec.physics.dt)
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "a" / "tb").iterdir())
    assert straight.checkpoint.name == "ckpt_00000004.safetensors"

    # same seed, second run: Ctrl-C after iteration 2 stops cleanly with a checkpoint
    original_write = MetricsLog.write

    def write_then_interrupt(self, record):
        original_write(self, record)
        if record["iteration"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(MetricsLog, "write", write_then_interrupt)
    first = train(spec, kernels, model_path=path, plan=RunPlan(tmp_path / "b", progress=False))
    monkeypatch.setattr(MetricsLog, "write", original_write)
    assert first.stop_reason == "interrupted" and first.iterations == 2
    assert first.checkpoint.name == "ckpt_00000002.safetensors"

    resumed = train(spec, kernels, model_path=path, plan=RunPlan(tmp_path / "b", resume=True, progress=False))
    assert resumed.iterations == 4 and resumed.env_steps == straight.env_steps
    b = read_metrics(tmp_path / "b")
    assert without_timing(b) == without_timing(a)


def test_resume_rejects_a_missing_run(tmp_path):
    spec, kernels, path = tiny_task("steps=1")
    with pytest.raises(KsimError, match="does not exist"):
        train(spec, kernels, model_path=path, plan=RunPlan(tmp_path / "nope", resume=True, progress=False))


# --------------------------------------------------------------------------- host collectors, max_seconds


class FakeCollector:
    """A host (non-jittable) collector returning random rollouts: exercises the loop without physics."""

    jittable = False

    def __init__(self, spec, *, sleep_s: float = 0.0):
        self.spec = spec
        self.num_envs = spec.train.num_envs
        self.rollout = spec.train.rollout
        self.sleep_s = sleep_s

    def init(self, *, key):
        return {"iteration": np.zeros((), np.int32)}

    def init_for(self, ppo_state, *, key):
        return self.init(key=key)

    def to_checkpoint(self, state):
        return state

    def from_checkpoint(self, template, tree):
        return {"iteration": np.asarray(tree["iteration"])}

    def collect(self, ppo_state, state, *, key):
        time.sleep(self.sleep_s)
        spec, T, E = self.spec, self.rollout, self.num_envs
        rng = np.random.default_rng(int(state["iteration"]))
        f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
        traj = ppo.Trajectory(
            obs_actor_TEO=f(T, E, spec.obs_actor_size), obs_critic_TEC=f(T, E, spec.obs_critic_size),
            final_obs_critic_TEC=f(T, E, spec.obs_critic_size), action_TEA=f(T, E, spec.action_size),
            log_prob_TE=f(T, E), reward_TE=f(T, E), done_TE=jnp.zeros((T, E), bool),
            failure_TE=jnp.zeros((T, E), bool), carry_E=jnp.zeros((E, 0)), reset_TE=jnp.zeros((T, E), bool),
        )
        R, K = len(spec.rewards), len(spec.terminations)
        stats = RolloutStats(*(np.float32(T * E) if i == 0 else np.float32(1.0) for i in range(4)),
                             np.float32(0.5), np.ones(R, np.float32), np.ones(R, np.float32), np.zeros(K, np.float32),
                             *(np.float32(0.0) for _ in range(5)), np.zeros(R, np.float32), np.float32(0.0),
                             np.zeros(len(spec.metrics), np.float32))
        return {"iteration": state["iteration"] + 1}, traj, stats


def test_max_seconds_stops_cleanly_with_a_checkpoint(tmp_path):
    spec, kernels, path = tiny_task("steps=100000", "max_seconds=1.5")
    result = train(
        spec, kernels, model_path=path, plan=RunPlan(tmp_path / "run", progress=False),
        collector=FakeCollector(spec, sleep_s=0.05),
    )
    assert result.stop_reason == "max_seconds"
    assert 0 < result.iterations < 100000
    assert result.checkpoint.name == f"ckpt_{result.iterations:08d}.safetensors"
    assert len(read_metrics(tmp_path / "run")) == result.iterations


def test_watchdog_reports_a_stalled_section_once():
    stalls = []
    dog = Watchdog(0.2, on_stall=lambda what, elapsed: stalls.append((what, elapsed)))
    with dog.watch("fast call"):
        time.sleep(0.01)
    with dog.watch("stuck call"):
        time.sleep(0.6)
    dog.close()
    assert [w for w, _ in stalls] == ["stuck call"]
    assert stalls[0][1] >= 0.2


def test_watchdog_default_ends_the_process_with_a_clear_message():
    script = textwrap.dedent(
        """
        import time
        from ksimdsl.runtime.training.watchdog import Watchdog
        dog = Watchdog(0.3)
        with dog.watch("training iteration 7 (jax/MJX step)"):
            time.sleep(30)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == STALL_EXIT_CODE
    assert "training iteration 7 (jax/MJX step) did not finish" in proc.stderr
    assert "stalled" in proc.stderr


# --------------------------------------------------------------------------- overrides


def test_overrides_are_applied_with_types():
    spec, _, _ = cartpole_task()
    original_envs = spec.train.num_envs
    out = apply_overrides(
        spec,
        ["num_envs=8", "lr=1e-3", "train.seed=3", "hidden=[32, 32]", "normalize_obs=false", "dist=mixture(3)",
         "engine=mujoco", "dt=0.002", "solver=cg", "max_seconds=60", "devices=1"],
    )
    assert out.train.num_envs == 8 and out.train.lr == 1e-3 and out.train.seed == 3
    assert out.policy.hidden == (32, 32) and out.policy.dist == "mixture" and out.policy.mixtures == 3
    assert out.train.normalize_obs is False and out.engine == "mujoco"
    assert out.physics.dt == 0.002 and out.physics.substeps == 5 and out.physics.solver == "cg"
    assert out.train.max_seconds == 60.0 and out.train.devices == 1
    assert spec.train.num_envs == original_envs != 8  # the original is untouched


def test_unknown_override_lists_valid_keys_with_a_suggestion():
    spec, _, _ = cartpole_task()
    with pytest.raises(KsimError) as err:
        apply_overrides(spec, ["num_envs=8", "num_env=4"])
    text = str(err.value)
    first = text.splitlines()[0]
    assert first == "command line:1:12: error: unknown setting 'num_env' (did you mean 'num_envs'?)"
    assert "num_envs=8 num_env=4" in text and "^~~~~~~" in text
    assert "valid keys: " in text and all(k in text for k in ("lr", "hidden", "dt", "engine", "max_seconds"))
    assert "num_envs" in valid_keys()


def test_bad_override_values_are_reported_together():
    spec, _, _ = cartpole_task()
    with pytest.raises(KsimError) as err:
        apply_overrides(spec, ["num_envs=many", "lr=-1", "hidden=[a]", "solver=newtn", "steps"])
    text = str(err.value)
    assert "bad value for 'num_envs': expected an integer" in text
    assert "bad value for 'lr': must be positive" in text
    assert "bad value for 'hidden': expected a list of integers like [64,64]" in text
    assert "bad value for 'solver': expected one of newton, cg, pgs (did you mean 'newton'?)" in text
    assert "expected key=value, got 'steps'" in text
    assert text.rstrip().endswith("5 errors")


# --------------------------------------------------------------------------- learning


def zero_action_policy(spec) -> ppo.Policy:
    """A `ppo.Policy` whose actor weights are all zero: its deterministic action is 0 everywhere.

    It has the structure and shapes of a trained policy, so scoring it reuses the
    evaluation program `evaluate` compiled (the session's persistent JAX cache).
    """
    policy = ppo.make_policy(ppo.init_ppo_from_spec(spec, key=jax.random.PRNGKey(0)))
    actor = jax.tree.map(lambda x: jnp.zeros_like(x) if eqx.is_inexact_array(x) else x, policy.actor)
    return eqx.tree_at(lambda p: p.actor, policy, actor)


@pytest.mark.slow
def test_cartpole_learns_to_balance(tmp_path):
    """The shipped tasks/cartpole.ksim, 100 iterations x 64 envs x 64 steps (410k env steps, ~30-90 s on 2 cores).

    Measured (CPU, 16 deterministic eval episodes): seeds 0, 1, 2 score 997, 990,
    990 with every episode reaching the 1000-step limit (the task's own 128 envs
    need 100-150 iterations for the same); the zero action scores ~115-125 (the
    pole is lost after ~125 steps) and uniformly random actions ~80. Training
    returns rise from ~80 in the first iterations to ~900-990 in the last ten.
    """
    spec, kernels, path = cartpole_task()
    spec = apply_overrides(spec, ["num_envs=64", "steps=100", "seed=0"])
    result = train(spec, kernels, model_path=path, plan=RunPlan(tmp_path / "run", progress=False))
    assert result.iterations == 100
    returns = [r["episode_return"] for r in read_metrics(tmp_path / "run") if r["episode_return"] is not None]
    assert np.mean(returns[-10:]) > 3.0 * np.mean(returns[:5])

    report = evaluate(spec, kernels, model_path=path, run_dir=tmp_path / "run", episodes=16)
    assert report["episodes"] == 16 and report["iteration"] == 100
    zero_policy = zero_action_policy(spec)
    action, _ = zero_policy(jnp.ones(spec.obs_actor_size), zero_policy.initial_carry())
    assert np.all(np.asarray(action) == 0.0)
    zero = run_episodes(engines.get("mjx"), spec, kernels, path, zero_policy, episodes=16)
    assert zero.return_E.mean() < 250, zero.return_E  # doing nothing does not solve the task
    # learned: far above the zero action (~120) and random actions (~80)
    assert report["mean_return"] > 600, (report["mean_return"], zero.return_E.mean())
    assert report["mean_return"] > 4.0 * float(zero.return_E.mean()), (report["mean_return"], zero.return_E.mean())
    assert report["mean_length"] > 4.0 * float(zero.length_E.mean())
