"""One analysis of one document: parse, check, and what the editor features read.

`analyze(path, text)` runs exactly what `ksimdsl check` runs (`parse_source`
then `check_module`), so the diagnostics are the same messages and spans. It
also keeps what hover, completion and navigation need when the file has
errors: a partial syntax tree (statements that do not parse are blanked and
the rest parsed again) and the MJCF model named on the `model` line.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from ksimdsl.errors import Diagnostic, InternalCompilerError, KsimError, Source, Span
from ksimdsl.frontend import ast
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.check import check_module, composed_model
from ksimdsl.frontend.model_info import ModelInfo, ModelLoadError, load_model_info, resolve_model_path
from ksimdsl.frontend.parse import parse_source

__all__ = ["Analysis", "analyze", "tolerant_parse", "partial_check", "typed_roots"]

#: How many rounds of blanking broken statements a partial parse tries.
_MAX_BLANK_ROUNDS = 8
#: How many rounds of leaving out items with errors a partial check tries.
_MAX_DROP_ROUNDS = 3
#: Statements a check cannot do without.
_REQUIRED = (ast.TaskStmt, ast.ModelStmt)


@dataclass(frozen=True, eq=False)
class Analysis:
    """The result of checking one version of a document (read-only)."""

    path: str
    text: str
    version: int | None
    module: ast.Module | None  # the syntax tree; partial when the file has syntax errors
    checked: t.CheckedTask | None  # None when the file has errors
    partial: t.CheckedTask | None  # the check of the items without errors (hover types), or None
    diagnostics: tuple[Diagnostic, ...]
    model: ModelInfo | None  # the model of the `model` line, when it loads
    model_path: str | None  # its resolved file path
    model_mtime_ns: int | None
    typed_by_span: dict[Span, t.Expr] = field(default_factory=dict)

    @property
    def typed_task(self) -> t.CheckedTask | None:
        """The checked task, or the partial one of a file with errors."""
        return self.checked or self.partial

    @property
    def lines(self) -> list[str]:
        """The lines as the parser counts them (split at \\n only; a trailing \\r dropped)."""
        return [ln.removesuffix("\r") for ln in self.text.split("\n")]


def _statement_starts(lines: list[str]) -> list[int]:
    """0-based indices of the lines that begin a top-level statement."""
    return [i for i, ln in enumerate(lines) if ln[:1] not in ("", " ", "\t", "#")]


def _blank_statement(lines: list[str], line0: int) -> bool:
    """Blank the statement holding 0-based line `line0` (keeping the line count); False if nothing changed."""
    starts = _statement_starts(lines)
    first = max((s for s in starts if s <= line0), default=0)
    last = min((s for s in starts if s > line0), default=len(lines))
    changed = False
    for i in range(first, max(last, first + 1)):
        if i < len(lines) and lines[i].strip():
            lines[i] = ""
            changed = True
    return changed


def tolerant_parse(source: Source) -> tuple[ast.Module | None, KsimError | None]:
    """The syntax tree and the parse error; on an error, the tree of the statements that parse."""
    try:
        return parse_source(source), None
    except KsimError as err:
        first_err = err
    lines = source.text.split("\n")
    err = first_err
    for _ in range(_MAX_BLANK_ROUNDS):
        changed = False
        for d in err.diagnostics:
            if d.span is not None:
                changed |= _blank_statement(lines, d.span.line - 1)
        if not changed:
            return None, first_err
        try:
            return parse_source(Source(source.path, "\n".join(lines))), first_err
        except KsimError as again:
            err = again
        except Exception:  # noqa: BLE001 - a partial tree is a convenience, never a reason to fail
            return None, first_err
    return None, first_err


def _load_model(
    module: ast.Module | None, source: Source, typed: t.CheckedTask | None
) -> tuple[ModelInfo | None, str | None, int | None]:
    """The model of the `model` line, composed as the task composes it (its imu sensors, floor, motors)."""
    stmt = next((s for s in module.statements if isinstance(s, ast.ModelStmt)), None) if module else None
    if stmt is None or module is None:
        return None, None, None
    try:
        resolved = resolve_model_path(stmt.path, os.path.dirname(os.path.abspath(source.path)))
        if typed is not None:
            info = load_model_info(resolved, typed.model.composition)
        else:
            info = composed_model(module, source) or load_model_info(resolved)
        return info, resolved, os.stat(resolved).st_mtime_ns
    except (ModelLoadError, OSError):
        return None, None, None


def _hit(node: object, spans: list[Span]) -> bool:
    sp = getattr(node, "span", None)
    return sp is not None and any(sp.merge(e) == sp for e in spans)


def _keep(items: tuple, spans: list[Span]) -> tuple:
    return tuple(i for i in items if not _hit(i, spans))


def _drop_items(module: ast.Module, spans: list[Span]) -> ast.Module | None:
    """`module` without the items (terms, observations, assignments, declarations) holding an error span."""
    out: list[ast.Statement] = []
    for st in module.statements:
        if not _hit(st, spans):
            out.append(st)
            continue
        if isinstance(st, _REQUIRED):
            return None
        new: ast.Statement | None = None
        if isinstance(st, ast.ActuatorsStmt):
            if any(_hit(s, spans) for s in st.settings) or _hit(st.latency, spans) or _hit(st.zero_offset, spans):
                return None
            new = dataclasses.replace(st, overrides=_keep(st.overrides, spans))
        elif isinstance(st, ast.ObserveStmt):
            new = dataclasses.replace(st, items=_keep(st.items, spans))
        elif isinstance(st, ast.RewardStmt):
            new = dataclasses.replace(st, terms=_keep(st.terms, spans))
        elif isinstance(st, ast.TerminateStmt):
            new = dataclasses.replace(st, terms=_keep(st.terms, spans))
        elif isinstance(st, ast.MetricStmt):
            new = dataclasses.replace(st, items=_keep(st.items, spans))
        elif isinstance(st, (ast.RandomizeStmt, ast.ResetStmt)):
            new = dataclasses.replace(st, assigns=_keep(st.assigns, spans))
        if new is not None and any(getattr(new, f, ()) for f in ("overrides", "items", "terms", "assigns")):
            out.append(new)
        elif isinstance(new, ast.ActuatorsStmt):
            out.append(new)
    return ast.Module(tuple(out), module.path)


def partial_check(module: ast.Module, source: Source, diagnostics: tuple[Diagnostic, ...]) -> t.CheckedTask | None:
    """A check of `module` without the items that have errors (for hover types while a file is broken)."""
    for _ in range(_MAX_DROP_ROUNDS):
        spans = [d.span for d in diagnostics if d.span is not None]
        if len(spans) != len(diagnostics):
            return None  # a file-level error: nothing to leave out
        smaller = _drop_items(module, spans)
        if smaller is None or len(smaller.statements) == 0:
            return None
        module = smaller
        try:
            return check_module(module, source)
        except KsimError as err:
            diagnostics = err.diagnostics
        except Exception:  # noqa: BLE001 - types for hover are a convenience
            return None
    return None


def _check_partial_tree(module: ast.Module, source: Source) -> t.CheckedTask | None:
    """Types of a tree whose broken statements were blanked."""
    try:
        return check_module(module, source)
    except KsimError as err:
        return partial_check(module, source, err.diagnostics)
    except Exception:  # noqa: BLE001
        return None


def typed_roots(task: t.CheckedTask) -> list[t.Expr]:
    """Every typed expression tree of a checked task."""
    roots: list[t.Expr | None] = [d.value for d in task.lets]
    for s in task.states:
        roots += [s.init, s.update]
    for c in task.commands:
        roots += [f.value for f in c.fields]
    for o in (*task.obs_actor, *task.obs_critic):
        roots += [o.value, o.noise, o.bias]
    for r in task.rewards:
        roots += [r.weight, r.value]
    roots += [term.cond for term in task.terminations]
    roots += [m.value for m in task.metrics]
    roots += [r.value for r in task.randomize]
    roots += [w.value for w in task.reset]
    for e in task.events:
        roots += [e.every, *(w.value for w in e.writes)]
    roots.append(task.actuators.zero_offset)
    return [r for r in roots if r is not None]


def _index_typed(task: t.CheckedTask) -> dict[Span, t.Expr]:
    """Span -> the outermost typed node with exactly that span."""
    out: dict[Span, t.Expr] = {}
    seen: set[int] = set()
    for root in typed_roots(task):
        stack = [root]
        while stack:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            if n.span is not None and n.span not in out:
                out[n.span] = n
            if isinstance(n, t.Let):
                continue  # its value is indexed from its definition
            stack.extend(reversed(t.children(n)))
    return out


def analyze(path: str, text: str, version: int | None = None) -> Analysis:
    """Parse and check `text` as the task file `path` (its model resolves relative to it)."""
    source = Source(path, text)
    module, parse_err = tolerant_parse(source)
    checked: t.CheckedTask | None = None
    diagnostics: tuple[Diagnostic, ...]
    if parse_err is not None:
        diagnostics = parse_err.diagnostics
    else:
        assert module is not None
        try:
            checked = check_module(module, source)
            diagnostics = ()
        except KsimError as err:
            diagnostics = err.diagnostics
        except InternalCompilerError as err:
            diagnostics = (Diagnostic(str(err), None, source),)
    partial = None
    if checked is None and module is not None:
        if parse_err is not None:
            partial = _check_partial_tree(module, source)
        else:
            partial = partial_check(module, source, diagnostics)
    typed = checked or partial
    model, model_path, mtime = _load_model(module, source, typed)
    return Analysis(
        path=path,
        text=text,
        version=version,
        module=module,
        checked=checked,
        partial=partial,
        diagnostics=diagnostics,
        model=model,
        model_path=model_path,
        model_mtime_ns=mtime,
        typed_by_span=_index_typed(typed) if typed is not None else {},
    )
