"""Stepping many C-MuJoCo environments from numba, without the GIL.

The C-MuJoCo engine (`ksimdsl.runtime.engine.mujoco.env`) keeps one `mujoco.MjData`
per environment and one `mujoco.MjModel` per worker thread (w). When the task
randomizes model fields, every env's values of those fields live in one row of
`EnvPointers.fields_EX`, and are written into the worker's model right before
the worker steps (or resets) that env (`_load_model`: a few hundred float64
stores against the thousands of operations of one `mj_step`), so a model of
71 MiB (the G1's meshes) is held once per thread, not once per env. The
functions here walk a contiguous range of those environments inside one
`@njit(nogil=True)` call: they write `ctrl`, call `mj_step` for every physics
substep, detect diverged states, and copy the physics arrays the task's kernels
read into preallocated batch arrays. Two threads each running them over half of
the batch use both cores; nothing in the hot loop touches Python objects.

How C is reached: `libmujoco` (shipped in the `mujoco` wheel) is loaded into
LLVM's symbol table and `mj_step`, `mj_forward`, `mj_resetData` and
`mj_contactForce` are declared as external functions, so the compiled machine
code refers to them by name and numba can cache it on disk. Every MuJoCo
object is passed as its address (`uint64`, from the bindings' `_address`);
arrays inside `mjData`/`mjModel` are read through pointers precomputed once
per environment (`array.ctypes.data` of the bindings' numpy views, which stay
valid for the object's lifetime).

Contacts live in `mjData`'s arena, which moves with every step, so they are
read through the struct itself: the byte offsets of `ncon`, `contact`, `time`
and the warning counters in `mjData`, and of `dist`/`geom`/`efc_address` in
`mjContact`, are computed from the struct declarations that MuJoCo ships
(`mujoco.introspect`) and checked against the bindings when first used
(`struct_layout`).

The arrays a function needs travel in small named bundles (numba takes
namedtuples of arrays): `EnvPointers` (the per-env data addresses, the workers'
models and the randomized field values, and the struct layout), `Gather` (which physics arrays are copied where) and
`ContactTables` (the contact queries and their results).
"""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass
from typing import Any, NamedTuple

import llvmlite.binding as llvm
import mujoco
import numba
import numpy as np
from numba import carray, cfunc, njit, types
from numba.extending import intrinsic

__all__ = [
    "LIBMUJOCO",
    "StructLayout",
    "EnvPointers",
    "Gather",
    "ContactTables",
    "struct_layout",
    "field_addresses",
    "advance",
    "refresh",
    "reset_and_forward",
    "write_state",
    "load_model",
    "BAD_STATE_WARNINGS",
    "quiet_mujoco_warnings",
    "actuate",
    "ACTUATOR_KINDS",
    "ActuatorConstants",
    "Specialized",
]

#: The shared library inside the installed `mujoco` wheel.
LIBMUJOCO = os.path.join(os.path.dirname(mujoco.__file__), f"libmujoco.so.{mujoco.__version__}")

#: mjtWarning values that mean "the state diverged": C MuJoCo then resets the
#: data to qpos0 by itself; the engine counts it as a NaN reset.
BAD_STATE_WARNINGS = (
    int(mujoco.mjtWarning.mjWARN_BADQPOS),
    int(mujoco.mjtWarning.mjWARN_BADQVEL),
    int(mujoco.mjtWarning.mjWARN_BADQACC),
)


def _load_libmujoco() -> None:
    if not os.path.exists(LIBMUJOCO):  # pragma: no cover - depends on the wheel layout
        raise RuntimeError(f"libmujoco not found at {LIBMUJOCO}; the C-MuJoCo engine needs the mujoco wheel")
    llvm.load_library_permanently(LIBMUJOCO)


_load_libmujoco()

_mj_step = types.ExternalFunction("mj_step", types.void(types.voidptr, types.voidptr))
_mj_forward = types.ExternalFunction("mj_forward", types.void(types.voidptr, types.voidptr))
_mj_resetData = types.ExternalFunction("mj_resetData", types.void(types.voidptr, types.voidptr))
_mj_contactForce = types.ExternalFunction(
    "mj_contactForce", types.void(types.voidptr, types.voidptr, types.intc, types.CPointer(types.float64))
)


# --------------------------------------------------------------------------- MuJoCo's warning printout


@cfunc(types.void(types.voidptr), cache=True)
def _ignore_warning(message):  # pragma: no cover - runs inside libmujoco
    return


def quiet_mujoco_warnings() -> bool:
    """Stop C MuJoCo from printing warnings and appending them to ./MUJOCO_LOG.TXT.

    The engine detects diverged states itself (from `mjData.warning`, see
    `advance`) and reports them as NaN resets, so MuJoCo's own printout of
    "Nan, Inf or huge value in QACC ..." would only flood the terminal and
    litter the working directory. Installs a no-op `mju_user_warning` for the
    process, unless a handler is already installed (by the user or by another
    library), which is then left alone. Returns whether the no-op is in place.
    """
    handler = ctypes.c_void_p.in_dll(ctypes.CDLL(LIBMUJOCO), "mju_user_warning")
    if handler.value in (None, _ignore_warning.address):
        handler.value = _ignore_warning.address
        return True
    return False


# --------------------------------------------------------------------------- addresses as pointers


def _address_as(pointer_type: Any) -> Any:
    """A numba intrinsic turning a uint64 address into `pointer_type`."""

    def cast(typingctx, address):
        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(pointer_type))

        return pointer_type(types.uint64), codegen

    return intrinsic(cast)


_voidptr = _address_as(types.voidptr)  # void*
_f64ptr = _address_as(types.CPointer(types.float64))  # double*
_i32ptr = _address_as(types.CPointer(types.int32))  # int*
_u64ptr = _address_as(types.CPointer(types.uint64))  # uint64*


# --------------------------------------------------------------------------- struct layout


@dataclass(frozen=True)
class StructLayout:
    """Byte offsets into `mjData` and `mjContact` (see the module docstring)."""

    data_ncon: int
    data_time: int
    data_contact: int  # the `mjContact*` pointer field
    data_warning: int  # mjWarningStat warning[mjNWARNING]
    warning_size: int  # sizeof(mjWarningStat)
    warning_number: int  # offset of `number` inside mjWarningStat
    contact_size: int  # sizeof(mjContact)
    contact_dist: int
    contact_geom: int  # int geom[2]

    def as_array(self) -> np.ndarray:
        """The offsets as the int64 vector the numba functions take (order: `_L_*` below)."""
        return np.array(
            [
                self.data_ncon,
                self.data_time,
                self.data_contact,
                self.data_warning,
                self.warning_size,
                self.warning_number,
                self.contact_size,
                self.contact_dist,
                self.contact_geom,
            ],
            dtype=np.int64,
        )


# indices into StructLayout.as_array()
_L_NCON, _L_TIME, _L_CONTACT, _L_WARNING, _L_WSIZE, _L_WNUMBER, _L_CSIZE, _L_CDIST, _L_CGEOM = range(9)

_SCALARS: dict[str, Any] = {
    "int": ctypes.c_int,
    "unsigned int": ctypes.c_uint,
    "mjtNum": ctypes.c_double,
    "mjtByte": ctypes.c_ubyte,
    "mjtBool": ctypes.c_bool,  # mujoco >= 3.4: C bool, 1 byte
    "mjtSize": ctypes.c_uint64,
    "size_t": ctypes.c_size_t,
    "uintptr_t": ctypes.c_size_t,
    "uint64_t": ctypes.c_uint64,
    "int64_t": ctypes.c_int64,
    "float": ctypes.c_float,
    "double": ctypes.c_double,
    "char": ctypes.c_char,
}


def _ctypes_struct(name: str, cache: dict[str, type]) -> type:
    """A ctypes.Structure with the field layout MuJoCo declares for struct `name`."""
    from mujoco.introspect import ast_nodes, structs

    if name in cache:
        return cache[name]

    def ctype_of(t: Any) -> Any:
        if isinstance(t, ast_nodes.PointerType):
            return ctypes.c_void_p
        if isinstance(t, ast_nodes.ArrayType):
            inner = ctype_of(t.inner_type)
            for n in reversed(t.extents):
                inner = inner * int(n)
            return inner
        if isinstance(t, ast_nodes.ValueType):
            if t.name in _SCALARS:
                return _SCALARS[t.name]
            if t.name in structs.STRUCTS:
                return _ctypes_struct(t.name, cache)
        raise RuntimeError(f"cannot lay out field type {t!r} of {name}")

    decl = structs.STRUCTS[name]
    fields = [(f.name, ctype_of(f.type)) for f in decl.fields]
    cls = type(name, (ctypes.Structure,), {"_fields_": fields})
    cache[name] = cls
    return cls


@functools.cache
def struct_layout() -> StructLayout:
    """Offsets of the `mjData`/`mjContact` members the engine reads, checked against the bindings.

    Raises RuntimeError if MuJoCo's declarations and the library disagree (a
    mismatched wheel): better to refuse than to read garbage.
    """
    cache: dict[str, type] = {}
    data_t = _ctypes_struct("mjData", cache)
    contact_t = _ctypes_struct("mjContact", cache)
    warning_t = _ctypes_struct("mjWarningStat", cache)
    layout = StructLayout(
        data_ncon=data_t.ncon.offset,
        data_time=data_t.time.offset,
        data_contact=data_t.contact.offset,
        data_warning=data_t.warning.offset,
        warning_size=ctypes.sizeof(warning_t),
        warning_number=warning_t.number.offset,
        contact_size=ctypes.sizeof(contact_t),
        contact_dist=contact_t.dist.offset,
        contact_geom=contact_t.geom.offset,
    )
    _check_layout(layout, data_t)
    return layout


_CHECK_XML = """
<mujoco>
  <worldbody>
    <geom name="floor" type="plane" size="5 5 0.1"/>
    <body pos="0 0 0.05"><freejoint/><geom type="sphere" size="0.1"/></body>
    <body pos="0.5 0 0.05"><freejoint/><geom type="box" size="0.1 0.1 0.1"/></body>
  </worldbody>
</mujoco>
"""


def _check_layout(layout: StructLayout, data_t: type) -> None:
    model = mujoco.MjModel.from_xml_string(_CHECK_XML)
    data = mujoco.MjData(model)
    data.time = 1.25
    mujoco.mj_forward(model, data)
    base = data._address

    def read(ctype: Any, offset: int) -> Any:
        return ctype.from_address(base + offset).value

    problems = []
    if read(ctypes.c_size_t, data_t.qpos.offset) != data.qpos.ctypes.data:
        problems.append("qpos pointer")
    if read(ctypes.c_int, layout.data_ncon) != data.ncon or data.ncon < 2:
        problems.append("ncon")
    if read(ctypes.c_double, layout.data_time) != data.time:
        problems.append("time")
    contact_ptr = read(ctypes.c_size_t, layout.data_contact)
    if data.ncon >= 2:
        if contact_ptr != data.contact.dist.ctypes.data - layout.contact_dist:
            problems.append("contact pointer")
        if data.contact.dist.strides[0] != layout.contact_size:
            problems.append("sizeof(mjContact)")
        if data.contact.geom.ctypes.data - data.contact.dist.ctypes.data != layout.contact_geom - layout.contact_dist:
            problems.append("mjContact.geom")
    data.warning[BAD_STATE_WARNINGS[0]].number = 7
    adr = layout.data_warning + BAD_STATE_WARNINGS[0] * layout.warning_size + layout.warning_number
    if read(ctypes.c_int, adr) != 7:
        problems.append("warning counters")
    if problems:
        raise RuntimeError(
            f"mujoco {mujoco.__version__}: the mjData layout from mujoco.introspect does not match the "
            f"library ({', '.join(problems)}); the C-MuJoCo engine cannot run with this wheel"
        )


# --------------------------------------------------------------------------- per-env addresses


def field_addresses(objects: list[Any], names: tuple[str, ...]) -> np.ndarray:
    """(len(names), len(objects)) uint64: the address of `getattr(obj, name)`'s data for every object.

    Works for MjData (qpos, xpos, ...) and MjModel (geom_friction, ...) arrays;
    all must be float64 and C-contiguous.
    """
    out = np.zeros((len(names), len(objects)), dtype=np.uint64)
    for i, name in enumerate(names):
        for j, obj in enumerate(objects):
            arr = getattr(obj, name)
            if arr.dtype != np.float64 or not arr.flags.c_contiguous:
                raise TypeError(f"{type(obj).__name__}.{name} is not a contiguous float64 array")
            out[i, j] = arr.ctypes.data
    return out


# --------------------------------------------------------------------------- argument bundles


class Specialized:
    """A numba function `f(lo, hi, w, *objects)` called through the entry point compiled for its arguments
    (the `scalars` leading integers, 2 or 3: the env range and, for `advance`, the worker).

    numba's own per-call dispatch types every argument, which costs microseconds
    for each namedtuple (the bundles below), and the hot loop calls these
    functions once per chunk of envs per control step, always with the same
    buffers and bundles. So the entry point is looked up by the identities of
    `objects` (held here, so that an id cannot be reused), compiled or loaded
    from numba's disk cache once per set of objects.
    """

    def __init__(self, dispatcher: Any, scalars: int = 2):
        self.dispatcher = dispatcher
        self.scalars = scalars
        self._entries: dict[tuple[int, ...], tuple[Any, tuple]] = {}

    def __call__(self, *args: Any) -> Any:
        objects = args[self.scalars :]
        key = tuple(map(id, objects))
        entry = self._entries.get(key)
        if entry is None:
            types_ = tuple(numba.typeof(a) for a in args)
            entry = self._entries[key] = (self.dispatcher.compile(types_), objects)
        return entry[0](*args)


class EnvPointers(NamedTuple):
    """Where every env's MuJoCo objects live: uint64 addresses (E,), the worker threads' models (W,)
    with the randomized model fields (f) every env steps with, and the struct offsets."""

    m_adr_W: np.ndarray  # mjModel* of each worker thread (all the one model when nothing is randomized)
    field_adr_FW: np.ndarray  # uint64 (F, W): randomized field f's data in worker w's model
    field_offset_F: np.ndarray  # int64: where field f's values start in a row of fields_EX
    field_size_F: np.ndarray  # int64: its element count
    fields_EX: np.ndarray  # float64 (E, X): every env's randomized field values, the fields one after another
    d_adr_E: np.ndarray  # mjData*
    ctrl_adr_E: np.ndarray  # mjData.ctrl
    qpos_adr_E: np.ndarray  # mjData.qpos
    qvel_adr_E: np.ndarray  # mjData.qvel
    layout_L: np.ndarray  # int64, StructLayout.as_array()

    @classmethod
    def of(
        cls, models_W: list[Any], datas_E: list[Any], fields: tuple[str, ...] = (), fields_EX: np.ndarray | None = None
    ) -> "EnvPointers":
        """The bundle of the workers' models and the envs' datas; `fields`: the randomized model fields,
        their values one after another in each row of fields_EX (zeros when not given)."""
        size_F = np.array([getattr(models_W[0], n).size for n in fields], dtype=np.int64)
        if fields_EX is None:
            fields_EX = np.zeros((len(datas_E), int(size_F.sum())))
        if fields_EX.shape != (len(datas_E), int(size_F.sum())) or fields_EX.dtype != np.float64:
            raise ValueError(f"fields_EX must be float64 ({len(datas_E)}, {int(size_F.sum())})")
        return cls(
            np.array([m._address for m in models_W], dtype=np.uint64),
            field_addresses(models_W, fields).reshape(len(fields), len(models_W)),
            np.cumsum(size_F) - size_F,
            size_F,
            fields_EX,
            np.array([d._address for d in datas_E], dtype=np.uint64),
            *field_addresses(datas_E, ("ctrl", "qpos", "qvel")),
            layout_L=struct_layout().as_array(),
        )


class Gather(NamedTuple):
    """The physics arrays copied out of every mjData after a step (f: a gathered field)."""

    src_adr_FE: np.ndarray  # uint64, the field's address in each env's mjData
    size_F: np.ndarray  # int64, its element count
    dst_adr_F: np.ndarray  # uint64, the (E, size_F[f]) float64 batch array it is copied to
    time_E: np.ndarray  # float64 (E,), episode time out


class ContactTables(NamedTuple):
    """The contact queries (p: a pair of geom sets) and their per-env results."""

    in_a_PG: np.ndarray  # uint8: geom g is on side a of query p
    in_b_PG: np.ndarray
    contact_EP: np.ndarray  # float64 out: 1 where the query's geoms touch
    force_EP: np.ndarray  # float64 out: their summed normal force (when want_force)
    want_force: bool


# --------------------------------------------------------------------------- numba kernels


@njit(nogil=True, cache=True)
def _bad_state_count(d_adr, layout, warnings):
    total = 0
    for w in warnings:
        adr = d_adr + np.uint64(layout[_L_WARNING] + w * layout[_L_WSIZE] + layout[_L_WNUMBER])
        total += _i32ptr(adr)[0]
    return total


@njit(nogil=True, cache=True)
def _gather(e, d_adr, gather, layout):
    """Copy env e's physics arrays into row e of the batch arrays; return False if any is not finite."""
    src_adr_FE, size_F, dst_adr_F = gather.src_adr_FE, gather.size_F, gather.dst_adr_F
    finite = True
    for f in range(size_F.shape[0]):
        n = size_F[f]
        src = carray(_f64ptr(src_adr_FE[f, e]), (n,))
        dst = carray(_f64ptr(dst_adr_F[f] + np.uint64(8 * n * e)), (n,))
        for i in range(n):
            v = src[i]
            dst[i] = v
            if not np.isfinite(v):
                finite = False
    gather.time_E[e] = _f64ptr(d_adr + np.uint64(layout[_L_TIME]))[0]
    return finite


@njit(nogil=True, cache=True)
def _contacts(e, m_adr, d_adr, tables, layout):
    """Evaluate every contact query for env e (see docs/architecture.md, `contact`, `contact_force`)."""
    in_a_PG, in_b_PG, contact_EP, force_EP = tables.in_a_PG, tables.in_b_PG, tables.contact_EP, tables.force_EP
    n_queries = in_a_PG.shape[0]
    for p in range(n_queries):
        contact_EP[e, p] = 0.0
        force_EP[e, p] = 0.0
    if n_queries == 0:
        return
    ncon = _i32ptr(d_adr + np.uint64(layout[_L_NCON]))[0]
    base = _u64ptr(d_adr + np.uint64(layout[_L_CONTACT]))[0]
    wrench = np.zeros(6)
    for i in range(ncon):
        con = base + np.uint64(i * layout[_L_CSIZE])
        dist = _f64ptr(con + np.uint64(layout[_L_CDIST]))[0]
        if not dist < 0.0:
            continue
        geom = _i32ptr(con + np.uint64(layout[_L_CGEOM]))
        g1 = geom[0]
        g2 = geom[1]
        if g1 < 0 or g2 < 0:  # flex contacts have no geom
            continue
        have_force = False
        for p in range(n_queries):
            if (in_a_PG[p, g1] and in_b_PG[p, g2]) or (in_a_PG[p, g2] and in_b_PG[p, g1]):
                contact_EP[e, p] = 1.0
                if tables.want_force:
                    if not have_force:
                        wrench_ptr = _f64ptr(np.uint64(wrench.ctypes.data))
                        _mj_contactForce(_voidptr(m_adr), _voidptr(d_adr), np.intc(i), wrench_ptr)
                        have_force = True
                    force_EP[e, p] += wrench[0]


@njit(nogil=True, cache=True)
def _load_model(e, w, envs):
    """Write env e's randomized field values into worker w's model; return that model's address."""
    fields_EX = envs.fields_EX
    for f in range(envs.field_size_F.shape[0]):
        n = envs.field_size_F[f]
        start = envs.field_offset_F[f]
        dst = carray(_f64ptr(envs.field_adr_FW[f, w]), (n,))
        for i in range(n):
            dst[i] = fields_EX[e, start + i]
    return envs.m_adr_W[w]


@njit(nogil=True, cache=True)
def load_model(e, w, envs):
    """`_load_model` from Python: worker w's model then holds env e's randomized field values."""
    _load_model(e, w, envs)


@njit(nogil=True, cache=True)
def advance(lo, hi, w, envs, ctrl_ESU, gather, tables, warnings_W, bad_E):
    """One control step for envs [lo, hi) on worker w's model: substeps with ctrl_ESU[e, s], then gather.

    ctrl_ESU: (E, S, nu) the ctrl of every substep. `gather` (a `Gather`) and
    `tables` (`ContactTables`) receive the physics arrays and contact query
    results. bad_E: (E,) bool out, True where the state diverged during this
    step (one of the mjtWarning kinds warnings_W fired, C MuJoCo's
    bad-qpos/qvel/qacc, which also resets the data, or a gathered value is not finite).
    """
    layout = envs.layout_L
    n_sub = ctrl_ESU.shape[1]
    nu = ctrl_ESU.shape[2]
    for e in range(lo, hi):
        m = _load_model(e, w, envs)
        d = envs.d_adr_E[e]
        before = _bad_state_count(d, layout, warnings_W)
        ctrl = carray(_f64ptr(envs.ctrl_adr_E[e]), (nu,))
        for s in range(n_sub):
            for u in range(nu):
                ctrl[u] = ctrl_ESU[e, s, u]
            _mj_step(_voidptr(m), _voidptr(d))
        diverged = _bad_state_count(d, layout, warnings_W) != before
        finite = _gather(e, d, gather, layout)
        bad_E[e] = diverged or not finite
        _contacts(e, m, d, tables, layout)


@njit(nogil=True, cache=True)
def refresh(idx_K, w, envs, gather, tables):
    """Gather the physics arrays and contact queries of envs idx_K without stepping (worker w's model)."""
    for k in range(idx_K.shape[0]):
        e = idx_K[k]
        m = _load_model(e, w, envs)
        _gather(e, envs.d_adr_E[e], gather, envs.layout_L)
        _contacts(e, m, envs.d_adr_E[e], tables, envs.layout_L)


@njit(nogil=True, cache=True)
def _write_row(adr, row_N):
    """Copy row_N into the float64 array at address adr."""
    dst = carray(_f64ptr(adr), (row_N.shape[0],))
    for i in range(row_N.shape[0]):
        dst[i] = row_N[i]


@njit(nogil=True, cache=True)
def reset_and_forward(idx_K, w, envs, qpos_KQ, qvel_KV, ctrl_KU):
    """For env idx_K[k] (on worker w's model): mj_resetData, then qpos/qvel/ctrl from row k, then mj_forward."""
    for k in range(idx_K.shape[0]):
        e = idx_K[k]
        m = _voidptr(_load_model(e, w, envs))
        d = _voidptr(envs.d_adr_E[e])
        _mj_resetData(m, d)
        _write_row(envs.qpos_adr_E[e], qpos_KQ[k])
        _write_row(envs.qvel_adr_E[e], qvel_KV[k])
        _write_row(envs.ctrl_adr_E[e], ctrl_KU[k])
        _mj_forward(m, d)


@njit(nogil=True, cache=True)
def write_state(idx_K, envs, qpos_KQ, qvel_KV):
    """Overwrite qpos/qvel of envs idx_K (events that change the state, `writes_phys`)."""
    for k in range(idx_K.shape[0]):
        e = idx_K[k]
        _write_row(envs.qpos_adr_E[e], qpos_KQ[k])
        _write_row(envs.qvel_adr_E[e], qvel_KV[k])


#: Actuator kinds of `actuate` (see docs/architecture.md, "Actuators").
ACTUATOR_KINDS = {"position": 0, "torque": 1, "ctrl": 2, "velocity": 3, "position_velocity": 4}


class ActuatorConstants(NamedTuple):
    """The actuator model's constants for `actuate` (float64 arrays; +-inf where unlimited)."""

    kind: int  # ACTUATOR_KINDS
    default_pos_U: np.ndarray
    kp_U: np.ndarray  # position_velocity's gains (ctrl = kp target_pos + kd target_vel)
    kd_U: np.ndarray
    action_scale: float
    velocity_scale: float
    scale: float
    clip_lo_U: np.ndarray
    clip_hi_U: np.ndarray
    dt: float  # physics substep (s)


@njit(nogil=True, cache=True)
def actuate(lo, hi, act, raw_EA, action_EA, zero_offset_EU, latency_E, prev_ctrl_EU, ctrl_ESU):
    """Actions -> the ctrl of every physics substep, for envs [lo, hi).

    action_EA = clip(raw_EA, -1, 1) (what the kernels see); with the constants
    `act` (`ActuatorConstants`) the target is
    `default_pos + action_scale * action + zero_offset` (kind 0, position),
    `scale * action` (1, torque), `action` (2, ctrl), `action_scale * action`
    (3, velocity) or, for 4 (position_velocity, 2 nu actions),
    `kp (default_pos + action_scale * action[u] + zero_offset) + kd velocity_scale * action[nu + u]`,
    clipped to [clip_lo_U, clip_hi_U] (+-inf where unlimited). Substep s keeps the
    previous target while `s * dt < latency_E[e]`. prev_ctrl_EU becomes the new
    target. Same formulas as `ksimdsl.runtime.engine.actuators.ActuatorModel`.
    """
    n_act = raw_EA.shape[1]
    n_sub = ctrl_ESU.shape[1]
    nu = ctrl_ESU.shape[2]
    for e in range(lo, hi):
        for a in range(n_act):
            action_EA[e, a] = min(max(raw_EA[e, a], -1.0), 1.0)
        for u in range(nu):
            a = action_EA[e, u]
            if act.kind == 0:
                target = act.default_pos_U[u] + act.action_scale * a + zero_offset_EU[e, u]
            elif act.kind == 1:
                target = act.scale * a
            elif act.kind == 3:
                target = act.action_scale * a
            elif act.kind == 4:
                pos = act.default_pos_U[u] + act.action_scale * a + zero_offset_EU[e, u]
                target = act.kp_U[u] * pos + act.kd_U[u] * act.velocity_scale * action_EA[e, nu + u]
            else:
                target = a
            target = min(max(target, act.clip_lo_U[u]), act.clip_hi_U[u])
            for s in range(n_sub):
                ctrl_ESU[e, s, u] = prev_ctrl_EU[e, u] if s * act.dt < latency_E[e] else target
            prev_ctrl_EU[e, u] = target
