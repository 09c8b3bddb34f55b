"""The MJX model and data of one implementation (`physics impl=jax|warp`), and what differs between them.

    physics = MjxPhysics.create(spec, mj_model, num_envs=E, device=device)
    physics.impl             # "jax" | "warp" (impl=auto resolved, ksimdsl.runtime.engine.resolve_impl)
    physics.model            # mjx.Model;  physics.template: one env's mjx.Data
    physics.sizes            # WarpSizes (impl=warp): the contact pool and constraint rows
    physics.where_E(done_E, fresh_E, old_E)     # merge batched Data (fresh where done)
    with physics.collisions(): mjx.step(...)    # trace MJX calls with the task's `sphere_hfield`

MuJoCo Warp allocates its contact and constraint buffers up front. ksimdsl
sizes them from the model: `naconmax` (contacts per env; the pool holds
num_envs x naconmax, shared by all envs) and `njmax` (constraint rows per env)
default to what MJX's JAX implementation allocates for the same model (its
fixed contact slots and constraint rows, an upper bound of what the model's
collision pairs produce); `physics naconmax=... njmax=...` overrides them.
Warp reports an overflow (too small a buffer) on stdout itself.

Features Warp lacks are reported before anything is compiled (`warp_problems`):
a per-env randomized model field Warp keeps shared by all envs, or a model
MuJoCo Warp cannot load.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import mujoco

from ksimdsl.abi import TaskSpec
from ksimdsl.errors import KsimError
from ksimdsl.runtime.engine import resolve_impl
from ksimdsl.runtime.engine.mjx.hfield import collisions
from ksimdsl.runtime.engine.mjx.mjximport import import_mjx, quiet_warp
from ksimdsl.settings.warp import warp_field_problem

__all__ = ["MjxPhysics", "WarpSizes", "warp_sizes"]

mjx = import_mjx()
#: MJX's JAX implementation, asked for by name where put_model takes `impl` (so MJX_GPU_DEFAULT_WARP cannot swap it)
_JAX_IMPL = {"impl": "jax"} if "impl" in inspect.signature(mjx.put_model).parameters else {}


@dataclass(frozen=True)
class WarpSizes:
    """MuJoCo Warp's buffers: `naconmax` contacts and `njmax` constraint rows per env."""

    naconmax: int
    njmax: int

    def pool(self, num_envs: int) -> int:
        """Contacts of the whole batch (MJX's `naconmax`, shared by all envs)."""
        return self.naconmax * num_envs


def warp_sizes(spec: TaskSpec, mj_model: mujoco.MjModel) -> WarpSizes:
    """The task's `naconmax` / `njmax`, or (0: unset) MJX JAX's contact slots / constraint rows of `mj_model`."""
    naconmax, njmax = spec.physics.naconmax, spec.physics.njmax
    if naconmax == 0 or njmax == 0:
        jax_data = mjx.make_data(mj_model, impl="jax", device=_host_device())
        naconmax = naconmax or int(jax_data._impl.contact.dist.shape[0])
        njmax = njmax or int(jax_data._impl.efc_force.shape[0])
    return WarpSizes(max(1, naconmax), max(1, njmax))


@dataclass(frozen=True)
class MjxPhysics:
    """The MJX model and one env's data template for `impl` (see the module docstring)."""

    impl: str
    model: Any  # mjx.Model
    template: Any  # mjx.Data of one env
    sizes: WarpSizes | None
    sphere_hfield: str = "manifold"  # impl=jax: contacts of a sphere on a height field (`collisions`)

    @staticmethod
    def create(spec: TaskSpec, mj_model: mujoco.MjModel, *, num_envs: int, device: Any) -> "MjxPhysics":
        impl = resolve_impl(spec.physics.impl, devices=spec.train.devices)
        if impl == "jax":
            with collisions(spec.physics.sphere_hfield):  # the contact slots make_data sizes
                model = mjx.put_model(mj_model, device=device, **_JAX_IMPL)
                return MjxPhysics("jax", model, mjx.make_data(model, device=device), None, spec.physics.sphere_hfield)
        for field in spec.randomize_fields:
            problem = warp_field_problem(field)
            if problem is not None:
                raise KsimError(f"physics impl=warp: {problem}")
        quiet_warp()
        sizes = warp_sizes(spec, mj_model)
        try:
            model = mjx.put_model(mj_model, device=device, impl="warp")
            template = mjx.make_data(
                mj_model, device=device, impl="warp", naconmax=sizes.pool(num_envs), njmax=sizes.njmax
            )
        except (NotImplementedError, ValueError) as exc:  # MuJoCo Warp names the model feature it lacks
            raise KsimError(f"physics impl=warp: MuJoCo Warp cannot run this model: {_one_line(exc)}; use impl=jax") from None
        return MjxPhysics("warp", _without_solver_warnings(model), template, sizes)

    def collisions(self) -> Any:
        """A context in which MJX traces this physics' steps (`physics sphere_hfield`, module hfield)."""
        return collisions(self.sphere_hfield)

    def where_E(self, done_E: jax.Array, fresh: Any, old: Any) -> Any:
        """Batched Data: `fresh` in the envs where `done_E`, `old` elsewhere.

        Leaves without an env axis (Warp's contact pool, shared by the batch) keep
        `old`'s: the next physics step recomputes every contact anyway.
        """

        def pick(one: jax.Array, f: jax.Array, o: jax.Array) -> jax.Array:
            if o.ndim == jnp.ndim(one):  # shared by all envs
                return o
            return jnp.where(done_E.reshape(done_E.shape + (1,) * (o.ndim - 1)), f, o)

        return jax.tree.map(pick, self.template, fresh, old)


def _host_device() -> Any:
    """The CPU device where JAX has one (a sizing template need not take GPU memory), else the default."""
    try:
        return jax.devices("cpu")[0]
    except RuntimeError:
        return jax.local_devices()[0]


def _without_solver_warnings(model: Any) -> Any:
    """`model` with Warp's "solver iterations limit reached" warnings off (the buffer overflow ones stay).

    Reinforcement learning runs the solver for few iterations on purpose
    (`iterations=1 ls_iterations=4`); Warp would print two lines per step for it.
    """
    from mujoco.mjx import warp as mjx_warp

    overflow = getattr(getattr(mjx_warp, "mujoco_warp", None), "OverflowType", None)
    opt_impl = getattr(model.opt, "_impl", None)
    if overflow is None or not hasattr(opt_impl, "warn_overflow"):
        return model
    quiet = int(opt_impl.warn_overflow) & ~int(overflow.ITERATIONS | overflow.LS_ITERATIONS)
    return model.replace(opt=model.opt.replace(_impl=opt_impl.replace(warn_overflow=quiet)))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
