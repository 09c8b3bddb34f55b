"""Printer for the numba backend: `np.` code inside an `@njit` per-env loop.

Scalar code (the common case inside the loop) prints as plain Python
(`a if c else b`, `a and b`, `max(a, b)`, `abs(x)`), which numba compiles to
branch-free machine code; packed arrays use numpy's elementwise functions.
"""

from __future__ import annotations

from ksimdsl.codegen.printer import KernelPrinter

__all__ = ["NumbaPrinter"]


class NumbaPrinter(KernelPrinter):
    alias = "np"
    _module = "numpy"

    def _scalar(self, expr) -> bool:
        return self.shape(expr) == 0

    def _print_Piecewise(self, expr) -> str:
        if not self._scalar(expr):
            return super()._print_Piecewise(expr)
        pairs = list(expr.args)
        out = self._print(pairs[-1].expr)
        for pair in reversed(pairs[:-1]):
            out = f"({self._print(pair.expr)} if {self._print(pair.cond)} else {out})"
        return out

    def _join(self, op: str, expr) -> str:
        return "(" + f" {op} ".join(self._print(a) for a in expr.args) + ")"

    def _print_And(self, expr) -> str:
        return self._join("and", expr) if self._scalar(expr) else super()._print_And(expr)

    def _print_Or(self, expr) -> str:
        return self._join("or", expr) if self._scalar(expr) else super()._print_Or(expr)

    def _print_Not(self, expr) -> str:
        if self._scalar(expr):
            return f"(not {self._print(expr.args[0])})"
        return super()._print_Not(expr)

    def _print_Max(self, expr) -> str:
        if self._scalar(expr):
            return "max(" + ", ".join(self._print(a) for a in expr.args) + ")"
        return super()._print_Max(expr)

    def _print_Min(self, expr) -> str:
        if self._scalar(expr):
            return "min(" + ", ".join(self._print(a) for a in expr.args) + ")"
        return super()._print_Min(expr)

    def _print_Abs(self, expr) -> str:
        if self._scalar(expr):
            return f"abs({self._print(expr.args[0])})"
        return super()._print_Abs(expr)
