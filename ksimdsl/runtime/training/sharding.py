"""Training on several devices and hosts with JAX's own SPMD (a `Mesh` and `NamedSharding`s).

The environments are split over a one-dimensional device mesh whose only axis,
`ENV_AXIS`, is a data axis:

* every array of the collector state with a leading env axis (the MJX physics
  state, kernel memory, observations, actor carry, ...) is sharded along it:
  device d steps environments [d * E/D, (d + 1) * E/D);
* the PPO state (network weights, optimizer state, observation normalizers,
  counters) is replicated on every device;
* the jitted training step (rollout + PPO update) is compiled with these
  shardings as its `in_shardings` / `out_shardings`. XLA's SPMD partitioner
  then runs each device's environments locally and inserts the collectives
  itself: the rollout statistics, the observation-normalizer statistics, the
  advantage normalization, the losses and therefore the gradients are reduced
  over all devices, so every device applies the same optimizer update and the
  replicated parameters stay identical. Nothing here is hand-written
  communication: the same program runs on 1 device or on 64.

Across hosts, `init_distributed` starts `jax.distributed` (one process per
host, each driving its local devices); the mesh then spans the devices of every
process, ordered process by process, so each process steps its own devices'
environments. Every process runs the same training loop; only the main process
(index 0) writes logs, checkpoints and media (`is_main_process`), and stop
decisions (Ctrl-C, `max_seconds`) are taken by the main process and broadcast
(`EnvMesh.decide`) so that all processes leave the loop at the same iteration.

`devices=N` (the `train` setting) is the number of local devices per process;
0 means all of them. `num_envs` is the global number of environments and must
split evenly over all devices of the mesh.

Checkpoints are host arrays of the full (global) state (`EnvMesh.to_host`
gathers the shards), so a run restores onto any device count that divides
`num_envs` (`EnvMesh.place` splits them again).

jaxlib >= 0.10 deadlocks MJX on several CPU devices in one process: its LAPACK
kernels (the Cholesky factorizations in every `mjx.step`) split a large batch
over XLA's CPU thread pool and block until the pieces are done; when every
pool thread is such a blocked device, nothing runs the pieces.
`check_cpu_lapack_deadlock` refuses exactly that configuration (see
docs/architecture.md, "Tested versions").
"""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ksimdsl.errors import InternalCompilerError, KsimError
from ksimdsl.runtime.rl import ppo
from ksimdsl.runtime.engine.base import Collector
from ksimdsl.runtime.engine.mjx.collect import MjxCollectorState

__all__ = [
    "ENV_AXIS",
    "CpuLapackLoad",
    "DistributedConfig",
    "EnvMesh",
    "init_distributed",
    "is_main_process",
    "check_cpu_lapack_deadlock",
    "mesh_devices",
    "parse_coordinator",
]

#: Name of the mesh axis the environments are split over (the data-parallel axis).
ENV_AXIS = "envs"

_HOST_PORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[^\s:\[\]]+):(?P<port>\d+)$")


# --------------------------------------------------------------------------- jax.distributed


def parse_coordinator(address: str) -> tuple[str, int]:
    """`"HOST:PORT"` (or `"[IPv6]:PORT"`) -> (host, port); a malformed address is a KsimError."""
    m = _HOST_PORT.match(address.strip())
    if m is None:
        raise KsimError(f"--coordinator: expected HOST:PORT (e.g. 10.0.0.1:1234), got '{address}'")
    port = int(m.group("port"))
    if not 0 < port < 65536:
        raise KsimError(f"--coordinator: port {port} is out of range (1-65535)")
    return m.group("host"), port


@dataclass(frozen=True)
class DistributedConfig:
    """Where process `process_id` of `num_processes` finds the coordinator (process 0's HOST:PORT)."""

    coordinator: str
    num_processes: int
    process_id: int

    def __post_init__(self) -> None:
        parse_coordinator(self.coordinator)
        if self.num_processes < 1:
            raise KsimError(f"--num-processes must be at least 1, got {self.num_processes}")
        if not 0 <= self.process_id < self.num_processes:
            raise KsimError(
                f"--process-id must lie in [0, {self.num_processes - 1}] for --num-processes {self.num_processes}, "
                f"got {self.process_id}"
            )

    @staticmethod
    def from_args(
        coordinator: str | None, num_processes: int | None, process_id: int | None
    ) -> "DistributedConfig | None":
        """The three CLI options together, or None when none is given (a single-process run)."""
        given = {"--coordinator": coordinator, "--num-processes": num_processes, "--process-id": process_id}
        if all(v is None for v in given.values()):
            return None
        missing = [name for name, v in given.items() if v is None]
        if missing:
            raise KsimError(
                "a multi-process run needs --coordinator HOST:PORT, --num-processes P and --process-id I "
                f"together; missing {', '.join(missing)}"
            )
        return DistributedConfig(str(coordinator), int(num_processes), int(process_id))  # type: ignore[arg-type]


def init_distributed(config: DistributedConfig, *, timeout_s: float = 300.0) -> None:
    """Start `jax.distributed` for this process; call it before anything touches JAX devices.

    Every process sees all its local devices (automatic cluster detection is
    off: the three settings are explicit). CPU devices exchange data with gloo
    collectives, so the same code runs multi-process tests on one machine.
    A process other than 0 first waits up to `timeout_s` for the coordinator
    to accept connections and reports a clear KsimError if it never does (a
    failure inside `jax.distributed` itself ends the process from C++, with
    XLA's own message).
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if config.process_id != 0:
        _wait_for_coordinator(config, timeout_s)
    try:
        jax.distributed.initialize(
            coordinator_address=config.coordinator,
            num_processes=config.num_processes,
            process_id=config.process_id,
            cluster_detection_method="deactivate",
            initialization_timeout=max(1, int(timeout_s)),
        )
    except RuntimeError as err:
        text = " ".join(str(err).split())
        if "must be called before" in text or "only be called once" in text:
            raise InternalCompilerError(f"jax.distributed started too late or twice: {text}") from err
        raise KsimError(f"process {config.process_id}: cannot start jax.distributed: {text}") from None


def _wait_for_coordinator(config: DistributedConfig, timeout_s: float) -> None:
    """Block until process 0's coordinator accepts TCP connections, or raise a KsimError after `timeout_s`."""
    host, port = parse_coordinator(config.coordinator)
    host = host.strip("[]")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(5.0, max(0.1, timeout_s))):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise KsimError(
                    f"process {config.process_id} of {config.num_processes}: no coordinator at {config.coordinator} "
                    f"after {timeout_s:g} s ({err.strerror or err}); start process 0 with the same --coordinator, "
                    "and check that this host can reach it"
                ) from None
            time.sleep(0.25)


def is_main_process() -> bool:
    """True in the process that writes logs, checkpoints and media (process 0, or a single process)."""
    return jax.process_index() == 0


# --------------------------------------------------------------------------- the mesh


def mesh_devices(requested: int) -> list[jax.Device]:
    """The devices training shards over: the first `requested` local devices of every process (0: all).

    Ordered process by process, so each process's environments live on its own devices.
    """
    local = jax.local_devices()
    if requested < 0:
        raise KsimError(f"train: devices must be >= 0 (0: all local devices), got {requested}")
    per_process = requested or len(local)
    if per_process > len(local):
        platform = local[0].platform if local else "?"
        hint = (
            "; on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N host devices"
            if platform == "cpu"
            else ""
        )
        raise KsimError(
            f"train: devices={requested}, but this process sees only {len(local)} {platform} device(s){hint}"
        )
    chosen: list[jax.Device] = []
    for process in range(jax.process_count()):
        mine = sorted((d for d in jax.devices() if d.process_index == process), key=lambda d: d.id)
        if len(mine) < per_process:
            raise KsimError(f"train: devices={per_process}, but process {process} has only {len(mine)} device(s)")
        chosen.extend(mine[:per_process])
    return chosen


# --------------------------------------------------------------------------- the jaxlib 0.10 CPU deadlock

#: First jaxlib whose CPU LAPACK kernels fan a batch out over the XLA thread pool (`ParallelBatchMap`).
LAPACK_FANOUT_JAXLIB = (0, 10)
#: envs per device * nv**3 from which a batched Cholesky of the mass matrix may be split (measured with
#: jaxlib 0.10.2: 27x27 matrices split from a batch of 32, i.e. ~6e5; 2x2 ones not even at 1e5). Lower
#: than measured, so that a borderline batch is refused rather than left to hang.
LAPACK_FANOUT_COST = 2**18


@dataclass(frozen=True)
class CpuLapackLoad:
    """What decides whether jaxlib's CPU LAPACK kernels can deadlock a sharded MJX step."""

    jaxlib: tuple[int, int]  # (major, minor)
    devices: int  # CPU devices this process steps at once
    pool_threads: int  # XLA's CPU thread pool: one per schedulable core
    envs_per_device: int
    nv: int | None  # degrees of freedom (the mass matrix is nv x nv); None: unknown, assume large

    @staticmethod
    def here(devices: int, envs_per_device: int, nv: int | None) -> "CpuLapackLoad":
        return CpuLapackLoad(_jaxlib_version(), devices, _schedulable_cpus(), envs_per_device, nv)

    @property
    def deadlocks(self) -> bool:
        """Every pool thread can end up blocked in a split LAPACK call, with its pieces queued behind it."""
        if self.jaxlib < LAPACK_FANOUT_JAXLIB or self.devices < 2 or self.devices < self.pool_threads:
            return False
        return self.nv is None or self.envs_per_device * self.nv**3 >= LAPACK_FANOUT_COST


def check_cpu_lapack_deadlock(load: CpuLapackLoad) -> None:
    """A KsimError for the one configuration that hangs MJX with jaxlib >= 0.10 (instead of the hang)."""
    if not load.deadlocks:
        return
    fewer = f" (or fewer devices than the {load.pool_threads} CPU threads)" if load.pool_threads > 2 else ""
    raise KsimError(
        f"train: devices={load.devices} on the CPU would hang with jaxlib "
        f"{load.jaxlib[0]}.{load.jaxlib[1]}: its LAPACK kernels (the Cholesky factorizations of every "
        f"mjx.step) split a batch of {load.envs_per_device} envs over XLA's {load.pool_threads} CPU "
        f"threads and wait for the pieces, and {load.devices} devices stepping at once leave no thread "
        f"to run them. Use devices=1{fewer}: one CPU device already uses every core; or install "
        "jax/jaxlib < 0.10"
    )


def _jaxlib_version() -> tuple[int, int]:
    try:
        text = metadata.version("jaxlib")
    except metadata.PackageNotFoundError:  # pragma: no cover - jax always comes with jaxlib
        text = jax.__version__
    parts = re.findall(r"\d+", text)[:2]
    return (int(parts[0]), int(parts[1])) if len(parts) == 2 else (0, 0)


def _schedulable_cpus() -> int:
    """The size of XLA's CPU thread pool: the cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class EnvMesh:
    """The environments' device mesh and the shardings of everything the training step carries."""

    mesh: Mesh

    @staticmethod
    def create(*, devices: int, num_envs: int) -> "EnvMesh":
        """A mesh over `mesh_devices(devices)`; `num_envs` must split evenly over it."""
        chosen = mesh_devices(devices)
        n = len(chosen)
        if num_envs % n:
            lower, upper = (num_envs // n) * n, (num_envs // n + 1) * n
            options = f"num_envs={lower} or {upper}" if lower else f"num_envs={upper}"
            raise KsimError(
                f"train: num_envs={num_envs} does not split evenly over {n} devices "
                f"(each device steps num_envs / {n} environments); use {options}, or set devices= to a divisor"
            )
        return EnvMesh(mesh=Mesh(np.asarray(chosen), (ENV_AXIS,)))

    @staticmethod
    def for_collector(collector: Collector, *, devices: int, num_envs: int) -> "EnvMesh | None":
        """The mesh of a jittable (MJX) collector; None for a host engine, which runs on one device.

        A host engine (C MuJoCo) steps its environments in Python/numba, outside
        jit, so it cannot be sharded: `devices` > 1 or several processes is a KsimError.
        So is an MJX mesh that would deadlock jaxlib's CPU LAPACK kernels (`check_cpu_lapack_deadlock`),
        and MJX Warp (`physics impl=warp`, whose contact pool is shared by all envs) on several devices.
        """
        if collector.jittable:
            mesh = EnvMesh.create(devices=devices, num_envs=num_envs)
            if getattr(getattr(collector, "env", None), "impl", "jax") == "warp" and mesh.num_devices > 1:
                raise KsimError(
                    f"physics impl=warp steps all environments on one device, but the run would use "
                    f"{mesh.num_devices} devices; set train devices=1, or impl=jax to split the environments"
                )
            local = [d for d in mesh.mesh.devices.flat if d.process_index == jax.process_index()]
            if local and local[0].platform == "cpu":
                mj_model = getattr(getattr(collector, "env", None), "mj_model", None)
                nv = int(mj_model.nv) if mj_model is not None else None
                check_cpu_lapack_deadlock(CpuLapackLoad.here(len(local), num_envs // mesh.num_devices, nv))
            return mesh
        if devices > 1 or jax.process_count() > 1:
            what = f"devices={devices}" if devices > 1 else f"{jax.process_count()} processes"
            raise KsimError(
                f"train: {what} needs engine=mjx; engine=mujoco steps its environments on the host "
                "and runs in a single process on one device (use devices=1)"
            )
        return None

    # ------------------------------------------------------------------ shardings

    @property
    def num_devices(self) -> int:
        return int(self.mesh.devices.size)

    @property
    def spans_processes(self) -> bool:
        return len({d.process_index for d in self.mesh.devices.flat}) > 1

    @property
    def replicated(self) -> NamedSharding:
        """A full copy on every device."""
        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def envs(self) -> NamedSharding:
        """Leading (env) axis split over the devices."""
        return NamedSharding(self.mesh, PartitionSpec(ENV_AXIS))

    def constrain_minibatch(self, batch: ppo.Batch) -> ppo.Batch:
        """Keep a PPO minibatch split over the devices along its env axis.

        Each device then computes the loss and gradients of its own share of the
        minibatch and XLA all-reduces the gradients: the update is data-parallel
        instead of every device recomputing the whole minibatch. A minibatch whose
        env count does not divide by the device count is left to XLA.
        """
        if batch.carry_E.shape[0] % self.num_devices:
            return batch
        time_env = NamedSharding(self.mesh, PartitionSpec(None, ENV_AXIS))
        constrained = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, time_env), batch)
        carry_E = jax.lax.with_sharding_constraint(batch.carry_E, self.envs)
        return eqx.tree_at(lambda b: b.carry_E, constrained, carry_E)

    def ppo_shardings(self, ppo_state: ppo.PPOState) -> Any:
        """The PPO state's shardings: every leaf replicated."""
        return jax.tree.map(lambda _: self.replicated, ppo_state)

    def collector_shardings(self, state: MjxCollectorState) -> MjxCollectorState:
        """The MJX collector state's shardings: the env axis split, the env RNG key and counter replicated."""
        if not isinstance(state, MjxCollectorState):
            raise InternalCompilerError(f"cannot shard a collector state of type {type(state).__name__}")
        env = jax.tree.map(lambda _: self.envs, state.env)._replace(key=self.replicated)
        return MjxCollectorState(env=env, carry_E=self.envs, reset_E=self.envs, iteration=self.replicated)

    def step_shardings(self, ppo_state: ppo.PPOState, collector_state: MjxCollectorState) -> tuple[Any, Any]:
        """(in_shardings, out_shardings) of `(ppo_state, collector_state, key) -> (ppo_state,
        collector_state, stats, metrics)`: the states keep their layout, the key and the
        (scalar) stats and metrics are replicated."""
        ppo_s, collector_s = self.ppo_shardings(ppo_state), self.collector_shardings(collector_state)
        return (ppo_s, collector_s, self.replicated), (ppo_s, collector_s, self.replicated, self.replicated)

    # ------------------------------------------------------------------ moving data

    def place(self, tree: Any, shardings: Any) -> Any:
        """Host values (numpy or single-process jax arrays, the same on every process) -> global arrays.

        A leaf that already has its target sharding is kept. Every other leaf is
        copied from the host into fresh buffers, each process filling only its
        own devices' shards (so donated buffers are never shared).
        """

        def put(x: Any, sharding: NamedSharding) -> jax.Array:
            if isinstance(x, jax.Array) and x.sharding == sharding:
                return x
            host = np.asarray(x)
            return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

        return jax.tree.map(put, tree, shardings)

    def replicate(self, tree: Any) -> Any:
        """`place` with every leaf replicated (PPO state, RNG keys)."""
        return self.place(tree, jax.tree.map(lambda _: self.replicated, tree))

    def init_collector(self, collector: Collector, ppo_state: ppo.PPOState, *, key: jax.Array) -> MjxCollectorState:
        """`collector.init_for` computed on the mesh: each device resets only its own environments."""

        def init(k: jax.Array) -> MjxCollectorState:
            return collector.init_for(ppo_state, key=k)

        key = self.replicate(key)
        shardings = self.collector_shardings(jax.eval_shape(init, key))
        return jax.jit(init, out_shardings=shardings)(key)

    def to_host(self, tree: Any) -> Any:
        """Global arrays -> full numpy arrays in every process (for checkpoints).

        Collective when the mesh spans processes: every process must call it at
        the same point. The shards are first gathered onto every device (one
        jitted copy), then read from this process's first device.
        """
        if not self.spans_processes:
            return jax.device_get(tree)
        gathered = jax.jit(_identity, out_shardings=self.replicated)(tree)
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), gathered)

    def local(self, tree: Any) -> Any:
        """Replicated global arrays -> the copies on this process's first device (no copy).

        For host-side work of one process (videos, evaluation) on state that is
        replicated over the mesh, e.g. the PPO state.
        """

        def one(x: Any) -> Any:
            if not isinstance(x, jax.Array):
                return x
            if not x.sharding.is_fully_replicated:
                raise InternalCompilerError("EnvMesh.local needs replicated arrays")
            return x.addressable_data(0)

        return jax.tree.map(one, tree)

    def decide(self, value: int) -> int:
        """The main process's `value`, in every process (a broadcast when the mesh spans processes)."""
        if not self.spans_processes:
            return value
        return int(multihost_utils.broadcast_one_to_all(np.asarray(value, np.int32)))


def _identity(tree: Any) -> Any:
    """Module-level so that jit caches the gathering copy of `EnvMesh.to_host` between checkpoints."""
    return tree
