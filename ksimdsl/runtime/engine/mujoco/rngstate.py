"""A numpy PCG64 generator's state as a uint64 vector, and back (the C-MuJoCo engine's checkpoints)."""

from __future__ import annotations

import numpy as np

__all__ = ["rng_to_array", "rng_from_array"]


def rng_to_array(rng: np.random.Generator) -> np.ndarray:
    """numpy PCG64 state -> uint64[6] (state hi/lo, inc hi/lo, has_uint32, uinteger)."""
    st = rng.bit_generator.state
    if st["bit_generator"] != "PCG64":  # pragma: no cover - MujocoEnv always makes PCG64
        raise TypeError(f"cannot checkpoint a {st['bit_generator']} generator")
    mask = (1 << 64) - 1
    s, inc = st["state"]["state"], st["state"]["inc"]
    return np.array([s >> 64, s & mask, inc >> 64, inc & mask, st["has_uint32"], st["uinteger"]], dtype=np.uint64)


def rng_from_array(a: np.ndarray) -> np.random.Generator:
    v = [int(x) for x in a]
    bg = np.random.PCG64()
    bg.state = {
        "bit_generator": "PCG64",
        "state": {"state": (v[0] << 64) | v[1], "inc": (v[2] << 64) | v[3]},
        "has_uint32": v[4],
        "uinteger": v[5],
    }
    return np.random.Generator(bg)
