"""What every part of the checker shares: the task being checked, the error
sink, the name tables and the parts themselves.

The checker is a handful of small objects (`Part`s), one per concern, that
reach each other through one `Context`: `cx.exprs.expr(...)` types an
expression, `cx.consts.const_int(...)` folds a constant, `cx.settings`
validates `key=value` settings, and so on. `Context.build` wires them up.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterable, Mapping, NoReturn, TypeVar, get_args

from ksimdsl import abi
from ksimdsl.errors import DiagnosticSink, InternalCompilerError, KsimError, Source, Span
from ksimdsl.frontend import ast
from ksimdsl.frontend import typed as t
from ksimdsl.frontend.check.folding import fold_dag
from ksimdsl.frontend.model_info import ModelInfo

if TYPE_CHECKING:  # the parts import this module
    from ksimdsl.frontend.check.actuators import ActuatorChecker
    from ksimdsl.frontend.check.amp import AmpChecker
    from ksimdsl.frontend.check.calls import Calls
    from ksimdsl.frontend.check.compose import ComposeChecker
    from ksimdsl.frontend.check.consts import Consts
    from ksimdsl.frontend.check.declarations import Declarations
    from ksimdsl.frontend.check.exprs import Exprs
    from ksimdsl.frontend.check.heightscan import HeightScans
    from ksimdsl.frontend.check.lookups import Lookups
    from ksimdsl.frontend.check.outputs import Outputs
    from ksimdsl.frontend.check.reference import References
    from ksimdsl.frontend.check.selection import Selection
    from ksimdsl.frontend.check.settings import Settings
    from ksimdsl.frontend.check.shapes import Shapes
    from ksimdsl.frontend.check.units import Units
    from ksimdsl.frontend.check.writes import Writes

__all__ = ["Reported", "Ctx", "LetEntry", "StateEntry", "StructuralKeys", "Context", "Part", "fmt_num"]


_T = TypeVar("_T")


class Reported(Exception):
    """An error was recorded in the sink; abandon the current item and go on with the next."""


@dataclass(frozen=True)
class Ctx:
    """Where an expression is being checked.

    `what` names the place in messages ("reward 'alive'"); `allow_dist` allows
    distributions; `state_update` makes every state visible.
    """

    what: str
    allow_dist: bool = False
    state_update: bool = False


@dataclass
class LetEntry:
    span: Span
    value: t.Expr | None = None  # None while pending or after an error
    failed: bool = False


@dataclass(frozen=True)
class StateEntry:
    type: t.Type
    span: Span


def fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


_EXPR_TYPES = tuple(get_args(t.Expr))


class StructuralKeys:
    """Keys that are equal exactly for equal typed expressions (spans aside), computed in linear time.

    Hashing a typed expression hashes its whole tree, once per path to every
    node: exponential for lets that use each other twice. Here every distinct
    node gets a small integer once (memoized by identity, iterative).
    """

    def __init__(self) -> None:
        self._memo: dict[int, tuple[t.Expr, int]] = {}  # id -> (node kept alive, key)
        self._interned: dict[tuple, int] = {}

    def __call__(self, e: t.Expr) -> int:
        return fold_dag(e, self._memo, t.children, self._key)

    def _key(self, node: t.Expr, _: list[int]) -> int:
        shape = (type(node), *(self._field(getattr(node, f.name)) for f in dataclasses.fields(node) if f.compare))
        return self._interned.setdefault(shape, len(self._interned))

    def _field(self, value: Any) -> Hashable:
        if isinstance(value, _EXPR_TYPES):
            return ("expr", self._memo[id(value)][1])
        if isinstance(value, tuple) and value and isinstance(value[0], _EXPR_TYPES):
            return ("exprs", tuple(self._memo[id(v)][1] for v in value))
        return value


class Context:
    """The state of one check: the module, the sink, the model, the name tables and the parts."""

    def __init__(self, module: ast.Module, source: Source, model_path: str | None, physics: Mapping[str, Any]):
        self.module = module
        self.source = source
        self.model_path_override = model_path
        self.physics_overrides = dict(physics)
        self.sink = DiagnosticSink(source)
        self.info: ModelInfo | None = None
        self.ctrl_dt = float(abi.DEFAULT_PHYSICS["ctrl_dt"])
        self.action_size = 0
        self.lets: dict[str, LetEntry] = {}
        self.let_defs: list[t.LetDef] = []
        self.states: dict[str, StateEntry] = {}
        self.commands: dict[str, tuple[str, ...]] = {}
        self.prev_slots: dict[Hashable, tuple[t.Expr, int]] = {}  # structural key -> (expr, slot)
        self.keys = StructuralKeys()
        self.contact_queries: dict[t.ContactQuery, int] = {}
        self.height_scans: dict[t.HeightScanQuery, int] = {}  # query -> offset of its points
        self.ground_geoms: tuple[int, ...] | None = None  # found by the first height_scan()
        # the parts, set by `build`
        self.settings: Settings
        self.consts: Consts
        self.units: Units
        self.actuators: ActuatorChecker
        self.compose: ComposeChecker
        self.decls: Declarations
        self.outputs: Outputs
        self.writes: Writes
        self.shapes: Shapes
        self.exprs: Exprs
        self.select: Selection
        self.calls: Calls
        self.lookups: Lookups
        self.reference: References
        self.heights: HeightScans
        self.amp: AmpChecker

    @classmethod
    def build(cls, module: ast.Module, source: Source, model_path: str | None, physics: Mapping[str, Any]) -> "Context":
        from ksimdsl.frontend.check.actuators import ActuatorChecker
        from ksimdsl.frontend.check.amp import AmpChecker
        from ksimdsl.frontend.check.calls import Calls
        from ksimdsl.frontend.check.compose import ComposeChecker
        from ksimdsl.frontend.check.consts import Consts
        from ksimdsl.frontend.check.declarations import Declarations
        from ksimdsl.frontend.check.exprs import Exprs
        from ksimdsl.frontend.check.heightscan import HeightScans
        from ksimdsl.frontend.check.lookups import Lookups
        from ksimdsl.frontend.check.outputs import Outputs
        from ksimdsl.frontend.check.reference import References
        from ksimdsl.frontend.check.selection import Selection
        from ksimdsl.frontend.check.settings import Settings
        from ksimdsl.frontend.check.shapes import Shapes
        from ksimdsl.frontend.check.units import Units
        from ksimdsl.frontend.check.writes import Writes

        cx = cls(module, source, model_path, physics)
        cx.settings = Settings(cx)
        cx.consts = Consts(cx)
        cx.units = Units(cx)
        cx.actuators = ActuatorChecker(cx)
        cx.compose = ComposeChecker(cx)
        cx.decls = Declarations(cx)
        cx.outputs = Outputs(cx)
        cx.writes = Writes(cx)
        cx.shapes = Shapes(cx)
        cx.select = Selection(cx)
        cx.calls = Calls(cx)
        cx.lookups = Lookups(cx)
        cx.reference = References(cx)
        cx.heights = HeightScans(cx)
        cx.amp = AmpChecker(cx)
        cx.exprs = Exprs(cx)  # last: it binds the typers of the other parts
        return cx

    # ----------------------------------------------------------------- error plumbing

    def fail(self, span: Span | None, message: str, *notes: str) -> NoReturn:
        self.sink.error(span, message, *notes)
        raise Reported

    def raise_errors(self) -> None:
        """Raise every recorded error, in source order (file-level ones first)."""
        diags = self.sink.diagnostics
        if diags:
            key = lambda d: (0, 0, 0) if d.span is None else (1, d.span.line, d.span.col)  # noqa: E731
            raise KsimError(sorted(diags, key=key))

    def attempt(self, fn: Callable[..., _T], *args: Any) -> _T | None:
        """Run one independent item; an error in it is recorded and None returned."""
        try:
            return fn(*args)
        except Reported:
            return None

    def each(self, fn: Callable[[Any], _T | None], items: Iterable[Any]) -> tuple[_T, ...]:
        """`fn` on every item; items with errors (recorded) or no result are left out."""
        results = (self.attempt(fn, item) for item in items)
        return tuple(r for r in results if r is not None)

    def prev_slot(self, expr: t.Expr) -> int:
        """The `prev` memory slot of `expr`; equal expressions (spans aside) share one."""
        key = self.keys(expr)
        if key not in self.prev_slots:
            self.prev_slots[key] = (expr, len(self.prev_slots))
        return self.prev_slots[key][1]

    @property
    def m(self) -> ModelInfo:
        if self.info is None:
            raise InternalCompilerError("model used before it was loaded")
        return self.info


class Part:
    """One concern of the checker; reaches the others through `self.cx`."""

    def __init__(self, cx: Context):
        self.cx = cx

    def fail(self, span: Span | None, message: str, *notes: str) -> NoReturn:
        self.cx.fail(span, message, *notes)

    def attempt(self, fn: Callable[..., _T], *args: Any) -> _T | None:
        return self.cx.attempt(fn, *args)

    def each(self, fn: Callable[[Any], _T | None], items: Iterable[Any]) -> tuple[_T, ...]:
        return self.cx.each(fn, items)

    @property
    def m(self) -> ModelInfo:
        return self.cx.m
