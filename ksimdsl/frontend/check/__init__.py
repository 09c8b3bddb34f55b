"""The semantic checker: `ast.Module` -> `typed.CheckedTask`.

Resolves every name against the MJCF model, gives every expression a static
type and shape, folds units, validates settings, and reports every independent
error it finds (`errors.DiagnosticSink`) as `FILE:LINE:COL: error: ...`.

Entry points: `check_module`, `check_source`, `check_file`.

Visibility rules: a `let` name is usable after its declaration (textual
order); a `state` name after its declaration, and inside every state's
update (updates read pre-update values, so states may refer to each other);
commands (`cmd.NAME`) anywhere.

The checker is split by concern into parts that share one `context.Context`:
`driver` (statement order, the model), `settings` (every `key=value`),
`declarations` (let, state, command), `outputs` (observe, reward, terminate),
`writes` (randomize, reset, event), `actuators`, `exprs` (names and
operators), `calls` (functions, prev, distributions), `selection`
(swizzles, indices, globs), `lookups` (quantities and model lookups),
`shapes` (broadcasting, static contexts), `consts` and `folding` (constants,
durations), `units` (unit agreement) and `names` (did-you-mean for MJCF names).

Anything that goes wrong here that is not the user's fault surfaces as an
`InternalCompilerError`.
"""

from __future__ import annotations

from typing import Any, Mapping

from ksimdsl.errors import InternalCompilerError, KsimError, Source
from ksimdsl.frontend import ast
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.check.context import Context, Reported
from ksimdsl.frontend.check.driver import Checker
from ksimdsl.frontend.model_info import ModelInfo

__all__ = ["check_module", "check_source", "check_file", "composed_model"]


def check_module(
    module: ast.Module,
    source: Source,
    *,
    model_path: str | None = None,
    physics: Mapping[str, Any] | None = None,
) -> t.CheckedTask:
    """Check a parsed task against its MJCF model.

    `model_path` overrides the task's `model` line (relative to the current
    directory, or `pkg:...`). `physics` overrides `physics` settings (dt and
    ctrl_dt in seconds, solver, iterations, ls_iterations) as `ksimdsl train
    key=value` does: everything derived from ctrl_dt (episode steps, timers,
    `ctrl_dt` in expressions) follows. Raises KsimError with every independent error.
    """
    cx = Context.build(module, source, model_path, physics or {})
    try:
        return Checker(cx).run()
    except (KsimError, InternalCompilerError):
        raise
    except Reported:  # an item error escaped its `attempt`; still report it faithfully
        cx.raise_errors()
        raise InternalCompilerError("an error was signalled without a diagnostic") from None
    except Exception as e:  # a crash in the checker is our bug, never the user's
        raise InternalCompilerError(f"the checker crashed: {type(e).__name__}: {e}") from e


def check_source(
    source: Source, *, model_path: str | None = None, physics: Mapping[str, Any] | None = None
) -> t.CheckedTask:
    """Parse and check the text of a task file."""
    from ksimdsl.frontend.parse import parse_source

    return check_module(parse_source(source), source, model_path=model_path, physics=physics)


def check_file(
    path: str, *, model_path: str | None = None, physics: Mapping[str, Any] | None = None
) -> t.CheckedTask:
    """Read, parse and check a `.ksim` file."""
    from ksimdsl.frontend.parse import read_source

    return check_source(read_source(path), model_path=model_path, physics=physics)


def composed_model(module: ast.Module, source: Source) -> ModelInfo | None:
    """The model of a (possibly broken) task's `model` line, composed as its `model` block and
    `actuators ... joints=` describe, for editors; None when it does not load or compose."""
    cx = Context.build(module, source, None, {})
    checker = Checker(cx)
    try:
        singles = checker.collect_statements()
        summary = checker.load_model(singles.get("model"), singles.get("actuators"))
    except Exception:  # noqa: BLE001 - a convenience for a file with errors
        return None
    return cx.info if summary is not None else None
