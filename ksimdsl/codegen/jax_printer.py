"""Printer for the JAX backend: `jnp.` array code, traceable (no Python control flow)."""

from __future__ import annotations

from ksimdsl.codegen.printer import KernelPrinter

__all__ = ["JaxPrinter"]


class JaxPrinter(KernelPrinter):
    """Every conditional is `jnp.where` and every logical operator `jnp.logical_*`,
    so that the printed code traces under `jax.jit` / `jax.vmap`."""

    alias = "jnp"
    _module = "jax.numpy"

    def row_index(self, expr) -> str:
        if expr.is_Integer:
            return str(int(expr))
        return f"jnp.int32({self._print(expr)})"
