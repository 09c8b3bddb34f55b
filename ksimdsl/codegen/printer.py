"""The sympy printer shared by both backends.

`KernelPrinter` subclasses sympy's `NumPyPrinter` and prints every node kind the
lowering produces (see `ksimdsl.ir.vec`): elementwise math with the array
module's functions (`jnp.exp` / `np.exp`), `Piecewise` as nested `where`,
relations infix, packed leaves as slices/gathers/constants and reductions as
`sum`/`max`/`min`. Backends subclass it to choose the array module name and
how scalar-only code is printed (numba prints plain Python conditionals for
scalars; JAX always prints `jnp.where`).

Numbers print as the shortest float literal that round-trips (`0.02`, not
`0.0200000000000000`); integer exponents stay integers (`x**2`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import sympy as sp
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.precedence import PRECEDENCE, precedence

from ksimdsl.errors import InternalCompilerError
from ksimdsl.ir import vec
from ksimdsl.ir.dag import unique_nodes
from ksimdsl.ir.reference import TableAt, TableGather, TableSlice

__all__ = ["KernelPrinter", "shape_in", "float_literal", "comment"]


def comment(text: str) -> str:
    """A Python comment line holding `text`, which may come from the user (a file name, a task line).

    Everything but printable ASCII is escaped (`\\n`, `\\x0c`, `\\u2028`, ...), so no text can end
    the comment and start a line of code in a generated module.
    """
    return "# " + "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode("ascii") for c in text)


def shape_in(expr: sp.Basic, symbol_shapes: Mapping[sp.Symbol, int], memo: dict | None = None) -> int:
    """`vec.shape_of` where some Symbols (CSE temporaries) stand for packed arrays."""
    if memo is None:
        memo = {}
    if isinstance(expr, sp.Symbol):
        return symbol_shapes.get(expr, 0)
    if not symbol_shapes:
        return vec.shape_of(expr)
    hit = memo.get(expr)
    if hit is not None:
        return hit
    if isinstance(expr, vec.PackedLeaf):
        n = expr.size
    elif isinstance(expr, vec.Reduction) or not expr.args or isinstance(expr, sp.Indexed):
        n = 0
    else:
        n = 0
        for a in expr.args:
            m = shape_in(a, symbol_shapes, memo)
            if m:
                n = m
    memo[expr] = n
    return n


def float_literal(x: float, alias: str = "np") -> str:
    """The shortest float literal within 15 significant digits (`0.4`, not `0.3999999999999999`).

    Non-finite values name the array module's constants (`jnp.inf`, `-np.inf`, `np.nan`).
    """
    if math.isinf(x):
        return f"{alias}.inf" if x > 0 else f"-{alias}.inf"
    if math.isnan(x):
        return f"{alias}.nan"
    text = f"{x:.15g}"
    if "." not in text and "e" not in text and "n" not in text:
        text += ".0"
    return text


class KernelPrinter(NumPyPrinter):
    """Prints lowered sympy expressions as array code for one backend.

    `alias` is the array module's name in the generated source (`jnp` or `np`);
    `symbol_shapes` gives the packed size of CSE temporaries; `const_names`
    and `index_names` map constant arrays and index tuples to their
    module-level names; `mem_names` (a `names.MemNames`) prints indices of
    `mem` with the named slot offsets (`mem[MEM_DELAY_GRAVITY]`).
    """

    alias = "np"
    _module = "numpy"

    def __init__(
        self,
        symbol_shapes: Mapping[sp.Symbol, int] | None = None,
        const_names: Mapping[sp.Basic, str] | None = None,
        index_names: Mapping[tuple[int, ...], str] | None = None,
        mem_names: Any = None,
    ):
        super().__init__({"fully_qualified_modules": True, "inline": True, "allow_unknown_functions": False})
        self.symbol_shapes = dict(symbol_shapes or {})
        self.const_names = dict(const_names or {})
        self.index_names = dict(index_names or {})
        self.mem_names = mem_names
        self._shape_memo: dict = {}

    # ------------------------------------------------------------------ helpers

    def shape(self, expr: sp.Basic) -> int:
        return shape_in(expr, self.symbol_shapes, self._shape_memo)

    def _module_format(self, fqn: str, register: bool = True) -> str:
        for prefix in ("jax.numpy.", "numpy."):
            if fqn.startswith(prefix):
                return f"{self.alias}.{fqn[len(prefix):]}"
        return super()._module_format(fqn, register)

    def fn(self, name: str) -> str:
        return f"{self.alias}.{name}"

    # ------------------------------------------------------------------ numbers

    def doprint(self, expr, assign_to=None):  # noqa: D102
        # Rational coefficients print as floats (`0.5*x`, not `(1/2)*x`).
        # Integer-valued floats become integers, so `1.0*x` folds to `x` and `x**2.0` is `x**2`.
        nodes = list(unique_nodes([expr]))  # (as `expr.atoms`, each shared node once)
        numbers = {r: sp.Float(r) for r in nodes if isinstance(r, sp.Rational) and not r.is_Integer}
        numbers |= {f: sp.Integer(int(f)) for f in nodes if isinstance(f, sp.Float) and float(f).is_integer()}
        if numbers:
            expr = expr.xreplace(numbers)
        return super().doprint(expr, assign_to)

    def _print_Float(self, expr: sp.Float) -> str:
        return float_literal(float(expr), self.alias)

    def _print_Integer(self, expr: sp.Integer) -> str:
        return float_literal(float(int(expr)))

    def _print_Rational(self, expr: sp.Rational) -> str:
        return float_literal(float(expr))

    def _print_Half(self, expr) -> str:
        return "0.5"

    def _print_One(self, expr) -> str:
        return "1.0"

    def _print_Zero(self, expr) -> str:
        return "0.0"

    def _print_NegativeOne(self, expr) -> str:
        return "-1.0"

    def _print_Exp1(self, expr) -> str:
        return repr(float(sp.E))

    def _print_Pi(self, expr) -> str:
        return repr(float(sp.pi))

    def _print_BooleanTrue(self, expr) -> str:
        return "True"

    def _print_BooleanFalse(self, expr) -> str:
        return "False"

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        base, exp = expr.args
        prec = precedence(expr)
        value = float(exp) if exp.is_number and exp.is_real else None
        if value == 0.5:
            return f"{self.fn('sqrt')}({self._print(base)})"
        if value == -0.5:
            return f"1.0/{self.fn('sqrt')}({self._print(base)})"
        if value == -1:
            return f"1.0/{self.parenthesize(base, PRECEDENCE['Pow'])}"
        if exp.is_Integer:
            b = self.parenthesize(base, PRECEDENCE["Pow"], strict=True)
            if int(exp) < 0:
                return f"1.0/{b}**{-int(exp)}"
            return f"{b}**{int(exp)}"
        return f"{self.parenthesize(base, PRECEDENCE['Pow'], strict=True)}**{self.parenthesize(exp, prec)}"

    # ------------------------------------------------------------------ arrays

    def _named_mem(self, base: str) -> bool:
        return base == "mem" and self.mem_names is not None

    def _print_Indexed(self, expr: sp.Indexed) -> str:
        if self._named_mem(str(expr.base.label)) and len(expr.indices) == 1:
            return f"mem[{self.mem_names.index(int(expr.indices[0]))}]"
        idx = ", ".join(str(int(i)) for i in expr.indices)
        return f"{expr.base.label}[{idx}]"

    def _print_ArrSlice(self, expr: vec.ArrSlice) -> str:
        rows = f"{expr.start}:{expr.stop}"
        if self._named_mem(expr.base.name) and expr.col is None:
            rows = self.mem_names.range(expr.start, expr.stop)
        if expr.col is None:
            return f"{expr.base.name}[{rows}]"
        return f"{expr.base.name}[{rows}, {expr.col}]"

    def _print_ArrGather(self, expr: vec.ArrGather) -> str:
        name = self.index_names.get(expr.indices)
        if name is None:
            raise InternalCompilerError(f"no index constant for {expr}")
        if expr.col is None:
            return f"{expr.base.name}[{name}]"
        return f"{expr.base.name}[{name}, {expr.col}]"

    def row_index(self, expr: sp.Basic) -> str:
        """A frame index of a reference table (a float expression with an integer value) as an int."""
        if expr.is_Integer:
            return str(int(expr))
        return f"int({self._print(expr)})"

    def _print_TableAt(self, expr: TableAt) -> str:
        return f"{expr.table}[{self.row_index(expr.row)}, {expr.col}]"

    def _print_TableSlice(self, expr: TableSlice) -> str:
        return f"{expr.table}[{self.row_index(expr.row)}, {expr.start}:{expr.stop}]"

    def _print_TableGather(self, expr: TableGather) -> str:
        name = self.index_names.get(expr.columns)
        if name is None:
            raise InternalCompilerError(f"no index constant for {expr}")
        return f"{expr.table}[{self.row_index(expr.row)}][{name}]"

    def _print_ConstArr(self, expr: vec.ConstArr) -> str:
        name = self.const_names.get(expr)
        if name is None:
            raise InternalCompilerError(f"no module constant for {expr.name}")
        return name

    def _print_Fill(self, expr: vec.Fill) -> str:
        return f"{self.fn('full')}({expr.size}, {self._print(expr.value)})"

    def _print_Concat(self, expr: vec.Concat) -> str:
        pieces: list[str] = []
        run: list[str] = []
        for part in expr.args:
            if self.shape(part) == 0:
                run.append(self._print(part))
                continue
            if run:
                pieces.append(f"{self.fn('array')}([{', '.join(run)}])")
                run = []
            pieces.append(self._print(part))
        if run:
            pieces.append(f"{self.fn('array')}([{', '.join(run)}])")
        if len(pieces) == 1:
            return pieces[0]
        return f"{self.fn('concatenate')}(({', '.join(pieces)}))"

    def _print_RSum(self, expr: vec.RSum) -> str:
        return f"{self.fn('sum')}({self._print(expr.args[0])})"

    def _print_RMax(self, expr: vec.RMax) -> str:
        return f"{self.fn('max')}({self._print(expr.args[0])})"

    def _print_RMin(self, expr: vec.RMin) -> str:
        return f"{self.fn('min')}({self._print(expr.args[0])})"

    # ------------------------------------------------------------------ math

    def _print_Abs(self, expr: sp.Abs) -> str:
        return f"{self.fn('abs')}({self._print(expr.args[0])})"

    def _print_floor(self, expr) -> str:
        return f"{self.fn('floor')}({self._print(expr.args[0])})"

    def _print_sign(self, expr) -> str:
        return f"{self.fn('sign')}({self._print(expr.args[0])})"

    def _print_atan2(self, expr) -> str:
        return f"{self.fn('arctan2')}({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _nest(self, name: str, args) -> str:
        """`f(a, f(b, c))` for the binary array function `name` (maximum, logical_and, ...)."""
        printed = [self._print(a) for a in args]
        out = printed[-1]
        for p in reversed(printed[:-1]):
            out = f"{self.fn(name)}({p}, {out})"
        return out

    def _print_Max(self, expr) -> str:
        return self._nest("maximum", expr.args)

    def _print_Min(self, expr) -> str:
        return self._nest("minimum", expr.args)

    # ------------------------------------------------------------------ logic

    def _print_Relational(self, expr) -> str:
        op = expr.rel_op
        if op not in ("==", "!=", "<", "<=", ">", ">="):
            raise InternalCompilerError(f"relation {op}")
        prec = PRECEDENCE["Relational"]
        return f"{self.parenthesize(expr.lhs, prec)} {op} {self.parenthesize(expr.rhs, prec)}"

    def _print_And(self, expr) -> str:
        return self._nest("logical_and", expr.args)

    def _print_Or(self, expr) -> str:
        return self._nest("logical_or", expr.args)

    def _print_Xor(self, expr) -> str:
        return self._nest("logical_xor", expr.args)

    def _print_Not(self, expr) -> str:
        return f"{self.fn('logical_not')}({self._print(expr.args[0])})"

    def _print_Piecewise(self, expr: sp.Piecewise) -> str:
        pairs = list(expr.args)
        if pairs[-1].cond != sp.true:
            raise InternalCompilerError(f"Piecewise without a default branch: {expr}")
        out = self._print(pairs[-1].expr)
        for pair in reversed(pairs[:-1]):
            out = f"{self.fn('where')}({self._print(pair.cond)}, {self._print(pair.expr)}, {out})"
        return out

    def _print_ITE(self, expr) -> str:
        return self._print(expr.rewrite(sp.Piecewise))

    def emptyPrinter(self, expr):  # noqa: N802 - sympy hook
        raise InternalCompilerError(f"cannot print {type(expr).__name__}: {expr}")
