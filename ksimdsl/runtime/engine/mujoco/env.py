"""A batch of C-MuJoCo environments driven by a compiled task's numba kernels.

The CPU counterpart of `ksimdsl.runtime.engine.mjx.env.MjxEnv`, with the same
semantics (docs/architecture.md) and the same per-step outputs (`base.StepOutput`,
decided by the shared `base.step_outcome`), but host-side and stateful: every environment
is a `mujoco.MjData`, and the batch state lives in preallocated numpy arrays. When the
task randomizes model fields, each env's values of them are one row of `fields_EX`,
written into the `mujoco.MjModel` of the worker thread that steps the env right before
it does (`cstep.EnvPointers`): one model per thread (`models`), not one per env.

    env = MujocoEnv(spec, kernels, model_path, num_envs=E, seed=0)
    env.reset_all()                       # every env at the start of an episode
    out = env.step(action_EA)             # one control step, auto-reset of done envs
    env.obs_actor_EO                      # what the policy acts on next

    out, action_EA, log_prob_E = env.step_actor(actor, eps_EN)   # the same, with the policy
                                                                  # evaluated in the worker threads
    snap = env.snapshot(); env.restore(snap)                      # base.EnvSnapshot, for checkpoints

`hostenv.HostEnv` wraps it into the engine's `base.Env` for the shared episode loops.

One control step:

1. `threads` worker threads take contiguous chunks of envs on demand; for each
   chunk they (with `step_actor`) sample the actions with the numba actor
   (`numba_policy.HostActor`), turn the clipped actions into the `ctrl` of
   every physics substep (`cstep.actuate`: per-episode latency and zero
   offset), run `cstep.advance` (substeps through `mj_step`, divergence check,
   gather of the physics arrays in `SPEC["phys_inputs"]` and of the contact
   queries), the height scans (`rays.py`), then the task's numba `step` kernel on the same chunk. All of it
   releases the GIL (the kernel when compiled with `nogil=True`), so the
   threads run in parallel;
2. reward, failure / success / truncation, NaN resets (C MuJoCo's
   bad-qpos/qvel/qacc warnings or a non-finite value: a failure with zero
   reward) and the curriculum are computed on the whole batch by
   `base.step_outcome` with numpy;
3. the envs that are done start a new episode: the `reset` kernel (its
   randomized model fields go to `fields_EX`), `mj_resetData` + `mj_forward`,
   and the `observe` kernel, on the done envs only.

Kernel arguments: the numba backend's functions take positional arrays in the
order `SPEC["numba_args"][phase]`, bound from the declared table in
`kernel_args.py`. Array dtypes: physics, mem, actions, levels, random draws,
reward terms/weights, metrics and model fields are float64; observations float32;
terminations bool.

Random numbers come from one numpy `Generator` per env batch (seeded by
`seed`): same distributions as MJX, not the same values.
"""

from __future__ import annotations

import copy
import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import mujoco
import numpy as np

from ksimdsl.abi import PHASES, TaskSpec
from ksimdsl.errors import KsimError
from ksimdsl.runtime.engine.actuators import ActuatorModel, NumpyDraws
from ksimdsl.runtime.engine.base import (
    EPISODE_STATE,
    EnvSnapshot,
    EpisodeCounters,
    KernelStep,
    OutcomeRules,
    StepOutput,
    step_outcome,
)
from ksimdsl.runtime.engine.heightscan import reads_height_scan
from ksimdsl.runtime.engine.model import default_pose, load_model
from ksimdsl.settings import machine_memory_bytes
from ksimdsl.runtime.engine.mujoco import cstep
from ksimdsl.runtime.engine.mujoco.kernel_args import KernelArgs
from ksimdsl.runtime.engine.mujoco.numba_policy import HostActor
from ksimdsl.runtime.engine.mujoco.rays import HostHeightScan
from ksimdsl.runtime.engine.mujoco.rngstate import rng_from_array, rng_to_array
from ksimdsl.runtime.engine.pins import MemPins

__all__ = ["MujocoEnv", "default_threads"]

#: Physics fields that are read straight out of each MjData (all float64 arrays in the bindings).
_DATA_FIELDS = (
    "qpos",
    "qvel",
    "qacc",
    "actuator_force",
    "xpos",
    "xquat",
    "xmat",
    "cvel",
    "cinert",
    "subtree_com",
    "site_xpos",
    "sensordata",
)
#: MuJoCo state saved in snapshots: everything mj_step integrates and reads back.
_STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION
#: Envs are stepped in chunks handed to the threads on demand: up to this many chunks per thread,
CHUNKS_PER_THREAD = 4
#: of at least this many envs (a chunk costs a few microseconds of dispatch).
MIN_CHUNK = 8


def default_threads() -> int:
    """Worker threads for physics: the CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class _Actuation:
    """The actuator model's constants for `cstep.actuate`, and its per-episode draws (numpy).

    Same semantics as `ksimdsl.runtime.engine.actuators.ActuatorModel` (which this is built from).
    """

    def __init__(self, model: ActuatorModel):
        self.model = model
        nu = model.nu
        self.constants = cstep.ActuatorConstants(
            kind=cstep.ACTUATOR_KINDS[model.kind],
            default_pos_U=np.asarray(model.default_pos_U, np.float64),
            kp_U=np.asarray(model.kp_U, np.float64),
            kd_U=np.asarray(model.kd_U, np.float64),
            action_scale=float(model.action_scale),
            velocity_scale=float(model.velocity_scale),
            scale=float(model.scale),
            clip_lo_U=np.full(nu, -np.inf) if model.ctrl_lo_U is None else np.asarray(model.ctrl_lo_U, np.float64),
            clip_hi_U=np.full(nu, np.inf) if model.ctrl_hi_U is None else np.asarray(model.ctrl_hi_U, np.float64),
            dt=float(model.dt),
        )
        self._actuate = cstep.Specialized(cstep.actuate)

    def draw_episode(self, rng: np.random.Generator, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(latency_K seconds, zero_offset_KU) for k new episodes (`ActuatorModel.draw_episode`)."""
        return self.model.draw_episode(NumpyDraws(rng), (k,))

    def rest_target(self, zero_offset_KU: np.ndarray) -> np.ndarray:
        """ctrl (K, nu) of a zero action: the "previous target" right after a reset."""
        return self.model.rest_target(zero_offset_KU, np)

    def __call__(self, lo: int, hi: int, raw_EA, action_EA, zero_offset_EU, latency_E, prev_ctrl_EU, ctrl_ESU):
        """`cstep.actuate` for envs [lo, hi)."""
        self._actuate(lo, hi, self.constants, raw_EA, action_EA, zero_offset_EU, latency_E, prev_ctrl_EU, ctrl_ESU)


class MujocoEnv:
    """E environments of one task on C MuJoCo, stepped by native threads. Owns its state."""

    def __init__(
        self,
        spec: TaskSpec,
        kernels: ModuleType,
        model_path: str | Path,
        *,
        num_envs: int,
        threads: int | None = None,
        seed: int = 0,
        pins: MemPins | None = None,
    ):
        if num_envs < 1:
            raise KsimError(f"num_envs must be at least 1, got {num_envs}")
        for phase in PHASES:
            if phase not in spec.numba_args:
                raise KsimError(
                    f"the C-MuJoCo engine needs numba kernels, but the module has no SPEC['numba_args']['{phase}'] "
                    "(compile with --backend numba)"
                )
            if phase not in spec.rand:
                raise KsimError(f"generated module lacks SPEC['rand']['{phase}']; recompile the task")
        self.spec = spec
        self.kernels = kernels
        self.pins = pins or MemPins()  # mem slots held fixed after every reset and step (evaluation)
        self.pins.check_envs(num_envs)
        self.num_envs = E = int(num_envs)
        self.threads = max(1, min(E, threads or default_threads()))
        self.rng = np.random.default_rng(seed)
        cstep.quiet_mujoco_warnings()  # diverged states are counted as NaN resets instead
        self.warnings_W = np.array(cstep.BAD_STATE_WARNINGS, dtype=np.int64)

        self.mj_model = load_model(spec, model_path)
        m = self.mj_model
        self.actuation = _Actuation(ActuatorModel.from_spec(spec, m))
        self.rules = OutcomeRules.from_spec(spec)
        self.curriculum = self.rules.curriculum
        qpos0, qvel0 = default_pose(m)

        # ---- per-env MuJoCo objects
        for name in spec.randomize_fields:
            value = getattr(m, name, None)
            if not isinstance(value, np.ndarray) or value.dtype != np.float64:
                raise KsimError(f"task randomizes unknown or non-float model field '{name}'; recompile the task")
        W, fields = self.threads, tuple(spec.randomize_fields)
        if fields:
            _check_model_copies_fit(m, W)
        # the model each worker thread steps with (w = 0: the calling thread, also resets); when the task
        # randomizes model fields, a copy per worker into which the env's values are written before each step
        self.models = [copy.copy(m) for _ in range(W)] if fields else [m] * W
        self._view_model: mujoco.MjModel | None = None  # `model_of`'s, made on first use
        self.datas = [mujoco.MjData(m) for _ in range(E)]
        self.default_fields = {n: np.array(getattr(m, n), dtype=np.float64) for n in fields}
        self.pointers = cstep.EnvPointers.of(self.models, self.datas, fields)
        self.fields_EX = self.pointers.fields_EX  # every env's randomized field values (this episode's)
        ends_F = zip(self.pointers.field_offset_F, self.pointers.field_offset_F + self.pointers.field_size_F)
        self.field_slices = {n: slice(int(a), int(b)) for n, (a, b) in zip(fields, ends_F)}
        for name, default in self.default_fields.items():
            self.fields_EX[:, self.field_slices[name]] = default.ravel()

        # ---- physics batch arrays the kernels read (float64, natural per-env shapes)
        unknown = [p for p in spec.phys_inputs if p not in _DATA_FIELDS + ("time", "contact", "contact_force", "height_scan")]
        if unknown:
            raise KsimError(f"the C-MuJoCo engine cannot provide physics input(s) {unknown}; recompile the task")
        gathered = tuple(dict.fromkeys(("qpos", "qvel") + tuple(p for p in spec.phys_inputs if p in _DATA_FIELDS)))
        d0 = self.datas[0]
        self.phys: dict[str, np.ndarray] = {}
        for name in gathered:
            shape = getattr(d0, name).shape
            if name == "xmat":
                shape = (shape[0], 9)
            self.phys[name] = np.zeros((E,) + tuple(shape), dtype=np.float64)
        self.gather = cstep.Gather(
            src_adr_FE=cstep.field_addresses(self.datas, gathered),
            size_F=np.array([getattr(d0, n).size for n in gathered], dtype=np.int64),
            dst_adr_F=np.array([self.phys[n].ctypes.data for n in gathered], dtype=np.uint64),
            time_E=np.zeros(E),
        )
        self.phys["time"] = self.gather.time_E
        P = len(spec.contact_queries)
        in_a_PG = np.zeros((P, m.ngeom), dtype=np.uint8)
        in_b_PG = np.zeros((P, m.ngeom), dtype=np.uint8)
        for p, q in enumerate(spec.contact_queries):
            in_a_PG[p, list(map(int, q["geoms_a"]))] = 1
            in_b_PG[p, list(map(int, q["geoms_b"]))] = 1
        self.contacts = cstep.ContactTables(
            in_a_PG, in_b_PG, np.zeros((E, P)), np.zeros((E, P)), want_force="contact_force" in spec.phys_inputs
        )
        self.phys["contact"] = self.contacts.contact_EP
        self.phys["contact_force"] = self.contacts.force_EP
        self.scans = HostHeightScan(spec, m, self.datas) if reads_height_scan(spec) else None  # rays.py
        self.phys["height_scan"] = self.scans.height_EH if self.scans else np.zeros((E, 0))

        # ---- task state
        A, M, U = spec.action_size, spec.mem_size, m.nu
        R, K = len(spec.rewards), len(spec.terminations)
        OA, OC = spec.obs_actor_size, spec.obs_critic_size
        self.qpos0_Q = np.asarray(qpos0, dtype=np.float64)
        self.qvel0_V = np.asarray(qvel0, dtype=np.float64)
        self.mem_EM = np.zeros((E, M))
        self.level_E = np.full(E, self.curriculum.initial_level, dtype=np.float64)
        self.steps_at_level_E = np.zeros(E, dtype=np.int32)
        self.step_E = np.zeros(E, dtype=np.int32)
        self.episode_return_E = np.zeros(E, dtype=np.float64)
        self.prev_ctrl_EU = np.zeros((E, U))
        self.latency_E = np.zeros(E)
        self.zero_offset_EU = np.zeros((E, U))
        self.obs_actor_EO = np.zeros((E, OA), dtype=np.float32)
        self.obs_critic_EC = np.zeros((E, OC), dtype=np.float32)

        # ---- step buffers
        self.raw_action_EA = np.zeros((E, A), dtype=np.float32)  # the policy's actions
        self.action_EA = np.zeros((E, A))  # clipped to [-1, 1]: what kernels and actuators see
        self.eps_EN = np.zeros((E, A), dtype=np.float32)  # the actor's random draws in `step_actor`
        self.log_prob_E = np.zeros(E, dtype=np.float32)
        self._actor: HostActor | None = None
        self.ctrl_ESU = np.zeros((E, spec.substeps, U))
        self.bad_E = np.zeros(E, dtype=np.bool_)
        n_s, u_s = spec.rand["step"]
        self.rand_n_EN = np.zeros((E, n_s))  # the step kernel's normal draws
        self.rand_u_ED = np.zeros((E, u_s))  # its uniform draws
        self.final_actor_EO = np.zeros((E, OA), dtype=np.float32)
        self.final_critic_EC = np.zeros((E, OC), dtype=np.float32)
        self.terms_ER = np.zeros((E, R))
        self.weights_ER = np.zeros((E, R))
        self.term_EK = np.zeros((E, K), dtype=np.bool_)
        self.metrics_EJ = np.zeros((E, len(spec.metrics)))
        self.mem_out_EM = np.zeros((E, M))
        self.qpos_out_EQ = np.zeros_like(self.phys["qpos"])
        self.qvel_out_EV = np.zeros_like(self.phys["qvel"])

        self._reset_args = KernelArgs(spec, "reset")
        self._observe_args = KernelArgs(spec, "observe")
        step_args = KernelArgs(spec, "step")
        full = step_args.build(
            self.phys
            | {
                "action": self.action_EA,
                "level": self.level_E,
                "mem": self.mem_EM,
                "rand_n": self.rand_n_EN,
                "rand_u": self.rand_u_ED,
                "actor": self.final_actor_EO,
                "critic": self.final_critic_EC,
                "reward_terms": self.terms_ER,
                "reward_weights": self.weights_ER,
                "terminations": self.term_EK,
                "metrics": self.metrics_EJ,
                "mem_out": self.mem_out_EM,
                "qpos_out": self.qpos_out_EQ,
                "qvel_out": self.qvel_out_EV,
            }
        )
        n_chunks = 1 if self.threads == 1 else min(self.threads * CHUNKS_PER_THREAD, max(self.threads, E // MIN_CHUNK))
        bounds = np.linspace(0, E, n_chunks + 1).astype(int)
        self._chunks = [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
        self._step_args_by_chunk = [[a[lo:hi] for a in full] for lo, hi in self._chunks]
        self._pool = (
            ThreadPoolExecutor(self.threads - 1, thread_name_prefix="ksimdsl-mujoco") if self.threads > 1 else None
        )
        self._all_E = np.arange(E, dtype=np.int64)
        self._advance_range = cstep.Specialized(cstep.advance, scalars=3)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Stop the worker threads (the env cannot step afterwards)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)

    # ------------------------------------------------------------------ batched API

    def reset_all(self) -> None:
        """Every env at the start of an episode, at the curriculum's initial level."""
        self.level_E[:] = self.curriculum.initial_level
        self.steps_at_level_E[:] = 0
        self._reset_envs(self._all_E)

    def step(self, action_EA: np.ndarray) -> StepOutput:
        """One control step of every env with actions (E, A); done envs start a new episode.

        `self.obs_actor_EO` / `self.obs_critic_EC` then hold the observations the
        policy acts on next.
        """
        self.raw_action_EA[:] = action_EA
        self._actor = None
        return self._step()

    def step_actor(self, actor: HostActor, eps_EN: np.ndarray) -> tuple[StepOutput, np.ndarray, np.ndarray]:
        """`step` with the actions sampled by `actor` from the current observations, inside the worker
        threads (each for its own chunk of envs), from the random draws eps_EN (`actor.draw_noise`).

        Returns (step output, action_EA (raw, unclipped, float32), log_prob_E).
        """
        if self.eps_EN.shape != eps_EN.shape:
            self.eps_EN = np.zeros(eps_EN.shape, dtype=np.float32)
        self.eps_EN[:] = eps_EN
        self._actor = actor
        try:
            out = self._step()
        finally:
            self._actor = None
        return out, self.raw_action_EA.copy(), self.log_prob_E.copy()

    def _step(self) -> StepOutput:
        self._draw(self.rand_n_EN, self.rand_u_ED)
        self._run_parallel(self._control_step)

        nan_E = self.bad_E.copy()
        if self.spec.writes_phys:
            cstep.write_state(self._all_E, self.pointers, self.qpos_out_EQ, self.qvel_out_EV)
        kernel = KernelStep(
            self.terms_ER,
            self.weights_ER,
            self.term_EK,
            self.final_actor_EO,
            self.final_critic_EC,
            self.metrics_EJ,
            self.mem_out_EM,
        )
        counters = EpisodeCounters(self.step_E, self.episode_return_E, self.level_E, self.steps_at_level_E)
        out, counters = step_outcome(np, self.rules, kernel, nan_E, counters)
        for name, value in counters._asdict().items():
            getattr(self, name)[:] = value
        self.obs_actor_EO[:] = out.final_obs_actor_EO
        self.obs_critic_EC[:] = out.final_obs_critic_EC
        self.mem_EM[:] = self.mem_out_EM
        self.pins.apply(self.mem_EM, np)
        done_idx = np.flatnonzero(out.done_E)
        if done_idx.size:
            self._reset_envs(done_idx)
        return out

    def physics_only(self, ctrl_ESU: np.ndarray) -> None:
        """Step every env's physics with the given substep controls, without kernels or resets.

        For measuring the engine's raw physics throughput against `step`.
        """
        self.ctrl_ESU[:] = ctrl_ESU
        self._run_parallel(self._advance)

    def model_of(self, e: int) -> mujoco.MjModel:
        """The MjModel env e steps: the task's model, or, when the task randomizes model fields, a model
        holding env e's values of them (one model kept for this, so valid until the next `model_of`
        call or env e's next episode; `copy.copy` it to keep it)."""
        if not self.spec.randomize_fields:
            return self.mj_model
        if self._view_model is None:
            self._view_model = copy.copy(self.mj_model)
        for name, part in self.field_slices.items():
            getattr(self._view_model, name).flat[:] = self.fields_EX[e, part]
        return self._view_model

    def refresh_all(self) -> None:
        """Re-read every env's physics arrays, contact queries and height scans (after MjData was written)."""
        cstep.refresh(self._all_E, 0, self.pointers, self.gather, self.contacts)
        if self.scans:
            self.scans.run_envs(self._all_E)

    # ------------------------------------------------------------------ snapshots

    def reseed(self, seed: Any) -> None:
        """A fresh random stream: from an int seed, or from the bits of a JAX key."""
        if not isinstance(seed, (int, np.integer)):
            import jax
            import jax.numpy as jnp

            seed = np.asarray(jax.random.bits(seed, (4,), jnp.uint32)).astype(np.uint64)
        self.rng = np.random.default_rng(seed)

    def snapshot(self) -> EnvSnapshot:
        """A copy of the environments' complete state (numpy; float64 physics, the generator state)."""
        size = mujoco.mj_stateSize(self.mj_model, _STATE_SPEC)
        data_EX = np.empty((self.num_envs, size))
        for e, d in enumerate(self.datas):
            mujoco.mj_getState(self.mj_model, d, data_EX[e], _STATE_SPEC)  # the state: no model values read
        fields_E = {
            name: self.fields_EX[:, part].reshape((self.num_envs,) + self.default_fields[name].shape).copy()
            for name, part in self.field_slices.items()
        }
        episode = {name: getattr(self, name).copy() for name in EPISODE_STATE if name != "fields_E"}
        return EnvSnapshot(data=data_EX, fields_E=fields_E, key=rng_to_array(self.rng), **episode)

    def restore(self, snap: EnvSnapshot) -> None:
        """Put the environments back into the state `snapshot` returned."""
        if snap.data.shape[0] != self.num_envs:
            raise KsimError(
                f"checkpoint holds {snap.data.shape[0]} environments, this run has {self.num_envs}; "
                "resume with the same num_envs"
            )
        for name, values in snap.fields_E.items():
            self.fields_EX[:, self.field_slices[name]] = np.asarray(values, np.float64).reshape(self.num_envs, -1)
        for e, d in enumerate(self.datas):
            cstep.load_model(e, 0, self.pointers)  # worker 0's model with env e's field values
            mujoco.mj_setState(self.models[0], d, np.array(snap.data[e], np.float64), _STATE_SPEC)
            mujoco.mj_forward(self.models[0], d)
        self.refresh_all()
        for name in EPISODE_STATE:
            if name != "fields_E":
                getattr(self, name)[...] = getattr(snap, name)
        self.rng = rng_from_array(np.asarray(snap.key))

    # ------------------------------------------------------------------ internals

    def _run_parallel(self, work: Callable[[int, int], None]) -> None:
        """Run work(chunk, w) for every chunk of envs, on all threads (w: the worker, whose model it
        steps with; 0 is this thread); chunks are handed out on demand so that a thread slowed down
        by the OS or by costlier envs (more contacts) does not hold the others up at the end of the
        control step."""
        if self._pool is None:
            for i in range(len(self._chunks)):
                work(i, 0)
            return
        counter = itertools.count()  # next() is atomic under the GIL
        n = len(self._chunks)

        def worker(w: int) -> None:
            while (i := next(counter)) < n:
                work(i, w)

        futures = [self._pool.submit(worker, w) for w in range(1, self.threads)]
        worker(0)
        for f in futures:
            f.result()

    def _advance(self, chunk: int, w: int) -> None:
        lo, hi = self._chunks[chunk]
        self._advance_range(
            lo, hi, w, self.pointers, self.ctrl_ESU, self.gather, self.contacts, self.warnings_W, self.bad_E
        )

    def _control_step(self, chunk: int, w: int) -> None:
        """Everything of one control step that is independent per env, for one chunk of envs (worker w)."""
        lo, hi = self._chunks[chunk]
        if self._actor is not None:
            self._actor.act(lo, hi, self.obs_actor_EO, self.eps_EN, self.raw_action_EA, self.log_prob_E)
        self.actuation(lo, hi, self.raw_action_EA, self.action_EA, self.zero_offset_EU, self.latency_E,
                       self.prev_ctrl_EU, self.ctrl_ESU)  # fmt: skip
        self._advance(chunk, w)
        if self.scans:
            self.scans.run(lo, hi)
        self.kernels.step(*self._step_args_by_chunk[chunk])

    def _draw(self, rand_n: np.ndarray, rand_u: np.ndarray) -> None:
        if rand_n.size:
            self.rng.standard_normal(out=rand_n)
        if rand_u.size:
            self.rng.random(out=rand_u)

    def _reset_envs(self, idx_K: np.ndarray) -> None:
        """Start a new episode in envs idx_K (sorted int64 indices)."""
        spec = self.spec
        k = int(idx_K.size)
        level_K = self.level_E[idx_K]
        n_r, u_r = spec.rand["reset"]
        rand_n, rand_u = np.zeros((k, n_r)), np.zeros((k, u_r))
        self._draw(rand_n, rand_u)
        qpos_KQ = np.zeros((k, self.qpos0_Q.size))
        qvel_KV = np.zeros((k, self.qvel0_V.size))
        mem_KM = np.zeros((k, spec.mem_size))
        reset_in: dict[str, np.ndarray] = {
            "qpos": np.repeat(self.qpos0_Q[None], k, axis=0),
            "qvel": np.repeat(self.qvel0_V[None], k, axis=0),
            "level": level_K,
            "rand_n": rand_n,
            "rand_u": rand_u,
            "qpos_out": qpos_KQ,
            "qvel_out": qvel_KV,
            "mem": mem_KM,
            "mem_out": mem_KM,
        }
        fields_out = {}
        for name, default in self.default_fields.items():
            reset_in[name] = np.repeat(default[None], k, axis=0)
            fields_out[name] = reset_in[f"{name}_out"] = np.zeros((k,) + default.shape)
        self.kernels.reset(*self._reset_args.build(reset_in))
        self.pins.apply(mem_KM, np, envs=idx_K)

        for name, values in fields_out.items():  # this episode's model fields of the envs
            self.fields_EX[idx_K, self.field_slices[name]] = values.reshape(k, -1)
        latency_K, zero_KU = self.actuation.draw_episode(self.rng, k)
        rest_KU = self.actuation.rest_target(zero_KU)
        self.latency_E[idx_K] = latency_K
        self.zero_offset_EU[idx_K] = zero_KU
        self.prev_ctrl_EU[idx_K] = rest_KU
        cstep.reset_and_forward(idx_K, 0, self.pointers, qpos_KQ, qvel_KV, np.ascontiguousarray(rest_KU, dtype=np.float64))
        cstep.refresh(idx_K, 0, self.pointers, self.gather, self.contacts)
        if self.scans:
            self.scans.run_envs(idx_K)

        n_o, u_o = spec.rand["observe"]
        rand_n, rand_u = np.zeros((k, n_o)), np.zeros((k, u_o))
        self._draw(rand_n, rand_u)
        actor_KO = np.zeros((k, spec.obs_actor_size), dtype=np.float32)
        critic_KC = np.zeros((k, spec.obs_critic_size), dtype=np.float32)
        observed_KM = mem_KM.copy()  # `observe` writes it when the task has observation histories
        observe_in = {name: arr[idx_K] for name, arr in self.phys.items()} | {
            "action": np.zeros((k, spec.action_size)),
            "level": level_K,
            "mem": mem_KM,
            "rand_n": rand_n,
            "rand_u": rand_u,
            "actor": actor_KO,
            "critic": critic_KC,
            "mem_out": observed_KM,
        }
        self.kernels.observe(*self._observe_args.build(observe_in))
        mem_KM = observed_KM
        _zero_nonfinite(actor_KO)
        _zero_nonfinite(critic_KC)
        self.obs_actor_EO[idx_K] = actor_KO
        self.obs_critic_EC[idx_K] = critic_KC
        self.mem_EM[idx_K] = mem_KM
        self.step_E[idx_K] = 0
        self.episode_return_E[idx_K] = 0.0


def _zero_nonfinite(x: np.ndarray) -> None:
    """Non-finite entries (from a diverged state) replaced by 0 in place, as `base.finite` does."""
    if not np.isfinite(x).all():
        x[~np.isfinite(x)] = 0.0


#: The share of this machine's memory the per-thread model copies may take.
MODEL_COPIES_MEMORY_SHARE = 0.5


def _check_model_copies_fit(m: mujoco.MjModel, threads: int, available: int | None = None) -> None:
    """Refuse, with the fix, per-thread MjModel copies that would not fit in memory.

    A task that randomizes model fields steps each worker thread on its own copy
    of the model (the G1's 36 STL meshes: 71 MiB); only a machine with very many
    cores and little memory runs out of it.
    """
    available = machine_memory_bytes() if available is None else available
    need = int(m.nbuffer) * threads
    if available is None or need <= MODEL_COPIES_MEMORY_SHARE * available:
        return
    most = max(1, int(MODEL_COPIES_MEMORY_SHARE * available // m.nbuffer))
    raise KsimError(
        f"threads={threads} copies of the model ({m.nbuffer / 2**20:.0f} MiB each: the task randomizes model "
        f"fields, so each worker thread steps its own copy) need {need / 2**30:.1f} GiB, more than half of this "
        f"machine's {available / 2**30:.1f} GiB; use fewer threads (at most {most}), drop the `randomize` block, "
        "or use `engine mjx`"
    )
