"""A batch of MJX environments driven by a compiled task's JAX kernels.

`MjxEnv(spec, kernels, model_path, num_envs=E)` holds everything static (the
MJX model, default pose, actuator and curriculum constants); the dynamic state
of all E environments is one `EnvSnapshot` pytree (`ksimdsl.runtime.engine.base`). `reset` and `step` are pure
functions of that state, meant to run inside `jax.jit` (the collector scans
`step` over a rollout):

    state = env.reset(key)                       # every env at the start of an episode (key or int seed)
    state, out = env.step(state, action_EA)      # one control step, auto-reset of done envs

One control step:

1. (per env, vmapped) the actuator model turns the action into `ctrl` and runs
   `substeps` physics steps (`lax.scan`), with per-episode latency blending
   previous/new targets;
2. (the batch) the contact queries, when the task reads any (`contacts.py`:
   MJX Warp keeps one contact pool for the whole batch);
3. (per env, vmapped) the physics arrays listed in `SPEC["phys_inputs"]` (and
   the height scans, `heightscan.py`, when the task reads any) go
   to `kernels.step`, which returns observations, reward terms and weights,
   termination flags, the `metric` values and the new `mem` (and qpos/qvel
   when `writes_phys`); `pins` (evaluation) then hold chosen mem slots fixed;
4. `base.step_outcome` (shared with the C-MuJoCo engine) decides reward,
   failure / success / truncation and moves the curriculum; a non-finite qpos,
   qvel or qacc is a failure with zero reward, counted in `StepOutput.nan_E`;
5. if any env is done, fresh episodes are drawn for the done envs only
   (`lax.cond` on `any(done)` outside the vmap, so the reset costs nothing on
   the many steps where no episode ends).

Each env steps its own randomized model: the fields in `SPEC["randomize_fields"]`
are kept per env in `EnvSnapshot.fields_E` and swapped into the shared MJX model
with `Model.tree_replace` inside the vmap.

The MJX implementation (`physics impl=jax|warp`) is chosen by `physics.MjxPhysics`;
everything here is written once for both.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ksimdsl.abi import TaskSpec
from ksimdsl.errors import KsimError
from ksimdsl.runtime.engine.actuators import ActuatorModel, JaxDraws
from ksimdsl.runtime.engine.base import EnvSnapshot, EpisodeCounters, KernelStep, OutcomeRules, StepOutput, step_outcome
from ksimdsl.runtime.engine.heightscan import ScanTables, reads_height_scan
from ksimdsl.runtime.engine.mjx.contacts import ContactQueries
from ksimdsl.runtime.engine.mjx.heightscan import MjxHeightScan
from ksimdsl.runtime.engine.mjx.mjximport import import_mjx
from ksimdsl.runtime.engine.mjx.physics import MjxPhysics
from ksimdsl.runtime.engine.model import default_pose, load_model
from ksimdsl.runtime.engine.pins import MemPins

__all__ = ["MjxEnv", "ContactQueries"]

mjx = import_mjx()


class _Episode(NamedTuple):
    """The pieces a reset produces (a leading env axis on each, but Warp's shared contact pool in `data`)."""

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
        self.physics = MjxPhysics.create(spec, self.mj_model, num_envs=self.num_envs, device=device)
        self.impl = self.physics.impl
        self.model, self.template = self.physics.model, self.physics.template
        self.actuators = ActuatorModel.from_spec(spec, self.mj_model)
        self.rules = OutcomeRules.from_spec(spec)
        self.curriculum = self.rules.curriculum
        qpos0, qvel0 = default_pose(self.mj_model)
        self.qpos0_Q, self.qvel0_V = jnp.asarray(qpos0), jnp.asarray(qvel0)
        self.contacts = ContactQueries.create(spec.contact_queries, self.mj_model, self.template, self.impl)
        for name in spec.randomize_fields:
            if not hasattr(self.model, name):
                raise KsimError(f"task randomizes unknown model field '{name}'; recompile the task")
        self.reads_contacts = any(name in ("contact", "contact_force") for name in spec.phys_inputs)
        self.scans = MjxHeightScan(ScanTables.from_spec(spec, self.mj_model)) if reads_height_scan(spec) else None
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

    def _contacts_E(self, data_E: mjx.Data) -> tuple[jax.Array, jax.Array]:
        """(touching_EP, force_EP) of the batch when the kernels read contacts, else empty (E, 0) arrays."""
        if self.reads_contacts:
            return self.contacts.batch(data_E)
        z = jnp.zeros((self.num_envs, 0), jnp.float32)
        return z, z

    def phys(self, data: mjx.Data, contact: tuple[jax.Array, jax.Array]) -> dict[str, jax.Array]:
        """The kernel's `phys` dict for one env (keys of SPEC["phys_inputs"]); `contact`: its (touching_P, force_P)."""
        out: dict[str, jax.Array] = {}
        for name in self.spec.phys_inputs:
            if name == "xmat":
                out[name] = data.xmat.reshape(data.xmat.shape[0], 9)
            elif name == "cinert":
                out[name] = data._impl.cinert  # both implementations keep it, (nbody, 10)
            elif name == "time":
                out[name] = jnp.asarray(data.time, jnp.float32)
            elif name in ("contact", "contact_force"):
                out[name] = contact[0] if name == "contact" else contact[1]
            elif name == "height_scan":
                out[name] = self.scans.one(data.xpos, data.xmat)  # type: ignore[union-attr]
            else:
                out[name] = getattr(data, name)
        return out

    def _start_one(self, key: jax.Array, level: jax.Array, env: jax.Array):
        """A fresh episode's physics and draws for one env (before its first observation)."""
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
        with self.physics.collisions():
            data = mjx.forward(self._model_with(fields), data)
        mem = self.pins.apply(jnp.asarray(out["mem"], jnp.float32).reshape(self.spec.mem_size), jnp, envs=env)
        return data, fields, mem, ctrl, latency, zero_offset, k_obs

    def _observe_one(self, data, contact, level, mem, key):
        """(actor, critic, mem): `observe` returns mem too when the task has observation histories."""
        rn, ru = self._rand(key, "observe")
        obs = self.kernels.observe(self.phys(data, contact), jnp.zeros(self.spec.action_size, jnp.float32), level, mem, rn, ru)
        return obs["actor"], obs["critic"], jnp.asarray(obs.get("mem", mem), jnp.float32)

    def _physics_one(self, data, fields, prev_ctrl, latency, zero_offset, action):
        """One control step of one env's physics: the action's ctrl over `substeps` physics steps."""
        model = self._model_with(fields)
        new_ctrl = self.actuators.target(action, zero_offset)

        def substep(d, i):
            d = d.replace(ctrl=self.actuators.substep_ctrl(prev_ctrl, new_ctrl, latency, i))
            with self.physics.collisions():
                return mjx.step(model, d), None

        data, _ = jax.lax.scan(substep, data, jnp.arange(self.spec.substeps))
        return data, new_ctrl

    def _kernel_one(self, data, contact, mem, level, action, key):
        rn, ru = self._rand(key, "step")
        return self.kernels.step(self.phys(data, contact), jnp.clip(action, -1.0, 1.0), level, mem, rn, ru)

    # ------------------------------------------------------------------ batched API

    def _reset_batch(self, key: jax.Array, level_E: jax.Array) -> _Episode:
        keys = jax.random.split(key, self.num_envs)
        env_E = jnp.arange(self.num_envs)
        data, fields, mem, ctrl, latency, zero_offset, k_obs = jax.vmap(self._start_one)(keys, level_E, env_E)
        obs_actor, obs_critic, mem = jax.vmap(self._observe_one)(data, self._contacts_E(data), level_E, mem, k_obs)
        return _Episode(data, fields, mem, obs_actor, obs_critic, ctrl, latency, zero_offset)

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
        data, new_ctrl_EU = jax.vmap(self._physics_one)(
            state.data, state.fields_E, state.prev_ctrl_EU, state.latency_E, state.zero_offset_EU, action_EA
        )
        contact = self._contacts_E(data)
        out = jax.vmap(self._kernel_one)(data, contact, state.mem_EM, state.level_E, action_EA, keys_E)
        if self.spec.writes_phys:
            data = data.replace(qpos=out["qpos"].astype(data.qpos.dtype), qvel=out["qvel"].astype(data.qvel.dtype))
        nan_E = ~(
            jnp.all(jnp.isfinite(data.qpos), axis=1)
            & jnp.all(jnp.isfinite(data.qvel), axis=1)
            & jnp.all(jnp.isfinite(data.qacc), axis=1)
        )
        kernel = KernelStep(
            *(out[k] for k in ("reward_terms", "reward_weights", "terminations", "actor", "critic")),
            metrics_EJ=out["metrics"] if self.spec.metrics else jnp.zeros((self.num_envs, 0), jnp.float32),
            mem_EM=out["mem"],
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

    def qvel_EV(self, state: EnvSnapshot) -> jax.Array:
        """Joint velocities (E, nv) of `state`."""
        return state.data.qvel

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
            data=self.physics.where_E(done_E, ep.data, state.data),
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
