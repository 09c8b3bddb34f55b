"""Hover: the type, shape and unit of an expression, built-in documentation, and MJCF names."""

from __future__ import annotations

from dataclasses import dataclass

from ksimdsl.errors import Span
from ksimdsl.frontend import ast
from ksimdsl.frontend import builtins as bi
from ksimdsl.frontend import typed as t
from ksimdsl.lsp import modelnames
from ksimdsl.lsp.analysis import Analysis
from ksimdsl.lsp.symbols import SymbolIndex
from ksimdsl.lsp.syntax import Pos, contains, nodes_at
from ksimdsl.lsp.units import unit_of

__all__ = ["Hover", "hover", "function_signature", "type_text"]


@dataclass(frozen=True)
class Hover:
    markdown: str
    span: Span


def function_signature(name: str) -> str:
    """`tolerance(x, lo=0, hi=0, margin=0, sigmoid=gaussian, value_at_margin=0.1)` and the like."""
    if name in bi.FUNCTIONS:
        parts = []
        for p in bi.FUNCTIONS[name].params:
            if p.required:
                parts.append(p.name)
            elif p.default is None:
                parts.append(f"[{p.name}]")
            else:
                d = p.default
                parts.append(f"{p.name}={d:g}" if isinstance(d, float) else f"{p.name}={d}")
        return f"{name}({', '.join(parts)})"
    if name in bi.DISTRIBUTIONS:
        return "uniform(a) | uniform(lo, hi)" if name == "uniform" else "gaussian(std) | gaussian(mean, std)"
    if name in ("contact", "contact_force"):
        return f'{name}(a, b)  # a, b: geom/body name, glob or ["name", ...]'
    if name == "height_scan":
        return 'height_scan("body_name", grid=[nx, ny], spacing=S)'
    if name in bi.LOOKUPS:
        return f'{name}("{bi.LOOKUPS[name]}_name")'
    if name == "prev":
        return "prev(x)"
    return name


def builtin_doc(name: str) -> str | None:
    """The documentation line of a built-in name, or None."""
    if name in bi.FUNCTIONS:
        return bi.FUNCTIONS[name].doc
    if name in bi.QUANTITIES:
        return bi.QUANTITIES[name]
    if name in bi.DISTRIBUTIONS:
        return ("uniform draw in [lo, hi] (uniform(a): [-a, a])" if name == "uniform"
                else "gaussian draw (gaussian(s): mean 0, std s)")
    if name in bi.LOOKUPS:
        kind = bi.LOOKUPS[name]
        what = {
            "sensor": "the sensor's reading",
            "contact": "true where the geoms touch",
            "contact_force": "normal contact force between the geoms",
            "height_scan": "height of the body above the ground on an nx x ny grid under it (turned with its yaw)",
        }.get(name, name.replace("_", " ") + f" of a {kind}")
        return f"model lookup: {what}"
    if name == "prev":
        return "the value of x one control step earlier (x itself on the first step)"
    if name == "cmd":
        return "the commands: cmd.NAME"
    return None


def type_text(e: t.Expr, an: Analysis) -> str:
    unit = unit_of(e, an.model)
    return f"{e.type}" + (f" {unit}" if unit else "")


def _source_text(an: Analysis, span: Span) -> str:
    if span.line != span.end_line:
        return ""
    lines = an.lines
    return lines[span.line - 1][span.col - 1 : span.end_col - 1] if span.line <= len(lines) else ""


def _code(text: str) -> str:
    return f"```ksim\n{text}\n```"


def _typed_in_chain(an: Analysis, chain: list[object]) -> t.Expr | None:
    for node in reversed(chain):
        typed = an.typed_by_span.get(getattr(node, "span", None))  # type: ignore[arg-type]
        if typed is not None:
            return typed
    return None


def _decl_hover(an: Analysis, index: SymbolIndex, pos: Pos) -> Hover | None:
    for sym in index.symbols:
        if not contains(sym.name_span, pos, end_inclusive=True):
            continue
        task, typ = an.typed_task, ""
        if task is not None:
            if sym.kind == "let":
                d = next((x for x in task.lets if x.name == sym.name), None)
                typ = type_text(d.value, an) if d else ""
            elif sym.kind == "state":
                s = next((x for x in task.states if x.name == sym.name), None)
                typ = type_text(t.Let(s.name, s.update, s.type), an) if s else ""
            elif sym.kind == "observation":
                items = task.obs_actor if sym.group == "actor" else task.obs_critic
                o = next((x for x in items if x.name == sym.name), None)
                typ = type_text(o.value, an) if o else ""
            elif sym.kind == "reward":
                r = next((x for x in task.rewards if x.name == sym.name), None)
                typ = type_text(r.value, an) if r else ""
            elif sym.kind == "metric":
                mt = next((x for x in task.metrics if x.name == sym.name), None)
                typ = type_text(mt.value, an) if mt else ""
            elif sym.kind == "command":
                c = next((x for x in task.commands if x.name == sym.name), None)
                typ = f"vector[{len(c.fields)}] ({', '.join(f.name for f in c.fields)})" if c else ""
        head = f"{sym.kind.replace('_', ' ')} {sym.name}" + (f": {typ}" if typ else "")
        return Hover(_code(head), sym.name_span)
    return None


def _string_hover(an: Analysis, chain: list[object], node: ast.Str) -> Hover | None:
    kind = modelnames.string_kind(chain)
    if kind is None or an.model is None:
        return None
    labels: tuple[str, ...] = ()
    parent = chain[-2]
    if isinstance(parent, ast.Index):
        labels = modelnames.labels_of(an.typed_by_span.get(parent.base.span))
    return Hover(modelnames.describe_match(an.model, kind, node.value, labels), node.span)


def _model_hover(an: Analysis, stmt: ast.ModelStmt) -> Hover:
    if an.model is None:
        return Hover(f"model `{stmt.path}` does not load (see the diagnostic)", stmt.path_span)
    m = an.model
    text = (f"`{an.model_path}`\n\n{m.model.njnt} joints, {m.nbody} bodies, {m.model.ngeom} geoms, "
            f"{m.nu} actuators, {m.model.nsensor} sensors; nq={m.nq}, nv={m.nv}"
            + (", free root" if m.root is not None else ""))
    return Hover(text, stmt.path_span)


_SETTING_TABLES = {
    "physics": bi.PHYSICS_SETTINGS,
    "train": bi.TRAIN_SETTINGS,
    "policy": bi.POLICY_SETTINGS,
    "command": bi.COMMAND_SETTINGS,
}
_KIND_TEXT = {"time": "a duration (with a unit: 5ms, 0.02s)", "int_list": "an int or [int, ...]",
              "policy_dist": "normal | mixture(k)", "name": "one of"}


def _settings_of(st: ast.Statement) -> tuple[str, tuple[ast.Setting, ...]]:
    if isinstance(st, ast.SettingsStmt):
        return st.keyword, st.settings
    if isinstance(st, (ast.PolicyStmt, ast.ActuatorsStmt, ast.CurriculumStmt)):
        head = {ast.PolicyStmt: "policy", ast.ActuatorsStmt: "actuators", ast.CurriculumStmt: "curriculum"}[type(st)]
        return f"{head} {st.kind}", st.settings
    if isinstance(st, ast.CommandStmt):
        return "command", st.settings
    return "", ()


def _setting_hover(module: ast.Module, pos: Pos) -> Hover | None:
    for st in module.statements:
        where, settings = _settings_of(st)
        for s in settings:
            if not contains(s.key_span, pos, end_inclusive=True):
                continue
            spec = _SETTING_TABLES.get(where.split()[0], {}).get(s.key)
            if spec is not None:
                what = _KIND_TEXT.get(spec.kind, f"{'an' if spec.kind[0] in 'aeiou' else 'a'} {spec.kind}")
                if spec.choices:
                    what += " " + " | ".join(spec.choices)
                if spec.minimum is not None:
                    what += f", at least {spec.minimum:g}"
            elif where.startswith("actuators") and s.key in bi.ACTUATOR_KINDS.get(where.split()[1], {}):
                default = bi.ACTUATOR_KINDS[where.split()[1]][s.key]
                what = "a float" + (", required" if default is None else f", default {default:g}")
            elif where.startswith("curriculum"):
                d = bi.CURRICULUM_DEFAULTS.get(where.split()[1], {}).get(s.key)
                what = "a number" + (f", default {d:g}" if d is not None else "")
            else:
                return None
            return Hover(f"`{where}` setting `{s.key}`: {what}", s.key_span)
    return None


def _keyword_hover(chain: list[object], pos: Pos) -> Hover | None:
    """`margin=` in `tolerance(x, margin=2)`: the parameter and its default."""
    call = next((n for n in reversed(chain) if isinstance(n, ast.Call)), None)
    if call is None or call.func not in bi.FUNCTIONS:
        return None
    for kw in call.kwargs:
        name_end = Span(kw.span.line, kw.span.col, kw.span.line, kw.span.col + len(kw.name))
        if contains(name_end, pos, end_inclusive=True):
            p = next((p for p in bi.FUNCTIONS[call.func].params if p.name == kw.name), None)
            if p is None:
                return None
            default = "required" if p.required else f"default {p.default}"
            extra = f": {' | '.join(bi.TOLERANCE_SIGMOIDS)}" if p.mode else ""
            return Hover(f"{_code(function_signature(call.func))}\n\n`{kw.name}` ({default}){extra}", name_end)
    return None


def hover(an: Analysis, index: SymbolIndex, pos: Pos) -> Hover | None:
    """The hover at 1-based `pos`, or None."""
    module = an.module
    if module is None:
        return None
    for st in module.statements:
        if isinstance(st, ast.ModelStmt) and contains(st.path_span, pos):
            return _model_hover(an, st)
    decl = _decl_hover(an, index, pos) or _setting_hover(module, pos)
    if decl is not None:
        return decl
    chain = nodes_at(module, pos)
    kw = _keyword_hover(chain, pos) if chain else None
    if kw is not None or not chain:
        return kw
    node = chain[-1]
    typed = _typed_in_chain(an, chain)
    if isinstance(node, ast.Str):
        return _string_hover(an, chain, node)
    doc: str | None = None
    span = getattr(node, "span")
    if isinstance(node, ast.Call) and contains(node.func_span, pos, end_inclusive=True):
        doc = f"{_code(function_signature(node.func))}\n\n{builtin_doc(node.func) or ''}"
        if typed is not None:
            doc += f"\n\nresult: `{type_text(typed, an)}`"
        return Hover(doc.strip(), node.func_span)
    if isinstance(node, ast.Attr) and isinstance(node.base, ast.Name) and node.base.id == "cmd":
        span = node.name_span if contains(node.name_span, pos) else node.span
        cmd = next((s for s in module.statements if isinstance(s, ast.CommandStmt) and s.name == node.name), None)
        if cmd is not None:
            doc = "fields: " + ", ".join(f.name for f in cmd.fields)
    elif isinstance(node, ast.Name):
        doc = builtin_doc(node.id)
        let = next((s for s in module.statements if isinstance(s, ast.LetStmt) and s.name == node.id), None)
        if let is not None:
            doc = _code(f"let {let.name} = {_source_text(an, let.value.span) or '...'}")
    elif isinstance(node, ast.Num) and node.unit and isinstance(typed, t.Const):
        unit = {"deg": " rad", "s": " s", "ms": " s", "m": " m"}.get(node.unit, " steps")
        doc = f"{_source_text(an, node.span)} = {typed.value:.6g}{unit}"
    text = _source_text(an, span)
    parts = []
    if typed is not None:
        parts.append(_code(f"{text or type(node).__name__}: {type_text(typed, an)}"))
    elif text:
        parts.append(_code(text))
    if doc:
        parts.append(doc)
    if not parts:
        return None
    return Hover("\n\n".join(parts), span)
