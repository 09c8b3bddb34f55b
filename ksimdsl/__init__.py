"""ksimdsl: robot-learning tasks as short .ksim files, compiled to fused JAX and numba kernels."""

__version__ = "0.1.0"
