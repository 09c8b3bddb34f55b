"""Assemble a generated kernel module (header, SPEC, constants, three functions).

The module layout is the ABI of docs/architecture.md. `render_module` takes
the lowered task (`ksimdsl.ir.program.TaskIR`), runs CSE per phase and prints
the source for one backend:

* JAX: `reset(qpos, qvel, fields, level, rand_n, rand_u)`,
  `observe(phys, action, level, mem, rand_n, rand_u)`,
  `step(phys, action, level, mem, rand_n, rand_u)`, one env per call,
  returning dicts;
* numba: the same three functions batched, `@njit(cache=True, nogil=True)`, a
  `for e in range(E)` loop and positional arrays in the order of
  `SPEC["numba_args"][phase]` (inputs, then preallocated outputs).

Inside a function body, shared sub-expressions (`x0, x1, ...`, or a `let` /
built-in name) are emitted just before the first output block that needs
them; each output block (observations, rewards, ...) has a comment and one
named variable per term (`actor_joint_pos`, `reward_alive`, `done_fell`).
"""

from __future__ import annotations

import math
import pprint
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import sympy as sp

from ksimdsl import __version__
from ksimdsl.abi import ABI_VERSION, PHYS_FIELDS
from ksimdsl.codegen.jax_printer import JaxPrinter
from ksimdsl.codegen.numba_printer import NumbaPrinter
from ksimdsl.codegen.printer import KernelPrinter, comment, float_literal
from ksimdsl.errors import InternalCompilerError
from ksimdsl.ir import vec
from ksimdsl.ir.program import Output, PhaseIR, TaskIR
from ksimdsl.ir.simplify import Eliminated, eliminate

__all__ = ["PhaseCode", "render_module", "numba_arg", "phase_inputs", "BACKENDS"]

BACKENDS = ("jax", "numba")

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
}

_FIELD_PREFIX = {"body": "B", "geom": "G", "dof": "V", "jnt": "J", "actuator": "U", "site": "S", "tendon": "T"}

_PHASE_DOCS = {
    "reset": "Start an episode: reset writes, randomized model fields and the initial memory.",
    "observe": "Observations of the current state (memory unchanged).",
    "step": "Observations, rewards, terminations and the next memory after one control step.",
}

#: Names the generated function bodies use for their own inputs.
_RESERVED = {"e", "phys", "fields", "action", "level", "mem", "rand_n", "rand_u", "time", "np", "jnp", "njit"}


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
    if phase == "observe":
        return ["actor", "critic"]
    outs = ["actor", "critic", "reward_terms", "reward_weights", "terminations", "mem"]
    if ir.writes_phys:
        outs += ["qpos", "qvel"]
    return outs


def _out_arg_base(key: str) -> str:
    return f"{key}_out" if key in ("qpos", "qvel", "mem") or key not in _FIXED_OUTPUTS else key


_FIXED_OUTPUTS = {"actor", "critic", "reward_terms", "reward_weights", "terminations", "qpos", "qvel", "mem"}


# --------------------------------------------------------------------------- per-phase code


@dataclass
class PhaseCode:
    """CSE'd expressions of one phase, ready to print."""

    phase: PhaseIR
    elim: Eliminated
    # per output, per segment: the reduced items
    reduced: list[list[tuple[sp.Basic, ...]]] = field(default_factory=list)

    @staticmethod
    def build(phase: PhaseIR, cse: bool, fields: Sequence[str] = ()) -> "PhaseCode":
        reserved = _RESERVED | _phys_names() | set(fields)
        elim = eliminate(phase.exprs(), cse=cse, names=phase.names, lets=phase.lets, reserved=reserved)
        it = iter(elim.outputs)
        reduced = [[tuple(next(it) for _ in seg.val.items) for seg in out.segments] for out in phase.outputs]
        return PhaseCode(phase, elim, reduced)


def _phys_names() -> set[str]:
    return set(PHYS_FIELDS)


def _is_trivial(e: sp.Basic) -> bool:
    return e.is_Atom or isinstance(e, (sp.Indexed, vec.ArrSlice, vec.ArrGather, vec.ConstArr, vec.Fill))


class _Constants:
    """Module-level constant arrays (packed constants and gather indices), named once."""

    def __init__(self) -> None:
        self.arrays: dict[sp.Basic, str] = {}
        self.indices: dict[tuple[int, ...], str] = {}
        self._used: set[str] = set()

    def _unique(self, name: str) -> str:
        name = "".join(c if c.isalnum() else "_" for c in name.upper())
        cand, k = name, 1
        while cand in self._used:
            k += 1
            cand = f"{name}_{k}"
        self._used.add(cand)
        return cand

    def collect(self, exprs: Sequence[sp.Basic]) -> None:
        for e in exprs:
            for node in sp.preorder_traversal(e):
                if isinstance(node, vec.ConstArr) and node not in self.arrays:
                    self.arrays[node] = self._unique(node.name)
                elif isinstance(node, vec.ArrGather) and node.indices not in self.indices:
                    self.indices[node.indices] = self._unique(f"IDX_{node.base.name}_{len(self.indices)}")

    def lines(self, backend: str) -> list[str]:
        out: list[str] = []
        arr = "jnp" if backend == "jax" else "np"
        for node, name in self.arrays.items():
            vals = ", ".join(repr(v) if math.isfinite(v) else float_literal(v, arr) for v in node.values)
            out.append(f"{name} = {arr}.array([{vals}], dtype={arr}.float32)")
        for idx, name in self.indices.items():
            out.append(f"{name} = np.array([{', '.join(str(i) for i in idx)}], dtype=np.int32)")
        return out


def _temp_order(code: PhaseCode) -> list[list[int]]:
    """For each output, the temporaries (indices into elim.temps) first needed by it."""
    temps = code.elim.temps
    index = {sym: i for i, (sym, _) in enumerate(temps)}
    deps: list[set[int]] = []
    for _, expr in temps:
        deps.append({index[s] for s in expr.free_symbols if s in index})
    emitted: set[int] = set()
    per_output: list[list[int]] = []
    for items in code.reduced:
        need: set[int] = set()
        stack = [index[s] for seg in items for e in seg for s in e.free_symbols if s in index]
        while stack:
            i = stack.pop()
            if i in need or i in emitted:
                continue
            need.add(i)
            stack.extend(deps[i])
        emitted |= need
        per_output.append(sorted(need))
    return per_output


class _Body:
    """Prints the statements of one function body for one backend."""

    def __init__(self, printer: KernelPrinter, indent: str, reserved: set[str]) -> None:
        self.p = printer
        self.indent = indent
        self.lines: list[str] = []
        self._names = set(reserved)
        self._block: str | None = None

    def emit(self, line: str = "") -> None:
        if line and self._block is not None:
            self.lines += ["", self.indent + self._block]
            self._block = None
        self.lines.append(self.indent + line if line else "")

    def block(self, title: str) -> None:
        """Start a commented block (printed only if a statement follows)."""
        self._block = comment(title)

    def end_blocks(self) -> None:
        """Drop a pending empty block and leave a blank line."""
        self._block = None
        self.lines.append("")

    def expr(self, e: sp.Basic) -> str:
        return self.p.doprint(e)

    def var(self, out: Output, seg_label: str, offset: int) -> str:
        """A fresh variable name for an output segment (`actor_joint_pos`)."""
        name = f"{out.prefix}{seg_label}"
        if name in self._names:
            name = f"{name}_{offset}"
        self._names.add(name)
        return name


def _render_phase_jax(code: PhaseCode, consts: _Constants, ir: TaskIR) -> list[str]:
    phase = code.phase
    printer = JaxPrinter(code.elim.shapes, consts.arrays, consts.indices)
    body = _Body(printer, "    ", {str(s) for s, _ in code.elim.temps} | _RESERVED | _phys_names())
    if phase.name == "reset":
        sig = "def reset(qpos, qvel, fields, level, rand_n, rand_u):"
    else:
        sig = f"def {phase.name}(phys, action, level, mem, rand_n, rand_u):"
    used = phase.input_names()
    body.emit(f'"""{_PHASE_DOCS[phase.name]}"""')
    if phase.name == "reset":
        for f in ir.randomize_fields:
            shape = ir.field_shapes[f]
            flat = ".reshape(-1)" if len(shape) > 1 else ""
            if f in used:
                body.emit(f'{f} = fields["{f}"]{flat}')
    else:
        for name in PHYS_FIELDS:
            if name in used:
                body.emit(f'{name} = phys["{name}"]')
    order = _temp_order(code)
    results: dict[str, str] = {}
    for out, items, temps in zip(phase.outputs, code.reduced, order):
        body.block(out.title)
        for i in temps:
            sym, e = code.elim.temps[i]
            body.emit(f"{sym} = {body.expr(e)}")
        pieces: list[str] = []  # printed 1-D arrays
        run: list[str] = []  # pending scalars
        for seg, red in zip(out.segments, items):
            inline = not seg.label or (out.key in ("mem", "qpos", "qvel") or out.is_field) and all(
                _is_trivial(r) for r in red
            )
            if seg.val.size is not None and seg.val.size <= vec.SMALL:
                comps = [body.expr(r) for r in red]
                if inline:
                    run.extend(comps)
                    continue
                var = body.var(out, seg.label, seg.offset)
                body.emit(f"{var} = jnp.stack([{', '.join(comps)}])")
                if run:
                    pieces.append(f"jnp.stack([{', '.join(run)}])")
                    run = []
                pieces.append(var)
                continue
            text = body.expr(red[0])
            if not inline:
                var = body.var(out, seg.label, seg.offset)
                body.emit(f"{var} = {text}")
                text = var
            if seg.val.size is None:
                run.append(text)
            else:
                if run:
                    pieces.append(f"jnp.stack([{', '.join(run)}])")
                    run = []
                pieces.append(text)
        dtype = "jnp.bool_" if out.boolean else "jnp.float32"
        if run:
            if not pieces:
                pieces.append(f"jnp.stack([{', '.join(run)}], dtype={dtype})")
            else:
                pieces.append(f"jnp.stack([{', '.join(run)}])")
        if not pieces:
            value = f"jnp.zeros(0, dtype={dtype})"
        elif len(pieces) == 1:
            value = pieces[0] if pieces[0].startswith("jnp.stack(") else f"jnp.asarray({pieces[0]}, dtype={dtype})"
        else:
            value = "jnp.concatenate([" + ", ".join(pieces) + f"], dtype={dtype})"
        if out.is_field and len(out.full_shape) > 1:
            value = f"({value}).reshape{out.full_shape}"
        results[out.key] = value
    body.end_blocks()
    if phase.name == "reset":
        fields = [f'        "{f}": {results[f]},' for f in ir.randomize_fields]
        ret = [
            "return {",
            f'    "qpos": {results["qpos"]},',
            f'    "qvel": {results["qvel"]},',
            *(['    "fields": {', *fields, "    },"] if fields else ['    "fields": {},']),
            f'    "mem": {results["mem"]},',
            "}",
        ]
    else:
        ret = ["return {"] + [f'    "{k}": {v},' for k, v in results.items()] + ["}"]
    for line in ret:
        body.emit(line)
    return [sig] + body.lines


def _render_phase_numba(
    code: PhaseCode, consts: _Constants, ir: TaskIR, args: Sequence[str], phys_inputs: Sequence[str]
) -> list[str]:
    phase = code.phase
    printer = NumbaPrinter(code.elim.shapes, consts.arrays, consts.indices)
    body = _Body(printer, "        ", {str(s) for s, _ in code.elim.temps} | _RESERVED | set(args))
    lines = ["@njit(cache=True, nogil=True)"]
    lines.append(f"def {phase.name}(" + ", ".join(args) + "):")
    lines.append(f'    """{_PHASE_DOCS[phase.name]} Batched over the leading env axis."""')
    lines.append(f"    for e in range({numba_arg('level')}.shape[0]):")
    used = phase.input_names()
    inputs = phase_inputs(phase.name, phys_inputs, ir.randomize_fields)
    for name in inputs:
        if name not in used:
            continue
        arg = numba_arg(name, ir.field_shapes.get(name))
        flat = ".reshape(-1)" if len(ir.field_shapes.get(name, ())) > 1 else ""
        body.emit(f"{name} = {arg}[e]{flat}")
    order = _temp_order(code)
    for out, items, temps in zip(phase.outputs, code.reduced, order):
        arg = numba_arg(_out_arg_base(out.key), out.full_shape if out.is_field else None)
        body.block(out.title)
        for i in temps:
            sym, e = code.elim.temps[i]
            body.emit(f"{sym} = {body.expr(e)}")
        if out.is_field and len(out.full_shape) > 1:
            target = f"{out.key}_out"
            body.emit(f"{target} = {arg}[e].reshape(-1)")
            prefix = f"{target}["
        else:
            prefix = f"{arg}[e, "
        for seg, red in zip(out.segments, items):
            note = f"  {comment(seg.label)}" if seg.label else ""
            if seg.val.size is not None and seg.val.size <= vec.SMALL:
                for k, r in enumerate(red):
                    body.emit(f"{prefix}{seg.offset + k}] = {body.expr(r)}{note if k == 0 else ''}")
            elif seg.val.size is None:
                body.emit(f"{prefix}{seg.offset}] = {body.expr(red[0])}{note}")
            else:
                body.emit(f"{prefix}{seg.offset}:{seg.offset + seg.size}] = {body.expr(red[0])}{note}")
    return lines + body.lines


# --------------------------------------------------------------------------- SPEC


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


def _obs_entries(out: Output) -> list[dict[str, Any]]:
    return [{"name": s.label, "size": s.size, "offset": s.offset} for s in out.segments]


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
    spec: dict[str, Any] = {
        "abi": ABI_VERSION,
        "task": task.name,
        "doc": task.doc or "",
        "source_file": source_file,
        "model": task.model.path,
        "physics": {
            "dt": phys.dt,
            "ctrl_dt": phys.ctrl_dt,
            "substeps": phys.substeps,
            "solver": phys.solver,
            "iterations": phys.iterations,
            "ls_iterations": phys.ls_iterations,
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
            "scale": act.scale,
            "default_pos": list(act.default_pos),
            "ctrl_range": None if act.ctrl_range is None else [list(r) for r in act.ctrl_range],
            "latency": None if act.latency is None else list(act.latency),
            "zero_offset": zero,
        },
        "action_size": task.action_size,
        "obs": {"actor": _obs_entries(step.output("actor")), "critic": _obs_entries(step.output("critic"))},
        "rewards": [{"name": n} for n in ir.rewards],
        "dropped_rewards": list(ir.dropped_rewards),
        "terminations": [{"name": t.name, "success": bool(t.success)} for t in task.terminations],
        "mem_size": ir.mem_size,
        "mem_layout": [{"name": s.name, "offset": s.offset, "size": s.size} for s in ir.mem_slots],
        "commands": [dict(c) for c in ir.commands],
        "randomize_fields": list(ir.randomize_fields),
        "writes_phys": ir.writes_phys,
        "phys_inputs": list(phys_inputs),
        "contact_queries": [
            {"geoms_a": list(q.geoms_a), "geoms_b": list(q.geoms_b)} for q in task.contact_queries
        ],
        "rand": {name: [c.phase.rand_normal, c.phase.rand_uniform] for name, c in codes.items()},
    }
    if backend == "numba":
        spec["numba_args"] = {name: numba_args(name, ir, phys_inputs) for name in codes}
    spec["curriculum"] = task.curriculum.to_dict()
    spec["policy"] = task.policy.to_dict()
    spec["train"] = task.train.to_dict()
    spec["ops"] = {name: [c.elim.ops_before, c.elim.ops_after] for name, c in codes.items()}
    return _jsonable(spec)


def numba_args(phase: str, ir: TaskIR, phys_inputs: Sequence[str]) -> list[str]:
    """Positional argument names of a numba kernel: inputs, then outputs."""
    ins = [numba_arg(n, ir.field_shapes.get(n)) for n in phase_inputs(phase, phys_inputs, ir.randomize_fields)]
    outs = [
        numba_arg(_out_arg_base(k), ir.field_shapes.get(k) if k in ir.field_shapes else None)
        for k in phase_outputs(phase, ir)
    ]
    return ins + outs


# --------------------------------------------------------------------------- module


def _phys_inputs(ir: TaskIR) -> list[str]:
    used = ir.phases["observe"].input_names() | ir.phases["step"].input_names()
    return [n for n in PHYS_FIELDS if n in used]


def render_module(task: Any, ir: TaskIR, *, backend: str, cse: bool = True, source_file: str = "") -> tuple[str, dict]:
    """(source, spec) of the generated module for `backend`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (expected one of {', '.join(BACKENDS)})")
    codes = {name: PhaseCode.build(ir.phases[name], cse, ir.randomize_fields) for name in ("reset", "observe", "step")}
    phys_inputs = _phys_inputs(ir)
    spec = build_spec(task, ir, codes, backend, source_file, phys_inputs)
    consts = _Constants()
    for c in codes.values():
        consts.collect([e for _, e in c.elim.temps] + list(c.elim.outputs))

    ops = ", ".join(f"{n} {c.elim.ops_before} -> {c.elim.ops_after}" for n, c in codes.items())
    lines = [
        comment(f"Generated by ksimdsl {__version__} from {source_file or task.source_path} -- do not edit."),
        f"# backend: {backend}",
        f"# ops (sympy count_ops, before -> after CSE): {ops}" if cse else f"# ops (sympy count_ops, no CSE): {ops}",
        "# Regenerate with `ksimdsl compile` (kernels/: `python -m ksimdsl.codegen.refresh`).",
    ]
    if backend == "jax":
        lines.append("import jax.numpy as jnp")
        if consts.indices:
            lines.append("import numpy as np")
    else:
        lines += ["import numpy as np", "from numba import njit"]
    lines += ["", "SPEC = " + pprint.pformat(spec, indent=1, width=110, sort_dicts=False), ""]
    const_lines = consts.lines(backend)
    if const_lines:
        lines += const_lines + [""]
    for name in ("reset", "observe", "step"):
        lines.append("")
        if backend == "jax":
            lines += _render_phase_jax(codes[name], consts, ir)
        else:
            lines += _render_phase_numba(codes[name], consts, ir, spec["numba_args"][name], phys_inputs)
        lines.append("")
    source = "\n".join(lines).rstrip() + "\n"
    return source, spec
