"""The episode `ksimdsl view` shows, without a window: ONE env of the C MuJoCo engine and a policy.

    session = ViewSession(task, policy)            # policy None: the zero action
    out = session.step(held={"vel": [0.5, 0, 0]})  # one control step (commands held at those values)
    session.push(); session.reset(); session.readout(controls)
    prepared = session.prepare(new_task)           # --watch: a recompiled task, checked and warmed up
    session.swap(prepared)

Stepping is the shared one-env policy step (`engine.loop.OneEnvPolicyStep`, as
`ksimdsl render` records) on the engine's own `Env`: the task's kernels compute
observations, rewards and terminations, and a done episode auto-resets exactly
as in training. What the viewer adds, each in one small function:

* `hold_command`: a held command's values written into env 0's memory, at the
  slots where the generated kernels keep it (`SPEC["commands"]`: offset and size
  in `mem`), before every step, so observations and rewards see them and the
  task's own resampling cannot change them. (A stand-in for a shared command
  override of the engines; swap it in here when there is one.)
* `fire_event`: the task's push event fired now, by running out its timer
  (`event.NAME.timer` in `SPEC["mem_layout"]`): the kernel draws the push as the
  task says, at the current level;
* `shove`: a fixed push, added to the base velocity (the free joint's linear
  qvel, in a random horizontal direction) or, in a model without a free joint,
  to every joint velocity (uniform in +-size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from ksimdsl.abi import TaskSpec
from ksimdsl.errors import KsimError
from ksimdsl.runtime import engine as engines
from ksimdsl.runtime.engine.base import StepOutput
from ksimdsl.runtime.engine.loop import OneEnvPolicyStep
from ksimdsl.runtime.tools.view_state import EpisodeTracker, Readout, TaskControls, ViewerControls

__all__ = ["ViewTask", "ZeroPolicy", "ViewSession", "Prepared", "hold_command", "fire_event", "shove", "DEFAULT_PUSH"]

#: The engine the viewer steps (C MuJoCo: one env on the CPU, in real time).
ENGINE = "mujoco"
#: Size of a fixed push (m/s; rad/s on hinge joints) when the task has no push event.
DEFAULT_PUSH = 0.5


@dataclass(frozen=True)
class ViewTask:
    """A compiled task as the viewer needs it: spec, numba kernels, model, what can be steered."""

    spec: TaskSpec
    kernels: ModuleType
    model_path: str
    controls: TaskControls = TaskControls()
    label: str = ""  # the task file, as shown


class ZeroPolicy(eqx.Module):
    """The zero action, with `ppo.Policy`'s interface: a task looked at before training."""

    action_size: int = eqx.field(static=True)

    def initial_carry(self) -> jax.Array:
        return jnp.zeros((0,), jnp.float32)

    def __call__(self, obs_O: jax.Array, carry: jax.Array, *, key: jax.Array | None = None):
        return jnp.zeros((self.action_size,), jnp.float32), carry

    def reset_carry(self, carry: jax.Array, done: jax.Array) -> jax.Array:
        return carry


def _slot(spec: TaskSpec, name: str) -> tuple[int, int] | None:
    """(offset, size) of memory slot `name` of `SPEC["mem_layout"]`."""
    for entry in spec.mem_layout:
        if entry["name"] == name:
            return int(entry["offset"]), int(entry["size"])
    return None


def hold_command(env: Any, spec: TaskSpec, name: str, values: Sequence[float]) -> None:
    """Write command `name` = `values` into env 0's memory, where the kernels read `cmd.NAME`."""
    for command in spec.commands:
        if command["name"] == name:
            offset, size = int(command["offset"]), int(command["size"])
            env.mem_EM[0, offset : offset + size] = np.asarray(values, np.float64)[:size]
            return
    raise KsimError(f"the task has no command '{name}'")


def command_values(env: Any, spec: TaskSpec) -> dict[str, tuple[float, ...]]:
    """Every command's current values in env 0."""
    return {
        c["name"]: tuple(float(v) for v in env.mem_EM[0, int(c["offset"]) : int(c["offset"]) + int(c["size"])])
        for c in spec.commands
    }


def fire_event(env: Any, spec: TaskSpec, event: str) -> bool:
    """Make event `event` fire at env 0's next step (its timer run out); False when the task has no such timer."""
    slot = _slot(spec, f"event.{event}.timer")
    if slot is None:
        return False
    env.mem_EM[0, slot[0]] = 0.0
    return True


def shove(model: mujoco.MjModel, data: mujoco.MjData, size: float, rng: np.random.Generator) -> None:
    """Add a random push of `size` to the base velocity (free joint) or to every joint velocity, in place."""
    free = np.flatnonzero(np.asarray(model.jnt_type) == mujoco.mjtJoint.mjJNT_FREE)
    if free.size:
        dof = int(model.jnt_dofadr[free[0]])
        angle = rng.uniform(0.0, 2.0 * math.pi)
        data.qvel[dof : dof + 2] += size * np.array([math.cos(angle), math.sin(angle)])
    else:
        data.qvel[:] += size * rng.uniform(-1.0, 1.0, model.nv)
    mujoco.mj_forward(model, data)


@dataclass(frozen=True)
class Prepared:
    """A task ready to replace the running one (`ViewSession.prepare`): its env, already stepped once."""

    task: ViewTask
    env: Any
    policy: Any


class ViewSession:
    """ONE env of the C MuJoCo engine stepped with a policy, for the viewer (see the module docstring)."""

    def __init__(
        self,
        task: ViewTask,
        policy: Any = None,
        *,
        deterministic: bool = True,
        push: float | None = None,
        seed: int = 0,
        policy_label: str = "",
    ):
        self.engine = engines.get(ENGINE)
        self.policy_sizes = None if policy is None else (task.spec.obs_actor_size, task.spec.action_size)
        self.policy_label = policy_label or ("zero action" if policy is None else "policy")
        self.deterministic = deterministic
        self.push_size = push
        self.rng = np.random.default_rng(seed)
        self._key = jax.random.PRNGKey(seed)
        self._seed = int(seed)
        self._resets = 0
        self.env: Any = None
        actor = policy if policy is not None else ZeroPolicy(task.spec.action_size)
        self.swap(Prepared(task, self._make_env(task), actor))
        self.step()  # compiles the policy call and the step kernel before anything is shown
        self.reset()
        self.tracker = EpisodeTracker(self.spec.rewards, self.spec.terminations)

    # ------------------------------------------------------------------ the episode

    @property
    def spec(self) -> TaskSpec:
        return self.task.spec

    @property
    def mj(self) -> Any:
        """The engine's state of the one env (a `MujocoEnv`: numpy buffers and MjData)."""
        return self.state

    @property
    def data(self) -> mujoco.MjData:
        return self.state.datas[0]

    @property
    def model(self) -> mujoco.MjModel:
        return self.state.model_of(0)

    def reset(self) -> None:
        """A new episode (new random draws)."""
        self._resets += 1
        self.state = self.env.reset(self._seed + self._resets)
        self.carry = self.policy.initial_carry()

    def step(self, held: Mapping[str, Sequence[float]] | None = None) -> StepOutput:
        """One control step; `held` commands are written into the env's memory first."""
        for name, values in (held or {}).items():
            if any(c["name"] == name for c in self.spec.commands):
                hold_command(self.state, self.spec, name, values)
        key = None
        if not self.deterministic:
            self._key, key = jax.random.split(self._key)
        self.state, out, self.carry = self._step(self.policy, self.state, self.carry, key)
        self.tracker.update(
            np.asarray(out.reward_terms_ER[0], float) * np.asarray(out.reward_weights_ER[0], float),
            np.asarray(out.terminations_EK[0]),
            done=bool(out.done_E[0]),
            truncated=bool(out.truncated_E[0]),
            episode_return=float(out.episode_return_E[0]),
        )
        return out

    def restart(self) -> None:
        """R: a new episode by hand."""
        self.reset()
        self.tracker.restart()

    def command_values(self) -> dict[str, tuple[float, ...]]:
        return command_values(self.state, self.spec)

    def push_mode(self) -> tuple[str, str | None]:
        """("event", NAME) when P fires the task's push event, else ("shove", None)."""
        event = self.task.controls.push_event
        if self.push_size is None and event is not None and _slot(self.spec, f"event.{event}.timer") is not None:
            return "event", event
        return "shove", None

    def push_description(self) -> str:
        mode, event = self.push_mode()
        if mode == "event":
            return f"fires event '{event}' (level {float(self.state.level_E[0]):.2f})"
        size = DEFAULT_PUSH if self.push_size is None else self.push_size
        free = np.any(np.asarray(self.model.jnt_type) == mujoco.mjtJoint.mjJNT_FREE)
        return f"shove {size:g} m/s" if free else f"shove joint velocities +-{size:g}"

    def push(self) -> str:
        """P: fire the task's push event at the next step, or shove the robot now; says which."""
        mode, event = self.push_mode()
        if mode == "event":
            fire_event(self.state, self.spec, event)
        else:
            shove(self.model, self.data, DEFAULT_PUSH if self.push_size is None else self.push_size, self.rng)
            self.state.refresh_all()
        return self.push_description()

    def set_applied_forces(self, xfrc_applied_B6: np.ndarray) -> None:
        """External forces on the bodies (the viewer's mouse perturbation), kept until changed or reset."""
        self.data.xfrc_applied[:] = xfrc_applied_B6

    def readout(self, controls: ViewerControls) -> Readout:
        t = self.tracker
        return Readout(
            task=self.task.label or self.spec.task,
            policy=self.policy_label + ("" if self.deterministic or self.policy_sizes is None else ", sampled"),
            time_s=float(self.state.step_E[0]) * float(self.spec.physics.ctrl_dt),
            episode=t.episode,
            episode_return=float(self.state.episode_return_E[0]),
            last_return=t.last_return,
            last_end=t.last_end,
            rewards=self.spec.rewards,
            reward_R=t.reward_R,
            episode_reward_R=t.sum_R,
            terminations=self.spec.terminations,
            terminations_K=t.flags_K,
            commands={**self.command_values(), **{k: tuple(v) for k, v in controls.held.items()}},
            level=float(self.state.level_E[0]),
            push=self.push_description(),
        )

    def copy_to(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Put the env's physics state into the viewer's own `data` (of `model`, same structure), forward."""
        src = self.data
        data.qpos[:] = src.qpos
        data.qvel[:] = src.qvel
        data.act[:] = src.act
        data.ctrl[:] = src.ctrl
        data.time = src.time
        mujoco.mj_forward(model, data)

    # ------------------------------------------------------------------ --watch

    def prepare(self, task: ViewTask) -> Prepared:
        """A recompiled task, checked against the policy and the model shown, its env built and stepped once.

        Raises KsimError (one line) when it does not fit; the running task is untouched.
        Safe to call from another thread than the one stepping (it builds its own env).
        """
        spec = task.spec
        if self.policy_sizes is not None and self.policy_sizes != (spec.obs_actor_size, spec.action_size):
            obs, act = self.policy_sizes
            raise KsimError(
                f"the edited task has {spec.obs_actor_size} actor observations and {spec.action_size} actions, "
                f"the policy {obs} and {act}; still showing the previous version"
            )
        old = self.model
        if Path(task.model_path).resolve() != Path(self.task.model_path).resolve():
            raise KsimError(f"the edited task uses another model ({task.model_path}); restart ksimdsl view to see it")
        env = self._make_env(task)
        try:
            state = env.reset(self._seed)  # compiles and runs every kernel once, off the viewer's thread
            new = state.mj_model
            if (new.nq, new.nv, new.nu, new.nbody) != (old.nq, old.nv, old.nu, old.nbody):
                raise KsimError("the edited task's model has other sizes; restart ksimdsl view to see it")
            env.step(state, np.zeros((1, spec.action_size), np.float32))
            policy = self.policy if self.policy_sizes is not None else ZeroPolicy(spec.action_size)
        except BaseException:
            env.close()
            raise
        return Prepared(task, env, policy)

    def swap(self, prepared: Prepared) -> None:
        """Show `prepared` from now on: a new episode of it (held commands stay held)."""
        old = self.env
        self.task, self.env, self.policy = prepared.task, prepared.env, prepared.policy
        self._step = OneEnvPolicyStep(self.engine.loop, self.env)
        self.tracker = EpisodeTracker(self.spec.rewards, self.spec.terminations)
        self.reset()
        if old is not None:
            old.close()

    def close(self) -> None:
        self.env.close()

    def _make_env(self, task: ViewTask) -> Any:
        return self.engine.make_env(task.spec, task.kernels, task.model_path, num_envs=1, threads=1)
