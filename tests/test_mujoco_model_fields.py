"""Randomized model fields on the C-MuJoCo engine: one MjModel per worker thread, each env's values in
`MujocoEnv.fields_EX`, written into the worker's model before the env steps (cstep.EnvPointers).

The cartpole fixture randomizes the pole's mass (body_mass[2], x uniform(0.8, 1.2)) and dof_damping
every episode.
"""

from __future__ import annotations

import copy

import mujoco
import numpy as np

from ksimdsl.abi import TaskSpec
from ksimdsl.runtime.engine.mujoco.env import MujocoEnv
from tests.fixtures import cartpole_kernel_numba as KN
from tests.fixtures.cartpole import MODEL_PATH

SPEC = TaskSpec.from_dict(KN.SPEC)


def make_env(*, num_envs: int = 6, threads: int = 2, seed: int = 0) -> MujocoEnv:
    env = MujocoEnv(SPEC, KN, MODEL_PATH, num_envs=num_envs, threads=threads, seed=seed)
    env.reset_all()
    return env


def test_each_env_steps_with_its_own_values_like_per_env_model_copies():
    """Six envs on two threads (three envs share a model each) step exactly like plain mujoco on one
    MjModel copy per env holding that env's values, and not like the task's default model."""
    env = make_env()
    fields_E = env.snapshot().fields_E
    assert set(fields_E) == {"body_mass", "dof_damping"}
    masses_E = fields_E["body_mass"][:, 2]
    base = env.mj_model.body_mass[2]
    assert np.unique(masses_E).size == env.num_envs and np.all(np.abs(masses_E - base) > 1e-6)
    assert len(env.models) == env.threads == 2
    own = [copy.copy(env.mj_model) for _ in range(env.num_envs)]  # the reference: a model per env
    for e, m in enumerate(own):
        for name, values_E in fields_E.items():
            getattr(m, name)[:] = values_E[e]
            np.testing.assert_array_equal(getattr(env.model_of(e), name), getattr(m, name))
    twins = [copy.copy(d) for d in env.datas]
    defaults = [copy.copy(d) for d in env.datas]  # stepped on the default (unrandomized) model
    rng = np.random.default_rng(0)
    for _ in range(8):
        action = rng.uniform(-1, 1, (env.num_envs, 1)).astype(np.float32)  # what the engine takes
        out = env.step(action)
        assert not out.done_E.any()
        for e in range(env.num_envs):
            twins[e].ctrl[:] = defaults[e].ctrl[:] = action[e]
            mujoco.mj_step(own[e], twins[e])
            mujoco.mj_step(env.mj_model, defaults[e])
            np.testing.assert_array_equal(env.datas[e].qpos, twins[e].qpos)
            np.testing.assert_array_equal(env.datas[e].qvel, twins[e].qvel)
    for e in range(env.num_envs):  # the mass reached the physics
        assert np.abs(env.datas[e].qvel - defaults[e].qvel).max() > 1e-9
    env.close()


def test_new_episodes_draw_new_values_and_threads_do_not_change_them():
    runs = []
    for threads in (1, 2, 3):
        env = make_env(num_envs=7, threads=threads, seed=5)
        first = env.fields_EX.copy()
        rng = np.random.default_rng(1)
        done = np.zeros(7, bool)
        qpos = []
        for _ in range(80):
            done |= env.step(rng.uniform(-1, 1, (7, 1))).done_E
            qpos.append(env.phys["qpos"].copy())
        assert done.any()
        changed = np.any(env.fields_EX != first, axis=1)
        np.testing.assert_array_equal(changed, done)  # exactly the envs that started a new episode
        runs.append((env.fields_EX.copy(), np.array(qpos)))
        env.close()
    for fields, qpos in runs[1:]:
        np.testing.assert_array_equal(fields, runs[0][0])
        np.testing.assert_array_equal(qpos, runs[0][1])


def test_snapshot_restore_keeps_each_envs_values():
    a = make_env(seed=1)
    rng = np.random.default_rng(2)
    for _ in range(3):
        a.step(rng.uniform(-1, 1, (6, 1)))
    snap = a.snapshot()
    kept = a.fields_EX.copy()
    actions = rng.uniform(-1, 1, (20, 6, 1))
    after_a = [a.step(x).reward_E.copy() for x in actions]

    b = make_env(seed=7, threads=1)  # other draws: other masses until restored
    assert np.all(b.fields_EX[:, 2] != kept[:, 2])
    b.restore(snap)
    np.testing.assert_array_equal(b.fields_EX, kept)
    assert [b.model_of(e).body_mass[2] for e in range(6)] == kept[:, 2].tolist()
    after_b = [b.step(x).reward_E.copy() for x in actions]
    np.testing.assert_array_equal(np.array(after_b), np.array(after_a))
    np.testing.assert_array_equal(snap.fields_E["body_mass"][:, 2], kept[:, 2])  # the snapshot is a copy
    a.close()
    b.close()
