"""The SPEC of a generated module (the ABI description the runtime reads) and numba argument names.

`build_spec` writes the dict that ends every generated module as the literal
`SPEC = {...}` (schema: docs/architecture.md, `ksimdsl.abi.TaskSpec.from_dict`).
numba kernels take positional per-env arrays named with their shape letters
(`qpos_EQ`, `mem_out_EM`), listed per phase in `SPEC["numba_args"]`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ksimdsl.abi import ABI_VERSION, PHYS_FIELDS
from ksimdsl.errors import InternalCompilerError
from ksimdsl.ir.program import Output, TaskIR

if TYPE_CHECKING:
    from ksimdsl.codegen.module import PhaseCode

__all__ = ["build_spec", "numba_arg", "numba_args", "phase_inputs", "phase_outputs", "out_arg_base", "used_phys_inputs"]

#: Per-env shape letters of the physics arrays, for numba argument names (`xpos_EB3`).
_PHYS_SUFFIX = {
    "qpos": "Q",
    "qvel": "V",
    "qacc": "V",
    "actuator_force": "U",
    "xpos": "B3",
    "xquat": "B4",
    "xmat": "B9",
    "cvel": "B6",
    "cinert": "B10",
    "subtree_com": "B3",
    "site_xpos": "S3",
    "sensordata": "D",
    "time": "",
    "contact": "C",
    "contact_force": "C",
    "height_scan": "H",
}

_FIELD_PREFIX = {"body": "B", "geom": "G", "dof": "V", "jnt": "J", "actuator": "U", "site": "S", "tendon": "T"}


def numba_arg(name: str, field_shape: tuple[int, ...] | None = None) -> str:
    """The numba argument name of input/output `name` (`qpos` -> `qpos_EQ`, `mem_out` -> `mem_out_EM`)."""
    base = name[: -len("_out")] if name.endswith("_out") else name
    fixed = {
        "action": "A",
        "level": "",
        "mem": "M",
        "rand_n": "N",
        "rand_u": "U",
        "actor": "O",
        "critic": "C",
        "reward_terms": "R",
        "reward_weights": "R",
        "terminations": "K",
        "metrics": "J",
    }
    if base in _PHYS_SUFFIX:
        return f"{name}_E{_PHYS_SUFFIX[base]}"
    if base in fixed:
        return f"{name}_E{fixed[base]}"
    letter = _FIELD_PREFIX.get(base.split("_")[0], "F")
    cols = "".join(str(d) for d in (field_shape or ())[1:])
    return f"{name}_E{letter}{cols}"


def phase_inputs(phase: str, phys_inputs: Sequence[str], fields: Sequence[str]) -> list[str]:
    """Input names of a phase, in numba argument order."""
    if phase == "reset":
        return ["qpos", "qvel", *fields, "level", "rand_n", "rand_u"]
    return [*phys_inputs, "action", "level", "mem", "rand_n", "rand_u"]


def phase_outputs(phase: str, ir: TaskIR) -> list[str]:
    """Output keys of a phase, in numba argument order."""
    if phase == "reset":
        return ["qpos", "qvel", *ir.randomize_fields, "mem"]
    if phase == "observe":  # and mem when the task has observation histories (`observe` fills them)
        return [o.key for o in ir.phases["observe"].outputs]
    outs = ["actor", "critic", "reward_terms", "reward_weights", "terminations"]
    if ir.metrics:
        outs.append("metrics")
    outs.append("mem")
    if ir.writes_phys:
        outs += ["qpos", "qvel"]
    return outs


def out_arg_base(key: str) -> str:
    return f"{key}_out" if key in ("qpos", "qvel", "mem") or key not in _FIXED_OUTPUTS else key


_FIXED_OUTPUTS = {"actor", "critic", "reward_terms", "reward_weights", "terminations", "metrics", "qpos", "qvel", "mem"}


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float):
        return float(x)
    if x is None or isinstance(x, (bool, int, str)):
        return x
    if hasattr(x, "item"):
        return x.item()
    raise InternalCompilerError(f"not JSON-compatible: {x!r}")


def _obs_entries(out: Output, items: Sequence[Any]) -> list[dict[str, Any]]:
    """{name, size, offset} per observation, and `history` K where K > 1 (then size = K * one value's size)."""
    history = {o.name: o.history for o in items}
    entries = []
    for s in out.segments:
        k = history.get(s.label, 1)
        entries.append({"name": s.label, "size": s.size, "offset": s.offset} | ({"history": k} if k > 1 else {}))
    return entries


def build_spec(
    task: Any,
    ir: TaskIR,
    codes: Mapping[str, PhaseCode],
    backend: str,
    source_file: str,
    phys_inputs: Sequence[str],
) -> dict[str, Any]:
    """The SPEC dict (schema: docs/architecture.md, `ksimdsl.abi.TaskSpec.from_dict`)."""
    act = task.actuators
    zero = None
    if act.zero_offset is not None:
        params = []
        for p in act.zero_offset.params:
            vals = getattr(p, "values", None)
            if vals is None or len(set(vals)) != 1:
                raise InternalCompilerError("zero_offset parameters must be scalar constants")
            params.append(float(vals[0]))
        zero = {"dist": act.zero_offset.kind, "params": params}
    step = codes["step"].phase
    phys = task.physics
    composition = task.model.composition
    spec: dict[str, Any] = {
        "abi": ABI_VERSION,
        "task": task.name,
        "doc": task.doc or "",
        "source_file": source_file,
        "model": task.model.path,
        # what the task adds to the MJCF, as plain literals (ksimdsl.model.compose); absent when nothing
        **({} if composition.empty else {"compose": composition.to_dict()}),
        "physics": {
            "dt": phys.dt,
            "ctrl_dt": phys.ctrl_dt,
            "substeps": phys.substeps,
            "solver": phys.solver,
            "iterations": phys.iterations,
            "ls_iterations": phys.ls_iterations,
            "impl": phys.impl,
            "naconmax": phys.naconmax,
            "njmax": phys.njmax,
            # only where set, so that the SPEC of every other task stays as it was
            **({} if phys.sphere_hfield == "manifold" else {"sphere_hfield": phys.sphere_hfield}),
        },
        "engine": task.engine,
        "episode_steps": task.episode_steps,
        "actuators": {
            "kind": act.kind,
            "joint_qpos_adr": list(act.joint_qpos_adr),
            "joint_dof_adr": list(act.joint_dof_adr),
            "kp": list(act.kp),
            "kd": list(act.kd),
            "action_scale": act.action_scale,
            **({"velocity_scale": act.velocity_scale} if act.kind == "position_velocity" else {}),
            "scale": act.scale,
            "default_pos": list(act.default_pos),
            "ctrl_range": None if act.ctrl_range is None else [list(r) for r in act.ctrl_range],
            "latency": None if act.latency is None else list(act.latency),
            "zero_offset": zero,
        },
        "action_size": task.action_size,
        "obs": {
            "actor": _obs_entries(step.output("actor"), task.obs_actor),
            "critic": _obs_entries(step.output("critic"), task.obs_critic),
        },
        "rewards": [{"name": n} for n in ir.rewards],
        "dropped_rewards": list(ir.dropped_rewards),
        "terminations": [{"name": t.name, "success": bool(t.success)} for t in task.terminations],
        **({"metrics": [{"name": n} for n in ir.metrics]} if ir.metrics else {}),
        "mem_size": ir.mem_size,
        "mem_layout": [{"name": s.name, "offset": s.offset, "size": s.size} for s in ir.mem_slots],
        "commands": [dict(c) for c in ir.commands],
        "randomize_fields": list(ir.randomize_fields),
        "writes_phys": ir.writes_phys,
        "phys_inputs": list(phys_inputs),
        "contact_queries": [
            {"geoms_a": list(q.geoms_a), "geoms_b": list(q.geoms_b)} for q in task.contact_queries
        ],
        **({"height_scan": _height_scan(task)} if task.height_scans else {}),
        "rand": {name: [c.phase.rand_normal, c.phase.rand_uniform] for name, c in codes.items()},
    }
    if backend == "numba":
        spec["numba_args"] = {name: numba_args(name, ir, phys_inputs) for name in codes}
    spec["curriculum"] = task.curriculum.to_dict()
    spec["policy"] = task.policy.to_dict()
    spec["train"] = task.train.to_dict()
    if task.amp is not None:
        spec["amp"] = {
            "settings": task.amp.settings.to_dict(),
            "features": [dict(p) for p in task.amp.features],
            "names": list(task.amp.names),
            "reference": [[float(x) for x in row] for row in task.amp.reference],
        }
    spec["ops"] = {name: [c.elim.ops_before, c.elim.ops_after] for name, c in codes.items()}
    return _jsonable(spec)


def _height_scan(task: Any) -> dict[str, Any]:
    """SPEC["height_scan"]: the ground geoms and, per distinct scan, its body, grid, spacing and first point."""
    scans = []
    offset = 0
    for q in task.height_scans:
        scans.append({"body": q.body, "grid": [q.nx, q.ny], "spacing": q.spacing, "offset": offset})
        offset += q.size
    return {"ground": list(task.ground_geoms), "scans": scans}


def numba_args(phase: str, ir: TaskIR, phys_inputs: Sequence[str]) -> list[str]:
    """Positional argument names of a numba kernel: inputs, then outputs."""
    ins = [numba_arg(n, ir.field_shapes.get(n)) for n in phase_inputs(phase, phys_inputs, ir.randomize_fields)]
    outs = [
        numba_arg(out_arg_base(k), ir.field_shapes.get(k) if k in ir.field_shapes else None)
        for k in phase_outputs(phase, ir)
    ]
    return ins + outs



def used_phys_inputs(ir: TaskIR) -> list[str]:
    used = ir.phases["observe"].input_names() | ir.phases["step"].input_names()
    return [n for n in PHYS_FIELDS if n in used]

