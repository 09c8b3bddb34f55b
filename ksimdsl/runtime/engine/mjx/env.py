"""A batch of MJX environments driven by a compiled task's JAX kernels.

`MjxEnv(spec, kernels, model_path, num_envs=E)` holds everything static (the
MJX model, default pose, actuator and curriculum constants); the dynamic state
of all E environments is one `EnvSnapshot` pytree (`ksimdsl.runtime.engine.base`). `reset` and `step` are pure
functions of that state, meant to run inside `jax.jit` (the collector scans
`step` over a rollout):

    state = env.reset(key)                       # every env at the start of an episode (key or int seed)
    state, out = env.step(state, action_EA)      # one control step, auto-reset of done envs

One control step (per env, vmapped):

1. the actuator model turns the action into `ctrl` and runs `substeps` physics
   steps (`lax.scan`), with per-episode latency blending previous/new targets;
2. the physics arrays listed in `SPEC["phys_inputs"]` (and contact queries) go
   to `kernels.step`, which returns observations, reward terms and weights,
   termination flags, the `metric` values and the new `mem` (and qpos/qvel
   when `writes_phys`); `pins` (evaluation) then hold chosen mem slots fixed;
3. `base.step_outcome` (shared with the C-MuJoCo engine) decides reward,
   failure / success / truncation and moves the curriculum; a non-finite qpos,
   qvel or qacc is a failure with zero reward, counted in `StepOutput.nan_E`;
4. if any env is done, fresh episodes are drawn for the done envs only
   (`lax.cond` on `any(done)` outside the vmap, so the reset costs nothing on
   the many steps where no episode ends).

Each env steps its own randomized model: the fields in `SPEC["randomize_fields"]`
are kept per env in `EnvSnapshot.fields_E` and swapped into the shared MJX model
with `Model.tree_replace` inside the vmap.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from ksimdsl.abi import TaskSpec
from ksimdsl.errors import KsimError
from ksimdsl.runtime.engine.actuators import ActuatorModel, JaxDraws
from ksimdsl.runtime.engine.base import EnvSnapshot, EpisodeCounters, KernelStep, OutcomeRules, StepOutput, step_outcome
from ksimdsl.runtime.engine.model import default_pose, load_model
from ksimdsl.runtime.engine.pins import MemPins

__all__ = ["MjxEnv", "ContactQueries"]


class ContactQueries:
    """Static tables turning MJX's fixed-size contact arrays (H slots) into `contact`/`contact_force`
    (P,): one value per contact query (a pair of geom sets)."""

    def __init__(self, queries, mj_model: mujoco.MjModel, template: mjx.Data):
        self.size = len(queries)
        contact = template._impl.contact
        ncon = int(np.asarray(contact.dist).shape[0])
        self.ncon = ncon
        ngeom = mj_model.ngeom
        side_a = np.zeros((self.size, ngeom), dtype=bool)
        side_b = np.zeros((self.size, ngeom), dtype=bool)
        for c, q in enumerate(queries):
            for g in q["geoms_a"]:
                side_a[c, int(g)] = True
            for g in q["geoms_b"]:
                side_b[c, int(g)] = True
        self.side_a_PG = side_a
        self.side_b_PG = side_b
        # rows of efc_force whose sum is each contact's normal force
        adr = np.asarray(contact.efc_address, dtype=np.int64).reshape(-1)
        dim = np.asarray(contact.dim, dtype=np.int64).reshape(-1)
        pyramidal = mj_model.opt.cone == mujoco.mjtCone.mjCONE_PYRAMIDAL
        nrows = np.where(dim <= 1, 1, 2 * (dim - 1)) if pyramidal else np.ones_like(dim)
        width = int(nrows.max()) if ncon else 1
        rows = adr[:, None] + np.arange(width)[None, :]
        valid = (np.arange(width)[None, :] < nrows[:, None]) & (adr[:, None] >= 0)
        self.rows_HZ = np.where(valid, rows, 0).astype(np.int32)
        self.valid_HZ = valid.astype(np.float32)

    def __call__(self, data: mjx.Data) -> tuple[jax.Array, jax.Array]:
        """(contact (P,), contact_force (P,)) of one env."""
        if self.size == 0:
            z = jnp.zeros((0,), jnp.float32)
            return z, z
        if self.ncon == 0:
            z = jnp.zeros((self.size,), jnp.float32)
            return z, z
        contact = data._impl.contact
        g1_H, g2_H = contact.geom[:, 0], contact.geom[:, 1]
        side_a, side_b = jnp.asarray(self.side_a_PG), jnp.asarray(self.side_b_PG)
        match_PH = (side_a[:, g1_H] & side_b[:, g2_H]) | (side_b[:, g1_H] & side_a[:, g2_H])
        active_PH = match_PH & (contact.dist < 0)[None, :]
        force_H = jnp.sum(data._impl.efc_force[self.rows_HZ] * self.valid_HZ, axis=1)
        touching_P = jnp.any(active_PH, axis=1).astype(jnp.float32)
        force_P = jnp.sum(jnp.where(active_PH, force_H[None, :], 0.0), axis=1)
        return touching_P, force_P


class _Episode(NamedTuple):
    """The per-env pieces a reset produces (no leading env axis inside the vmap)."""

    data: mjx.Data
    fields: dict[str, jax.Array]
    mem: jax.Array
    obs_actor: jax.Array
    obs_critic: jax.Array
    prev_ctrl: jax.Array
    latency: jax.Array
    zero_offset: jax.Array


class MjxEnv:
    """E environments of one task on MJX. Static configuration only; state lives in an `EnvSnapshot`."""

    def __init__(
        self,
        spec: TaskSpec,
        kernels: ModuleType,
        model_path: str | Path,
        *,
        num_envs: int,
        threads: int | None = None,  # the `Env` factory's signature; XLA schedules MJX's work itself
        pins: MemPins | None = None,
    ):
        if num_envs < 1:
            raise KsimError(f"num_envs must be at least 1, got {num_envs}")
        self.spec = spec
        self.pins = pins or MemPins()  # mem slots held fixed after every reset and step (evaluation)
        self.pins.check_envs(num_envs)
        self.kernels = kernels
        self.num_envs = int(num_envs)
        self.mj_model = load_model(spec, model_path)
        device = jax.local_devices()[0]  # jax.devices()[0] belongs to process 0 in a multi-process run
        self.model = mjx.put_model(self.mj_model, device=device)
        self.actuators = ActuatorModel.from_spec(spec, self.mj_model)
        self.rules = OutcomeRules.from_spec(spec)
        self.curriculum = self.rules.curriculum
        qpos0, qvel0 = default_pose(self.mj_model)
        self.qpos0_Q, self.qvel0_V = jnp.asarray(qpos0), jnp.asarray(qvel0)
        self.template = mjx.make_data(self.model, device=device)
        self.contacts = ContactQueries(spec.contact_queries, self.mj_model, self.template)
        for name in spec.randomize_fields:
            if not hasattr(self.model, name):
                raise KsimError(f"task randomizes unknown model field '{name}'; recompile the task")
        self.default_fields = {name: jnp.asarray(getattr(self.model, name)) for name in spec.randomize_fields}
        for phase in ("reset", "observe", "step"):
            if phase not in spec.rand:
                raise KsimError(f"generated module lacks SPEC['rand']['{phase}']; recompile the task")

    # ------------------------------------------------------------------ helpers (one env)

    def _model_with(self, fields: dict[str, jax.Array]) -> mjx.Model:
        return self.model.tree_replace(fields) if fields else self.model

    def _rand(self, key: jax.Array, phase: str) -> tuple[jax.Array, jax.Array]:
        n, u = self.spec.rand[phase]
        k_n, k_u = jax.random.split(key)
        return jax.random.normal(k_n, (n,), jnp.float32), jax.random.uniform(k_u, (u,), jnp.float32)

    def phys(self, data: mjx.Data) -> dict[str, jax.Array]:
        """The kernel's `phys` dict for one env (keys of SPEC["phys_inputs"])."""
        out: dict[str, jax.Array] = {}
        contact = None
        for name in self.spec.phys_inputs:
            if name == "xmat":
                out[name] = data.xmat.reshape(data.xmat.shape[0], 9)
            elif name == "cinert":
                out[name] = data._impl.cinert
            elif name == "time":
                out[name] = jnp.asarray(data.time, jnp.float32)
            elif name in ("contact", "contact_force"):
                if contact is None:
                    contact = self.contacts(data)
                out[name] = contact[0] if name == "contact" else contact[1]
            else:
                out[name] = getattr(data, name)
        return out

    def _reset_one(self, key: jax.Array, level: jax.Array, env: jax.Array) -> _Episode:
        k_reset, k_obs, k_act = jax.random.split(key, 3)
        rn, ru = self._rand(k_reset, "reset")
        out = self.kernels.reset(self.qpos0_Q, self.qvel0_V, dict(self.default_fields), level, rn, ru)
        fields = {name: out["fields"][name] for name in self.spec.randomize_fields}
        latency, zero_offset = self.actuators.draw_episode(JaxDraws(k_act))
        ctrl = self.actuators.rest_target(zero_offset)
        data = self.template.replace(
            qpos=out["qpos"].astype(self.template.qpos.dtype),
            qvel=out["qvel"].astype(self.template.qvel.dtype),
            ctrl=ctrl,
            time=jnp.zeros_like(self.template.time),
        )
        data = mjx.forward(self._model_with(fields), data)
        mem = self.pins.apply(jnp.asarray(out["mem"], jnp.float32).reshape(self.spec.mem_size), jnp, envs=env)
        rn, ru = self._rand(k_obs, "observe")
        obs = self.kernels.observe(self.phys(data), jnp.zeros(self.spec.action_size, jnp.float32), level, mem, rn, ru)
        return _Episode(data, fields, mem, obs["actor"], obs["critic"], ctrl, latency, zero_offset)

    def _physics_one(self, data, fields, prev_ctrl, new_ctrl, latency):
        model = self._model_with(fields)

        def substep(d, i):
            d = d.replace(ctrl=self.actuators.substep_ctrl(prev_ctrl, new_ctrl, latency, i))
            return mjx.step(model, d), None

        data, _ = jax.lax.scan(substep, data, jnp.arange(self.spec.substeps))
        return data

    def _step_one(self, data, fields, mem, level, prev_ctrl, latency, zero_offset, action, key):
        new_ctrl = self.actuators.target(action, zero_offset)
        data = self._physics_one(data, fields, prev_ctrl, new_ctrl, latency)
        rn, ru = self._rand(key, "step")
        out = self.kernels.step(self.phys(data), jnp.clip(action, -1.0, 1.0), level, mem, rn, ru)
        if self.spec.writes_phys:
            data = data.replace(qpos=out["qpos"].astype(data.qpos.dtype), qvel=out["qvel"].astype(data.qvel.dtype))
        finite = jnp.all(jnp.isfinite(data.qpos)) & jnp.all(jnp.isfinite(data.qvel)) & jnp.all(jnp.isfinite(data.qacc))
        return data, out, new_ctrl, ~finite

    # ------------------------------------------------------------------ batched API

    def _reset_batch(self, key: jax.Array, level_E: jax.Array) -> _Episode:
        keys = jax.random.split(key, self.num_envs)
        return jax.vmap(self._reset_one)(keys, level_E, jnp.arange(self.num_envs))

    def reset(self, key: jax.Array | int) -> EnvSnapshot:
        """All E envs at the start of an episode, at the curriculum's initial level."""
        if isinstance(key, int):
            key = jax.random.PRNGKey(key)
        key, k_reset = jax.random.split(key)
        level_E = jnp.full((self.num_envs,), self.curriculum.initial_level, jnp.float32)
        ep = self._reset_batch(k_reset, level_E)
        zeros_E = jnp.zeros((self.num_envs,), jnp.float32)
        return EnvSnapshot(
            data=ep.data,
            fields_E=ep.fields,
            mem_EM=ep.mem,
            obs_actor_EO=ep.obs_actor,
            obs_critic_EC=ep.obs_critic,
            level_E=level_E,
            steps_at_level_E=jnp.zeros((self.num_envs,), jnp.int32),
            step_E=jnp.zeros((self.num_envs,), jnp.int32),
            episode_return_E=zeros_E,
            prev_ctrl_EU=ep.prev_ctrl,
            latency_E=ep.latency,
            zero_offset_EU=ep.zero_offset,
            key=key,
        )

    def step(self, state: EnvSnapshot, action_EA: jax.Array) -> tuple[EnvSnapshot, StepOutput]:
        """One control step of every env; done envs start a new episode in the returned state."""
        key, k_step, k_reset = jax.random.split(state.key, 3)
        keys_E = jax.random.split(k_step, self.num_envs)
        data, out, new_ctrl_EU, nan_E = jax.vmap(self._step_one)(
            state.data,
            state.fields_E,
            state.mem_EM,
            state.level_E,
            state.prev_ctrl_EU,
            state.latency_E,
            state.zero_offset_EU,
            action_EA,
            keys_E,
        )
        kernel = KernelStep(
            *(out[k] for k in ("reward_terms", "reward_weights", "terminations", "actor", "critic")),
            metrics_EJ=out["metrics"] if self.spec.metrics else jnp.zeros((self.num_envs, 0), jnp.float32),
        )
        counters = EpisodeCounters(state.step_E, state.episode_return_E, state.level_E, state.steps_at_level_E)
        output, counters = step_outcome(jnp, self.rules, kernel, nan_E, counters)
        done_E = output.done_E
        stepped = state._replace(
            data=data,
            mem_EM=self.pins.apply(out["mem"].astype(jnp.float32), jnp),
            obs_actor_EO=output.final_obs_actor_EO,
            obs_critic_EC=output.final_obs_critic_EC,
            prev_ctrl_EU=new_ctrl_EU,
            key=key,
            **counters._asdict(),
        )
        next_state = jax.lax.cond(
            jnp.any(done_E),
            lambda s: self._reset_where(s, done_E, k_reset),
            lambda s: s,
            stepped,
        )
        return next_state, output

    def qpos_EQ(self, state: EnvSnapshot) -> jax.Array:
        """Joint positions (E, nq) of `state`."""
        return state.data.qpos

    def snapshot(self, state: EnvSnapshot) -> EnvSnapshot:
        return state

    def restore(self, snapshot: EnvSnapshot) -> EnvSnapshot:
        return snapshot

    def close(self) -> None:
        """Nothing to release (the `Env` protocol)."""

    def _reset_where(self, state: EnvSnapshot, done_E: jax.Array, key: jax.Array) -> EnvSnapshot:
        """`state` with a fresh episode in every env where `done_E`."""
        ep = self._reset_batch(key, state.level_E)

        def pick(fresh, old):
            mask = done_E.reshape(done_E.shape + (1,) * (old.ndim - 1))
            return jnp.where(mask, fresh, old)

        zeros_E = jnp.zeros_like(state.episode_return_E)
        return state._replace(
            data=jax.tree.map(pick, ep.data, state.data),
            fields_E=jax.tree.map(pick, ep.fields, state.fields_E),
            mem_EM=pick(ep.mem, state.mem_EM),
            obs_actor_EO=pick(ep.obs_actor, state.obs_actor_EO),
            obs_critic_EC=pick(ep.obs_critic, state.obs_critic_EC),
            step_E=jnp.where(done_E, 0, state.step_E),
            episode_return_E=jnp.where(done_E, zeros_E, state.episode_return_E),
            prev_ctrl_EU=pick(ep.prev_ctrl, state.prev_ctrl_EU),
            latency_E=pick(ep.latency, state.latency_E),
            zero_offset_EU=pick(ep.zero_offset, state.zero_offset_EU),
        )
