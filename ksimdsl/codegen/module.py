"""Assemble a generated kernel module: header, named constants, three functions, SPEC.

The module layout is the ABI of docs/architecture.md. `render_module` takes
the lowered task (`ksimdsl.ir.program.TaskIR`), runs CSE per phase and prints
the source for one backend:

* JAX: `reset(qpos, qvel, fields, level, rand_n, rand_u)`,
  `observe(phys, action, level, mem, rand_n, rand_u)`,
  `step(phys, action, level, mem, rand_n, rand_u)`, one env per call,
  returning dicts;
* numba: the same three functions batched, `@njit(cache=True, nogil=True,
  error_model="numpy")` (x / 0 is inf or NaN as in JAX, never an exception), a
  `for e in range(E)` loop and positional arrays in the order of
  `SPEC["numba_args"][phase]` (inputs, then preallocated outputs).

The module reads top to bottom like a worked example: a header (origin,
backend, op counts, each phase's inputs, named intermediates and outputs), the
named offsets of the mem slots (`MEM_DELAY_GRAVITY = 32`), the constant arrays
(named after the definition they belong to, with the task line they come
from), the three functions and, last, the `SPEC` literal. Each function starts
with a table of its random draws; inside, shared sub-expressions (`x0, x1,
...`, or a `let` / built-in name) are emitted just before the first output
block that needs them, and each output block (observations, rewards, ...) has
a comment and one named variable per term (`actor_joint_pos`, `reward_alive`,
`done_fell`), preceded by the task line it comes from. Long statements are
wrapped at ~100 characters (`ksimdsl.codegen.layout`).
"""

from __future__ import annotations

import pprint
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import sympy as sp

from ksimdsl import __version__
from ksimdsl.abi import PHYS_FIELDS
from ksimdsl.codegen.jax_printer import JaxPrinter
from ksimdsl.codegen.layout import WIDTH, wrap
from ksimdsl.codegen.names import Constants, MemNames, Quoter, draw_table, fit_comment, table_lines
from ksimdsl.codegen.numba_printer import NumbaPrinter
from ksimdsl.codegen.printer import KernelPrinter, comment
from ksimdsl.codegen.spec import (
    build_spec,
    numba_arg,
    numba_args,
    out_arg_base,
    phase_inputs,
    phase_outputs,
    used_phys_inputs,
)
from ksimdsl.errors import Span
from ksimdsl.ir import vec
from ksimdsl.ir.program import Output, PhaseIR, TaskIR
from ksimdsl.ir.simplify import Eliminated, eliminate

__all__ = ["PhaseCode", "render_module", "numba_arg", "numba_args", "phase_inputs", "phase_outputs", "BACKENDS"]

BACKENDS = ("jax", "numba")

_PHASE_DOCS = {
    "reset": "Start an episode: reset writes, randomized model fields and the initial memory.",
    "observe": "Observations of the current state (memory unchanged).",
    "step": "Observations, rewards, terminations and the next memory after one control step.",
}
#: `observe` of a task with observation histories: it also returns the memory (their older values filled).
_OBSERVE_MEM_DOC = "Observations of the current state, and the memory with the observation histories filled."


def _phase_doc(phase: PhaseIR) -> str:
    if phase.name == "observe" and any(o.key == "mem" for o in phase.outputs):
        return _OBSERVE_MEM_DOC
    return _PHASE_DOCS[phase.name]

#: Names the generated function bodies use for their own inputs.
_RESERVED = {"e", "phys", "fields", "action", "level", "mem", "rand_n", "rand_u", "time", "np", "jnp", "njit"}

_TEMP = re.compile(r"x\d+")


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



@dataclass(frozen=True)
class _Module:
    """What the phase renderers share: the task IR and the module-level names and quotes."""

    ir: TaskIR
    consts: Constants
    mem: MemNames
    quote: Quoter

    def printer(self, code: PhaseCode, backend: str) -> KernelPrinter:
        cls = JaxPrinter if backend == "jax" else NumbaPrinter
        return cls(code.elim.shapes, self.consts.arrays, self.consts.indices, self.mem)


class _Body:
    """Prints the statements of one function body for one backend."""

    def __init__(self, printer: KernelPrinter, module: _Module, indent: str, reserved: set[str]) -> None:
        self.p = printer
        self.module = module
        self.indent = indent
        self.lines: list[str] = []
        self._names = set(reserved)
        self._block: str | None = None
        self._quoted: str | None = None

    def _flush(self) -> None:
        if self._block is not None:
            self.lines += ["", self.indent + self._block]
            self._block = None

    def emit(self, line: str = "") -> None:
        if line:
            self._flush()
        self.lines.append(self.indent + line if line else "")

    def statement(self, prefix: str, expr: str, suffix: str = "") -> None:
        """`prefix + expr + suffix`, wrapped at the line width (leading spaces of `prefix` indent it)."""
        self._flush()
        stripped = prefix.lstrip(" ")
        self.lines += wrap(stripped, expr, suffix, len(self.indent) + len(prefix) - len(stripped))

    def quote(self, span: Span | None) -> bool:
        """Comment with the task line of `span` (once for consecutive statements); False without a span."""
        line = self.module.quote.comment(span, len(self.indent))
        if line is None:
            return False
        if line != self._quoted:
            self.emit(line)
            self._quoted = line
        return True

    def block(self, title: str) -> None:
        """Start a commented block (printed only if a statement follows)."""
        self._block = comment(title)
        self._quoted = None

    def end_blocks(self) -> None:
        """Drop a pending empty block and leave a blank line."""
        self._block = None
        self.lines.append("")

    def expr(self, e: sp.Basic) -> str:
        return self.p.doprint(e)

    def temps(self, code: PhaseCode, indices: Sequence[int]) -> None:
        """The CSE temporaries `indices` (a `let` after its task line)."""
        for i in indices:
            sym, e = code.elim.temps[i]
            self.quote(code.phase.let_spans.get(str(sym)))
            self.statement(f"{sym} = ", self.expr(e))

    def draws(self, phase: PhaseIR) -> None:
        for line in draw_table(phase.draws, self.module.quote, len(self.indent)):
            self.emit(line)

    def var(self, out: Output, seg_label: str, offset: int) -> str:
        """A fresh variable name for an output segment (`actor_joint_pos`)."""
        name = f"{out.prefix}{seg_label}"
        if name in self._names:
            name = f"{name}_{offset}"
        self._names.add(name)
        return name


def _render_phase_jax(code: PhaseCode, module: _Module) -> list[str]:
    phase, ir = code.phase, module.ir
    body = _Body(module.printer(code, "jax"), module, "    ", _local_names(code))
    if phase.name == "reset":
        sig = "def reset(qpos, qvel, fields, level, rand_n, rand_u):"
    else:
        sig = f"def {phase.name}(phys, action, level, mem, rand_n, rand_u):"
    used = phase.input_names()
    body.emit(f'"""{_phase_doc(phase)}"""')
    body.draws(phase)
    if phase.name == "reset":
        for f in ir.randomize_fields:
            flat = ".reshape(-1)" if len(ir.field_shapes[f]) > 1 else ""
            if f in used:
                body.emit(f'{f} = fields["{f}"]{flat}')
    else:
        for name in PHYS_FIELDS:
            if name in used:
                body.emit(f'{name} = phys["{name}"]')
    results: dict[str, str] = {}
    for out, items, temps in zip(phase.outputs, code.reduced, _temp_order(code)):
        body.block(out.title)
        body.temps(code, temps)
        results[out.key] = _jax_output(body, out, items)
    body.end_blocks()
    if phase.name == "reset":
        body.emit("return {")
        for key in ("qpos", "qvel"):
            body.statement(f'    "{key}": ', results[key], ",")
        if ir.randomize_fields:
            body.emit('    "fields": {')
            for f in ir.randomize_fields:
                body.statement(f'        "{f}": ', results[f], ",")
            body.emit("    },")
        else:
            body.emit('    "fields": {},')
        body.statement('    "mem": ', results["mem"], ",")
        body.emit("}")
    else:
        body.emit("return {")
        for k, v in results.items():
            body.statement(f'    "{k}": ', v, ",")
        body.emit("}")
    return [sig] + body.lines


def _jax_output(body: _Body, out: Output, items: Sequence[tuple[sp.Basic, ...]]) -> str:
    """Emit the named terms of one output; returns the expression of the whole output array."""
    pieces: list[str] = []  # printed 1-D arrays
    run: list[str] = []  # pending scalars

    def flush() -> None:
        if run:
            pieces.append(f"jnp.stack([{', '.join(run)}])")
            run.clear()

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
            body.quote(seg.span)
            body.statement(f"{var} = ", f"jnp.stack([{', '.join(comps)}])")
            flush()
            pieces.append(var)
            continue
        text = body.expr(red[0])
        if not inline:
            var = body.var(out, seg.label, seg.offset)
            body.quote(seg.span)
            body.statement(f"{var} = ", text)
            text = var
        if seg.val.size is None:
            run.append(text)
        else:
            flush()
            pieces.append(text)
    dtype = "jnp.bool_" if out.boolean else "jnp.float32"
    if run and not pieces:
        pieces.append(f"jnp.stack([{', '.join(run)}], dtype={dtype})")
        run.clear()
    flush()
    if not pieces:
        value = f"jnp.zeros(0, dtype={dtype})"
    elif len(pieces) == 1:
        value = pieces[0] if pieces[0].startswith("jnp.stack(") else f"jnp.asarray({pieces[0]}, dtype={dtype})"
    else:
        value = "jnp.concatenate([" + ", ".join(pieces) + f"], dtype={dtype})"
    if out.is_field and len(out.full_shape) > 1:
        value = f"({value}).reshape{out.full_shape}"
    return value


def _render_phase_numba(code: PhaseCode, module: _Module, args: Sequence[str], phys_inputs: Sequence[str]) -> list[str]:
    phase, ir = code.phase, module.ir
    body = _Body(module.printer(code, "numba"), module, "    ", _local_names(code) | set(args))
    lines = ['@njit(cache=True, nogil=True, error_model="numpy")']
    lines += wrap(f"def {phase.name}", "(" + ", ".join(args) + ")", ":")
    body.emit(f'"""{_phase_doc(phase)}')
    body.emit("")
    body.emit('Batched over the leading env axis."""')
    body.draws(phase)
    body.emit(f"for e in range({numba_arg('level')}.shape[0]):")
    body.indent = "        "
    used = phase.input_names()
    for name in phase_inputs(phase.name, phys_inputs, ir.randomize_fields):
        if name not in used:
            continue
        arg = numba_arg(name, ir.field_shapes.get(name))
        flat = ".reshape(-1)" if len(ir.field_shapes.get(name, ())) > 1 else ""
        body.emit(f"{name} = {arg}[e]{flat}")
    for out, items, temps in zip(phase.outputs, code.reduced, _temp_order(code)):
        arg = numba_arg(out_arg_base(out.key), out.full_shape if out.is_field else None)
        body.block(out.title)
        body.temps(code, temps)
        if out.is_field and len(out.full_shape) > 1:
            target = f"{out.key}_out"
            body.emit(f"{target} = {arg}[e].reshape(-1)")
            prefix = f"{target}["
        else:
            prefix = f"{arg}[e, "
        index = module.mem.index if out.key == "mem" else str
        span = module.mem.range if out.key == "mem" else lambda a, b: f"{a}:{b}"
        for seg, red in zip(out.segments, items):
            if seg.label and not body.quote(seg.span) and out.key != "mem":
                body.emit(comment(seg.label))
            if seg.val.size is not None and seg.val.size <= vec.SMALL:
                for k, r in enumerate(red):
                    body.statement(f"{prefix}{index(seg.offset + k)}] = ", body.expr(r))
            elif seg.val.size is None:
                body.statement(f"{prefix}{index(seg.offset)}] = ", body.expr(red[0]))
            else:
                body.statement(f"{prefix}{span(seg.offset, seg.offset + seg.size)}] = ", body.expr(red[0]))
    return lines + body.lines


def _local_names(code: PhaseCode) -> set[str]:
    return {str(s) for s, _ in code.elim.temps} | _RESERVED | _phys_names()


# --------------------------------------------------------------------------- module


def _comment_list(label: str, items: Sequence[str]) -> list[str]:
    """`#   label: a, b, c` wrapped at the line width (every item escaped)."""
    out: list[str] = []
    line = f"  {label}:"
    for k, item in enumerate(items):
        piece = f" {item}" + ("," if k < len(items) - 1 else "")
        if len(comment(line + piece)) > WIDTH and line.strip():
            out.append(comment(line))
            line = "   "
        line += piece
    out.append(fit_comment(comment(line), 0))
    return out


def _phase_summary(code: PhaseCode, ir: TaskIR, phys_inputs: Sequence[str]) -> list[str]:
    """Header lines naming a phase's inputs, named intermediates and outputs."""
    phase = code.phase
    used = phase.input_names()
    ins = [n for n in phase_inputs(phase.name, phys_inputs, ir.randomize_fields) if n in used]
    ins = [f"{n}[{phase.rand_normal if n == 'rand_n' else phase.rand_uniform}]" if n.startswith("rand_") else n for n in ins]
    named = [str(s) for s, _ in code.elim.temps if not _TEMP.fullmatch(str(s))]
    outs = [f"{o.key}[{o.size}]" for o in phase.outputs]
    lines = [f"# {phase.name}:"]
    lines += _comment_list("inputs", ins or ["(none)"])
    if named:
        lines += _comment_list("named intermediates", named)
    lines += _comment_list("outputs", outs)
    return lines


def render_module(task: Any, ir: TaskIR, *, backend: str, cse: bool = True, source_file: str = "") -> tuple[str, dict]:
    """(source, spec) of the generated module for `backend`."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (expected one of {', '.join(BACKENDS)})")
    codes = {name: PhaseCode.build(ir.phases[name], cse, ir.randomize_fields) for name in ("reset", "observe", "step")}
    phys_inputs = used_phys_inputs(ir)
    spec = build_spec(task, ir, codes, backend, source_file, phys_inputs)
    used: set[str] = set().union(*(_local_names(c) for c in codes.values()), ir.randomize_fields)
    used |= {t.name for t in ir.tables}  # the reference's frame tables keep their names
    mem = MemNames(ir.mem_slots, used)
    origins: dict[object, Any] = {}
    for c in codes.values():
        origins.update({k: v for k, v in c.phase.origins.items() if k not in origins})
    consts = Constants(origins, used)
    for c in codes.values():
        consts.collect([e for _, e in c.elim.temps] + list(c.elim.outputs))
    shown = source_file or task.source_path
    module = _Module(ir, consts, mem, Quoter(shown, getattr(task, "source_text", "")))

    ops = ", ".join(f"{n} {c.elim.ops_before} -> {c.elim.ops_after}" for n, c in codes.items())
    lines = [
        comment(f"Generated by ksimdsl {__version__} from {shown} -- do not edit."),
        f"# backend: {backend}",
        f"# ops (sympy count_ops, before -> after CSE): {ops}" if cse else f"# ops (sympy count_ops, no CSE): {ops}",
        "# Regenerate with `ksimdsl compile` (kernels/: `python -m ksimdsl.codegen.refresh`).",
        "#",
    ]
    for c in codes.values():
        lines += _phase_summary(c, ir, phys_inputs)
    lines.append("# SPEC, the task's description for the runtime, is the literal at the end of the module.")
    if backend == "jax":
        lines.append("import jax.numpy as jnp")
        if consts.indices:
            lines.append("import numpy as np")
    else:
        lines += ["import numpy as np", "from numba import njit"]
    lines += ["", *mem.lines(module.quote, ir.mem_size)]
    const_lines = consts.lines(backend, module.quote)
    if const_lines:
        lines += ["", *const_lines]
    for table in ir.tables:
        lines += ["", *table_lines(table, backend, module.quote)]
    lines.append("")
    for name in ("reset", "observe", "step"):
        lines.append("")
        if backend == "jax":
            lines += _render_phase_jax(codes[name], module)
        else:
            lines += _render_phase_numba(codes[name], module, spec["numba_args"][name], phys_inputs)
        lines.append("")
    lines += [
        "",
        "# The task for the runtime (schema: `ksimdsl.abi.TaskSpec.from_dict`); a plain literal, read without",
        "# running this module when a run is resumed.",
        "SPEC = " + pprint.pformat(spec, indent=1, width=WIDTH, compact=True, sort_dicts=False),
    ]
    source = "\n".join(lines).rstrip() + "\n"
    return source, spec
