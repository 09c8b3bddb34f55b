"""Closed-form math the lowering expands into sympy: vectors, quaternions, angles, dm_control rewards.

Quaternions are (w, x, y, z). `tolerance` is dm_control's `rewards.tolerance`
with its sigmoids; every function returns plain sympy expressions (or `Val`s
for the vector helpers `norm2`).
"""

from __future__ import annotations

from typing import Sequence

import sympy as sp

from ksimdsl.errors import InternalCompilerError
from ksimdsl.ir import vec
from ksimdsl.ir.vec import Val

__all__ = ["quat_rotate", "quat_rotate_inv", "cross", "quat_mul", "yaw", "where", "tolerance", "angle", "norm2"]


def _sq(x: sp.Basic) -> sp.Basic:
    return x**2


def quat_rotate(q: Sequence[sp.Basic], v: Sequence[sp.Basic]) -> list[sp.Basic]:
    """Rotate the 3-vector v by the unit quaternion q = (w, x, y, z).

    v' = v + 2 w (u x v) + 2 u x (u x v) with u = (x, y, z).
    """
    w, x, y, z = q
    t = cross((x, y, z), v)
    t = [2 * c for c in t]
    s = cross((x, y, z), t)
    return [v[i] + w * t[i] + s[i] for i in range(3)]


def quat_rotate_inv(q: Sequence[sp.Basic], v: Sequence[sp.Basic]) -> list[sp.Basic]:
    """Rotate v by the inverse (conjugate) of the unit quaternion q = (w, x, y, z)."""
    w, x, y, z = q
    return quat_rotate((w, -x, -y, -z), v)


def cross(a: Sequence[sp.Basic], b: Sequence[sp.Basic]) -> list[sp.Basic]:
    return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]


def quat_mul(a: Sequence[sp.Basic], b: Sequence[sp.Basic]) -> list[sp.Basic]:
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return [
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ]


def yaw(q: Sequence[sp.Basic]) -> sp.Basic:
    """Heading angle about world z of the quaternion q = (w, x, y, z)."""
    w, x, y, z = q
    return sp.atan2(2 * (w * z + x * y), 1 - 2 * (y**2 + z**2))


def where(c: sp.Basic, a: sp.Basic, b: sp.Basic) -> sp.Basic:
    return sp.Piecewise((a, c), (b, True))


def _sigmoid(d: sp.Basic, vam: sp.Basic, kind: str) -> sp.Basic:
    """dm_control's `rewards._sigmoids(d, value_at_1=vam, sigmoid=kind)`; d >= 0 here."""
    if kind == "gaussian":
        scale = sp.sqrt(-2 * sp.log(vam))
        return sp.exp(-sp.Rational(1, 2) * (d * scale) ** 2)
    if kind == "hyperbolic":
        scale = sp.acosh(1 / vam)
        return 1 / sp.cosh(d * scale)
    if kind == "long_tail":
        scale = sp.sqrt(1 / vam - 1)
        return 1 / ((d * scale) ** 2 + 1)
    if kind == "reciprocal":
        scale = 1 / vam - 1
        return 1 / (sp.Abs(d) * scale + 1)
    if kind == "cosine":
        scale = sp.acos(2 * vam - 1) / sp.pi
        sx = d * scale
        return where(sp.Abs(sx) < 1, (1 + sp.cos(sp.pi * sx)) / 2, sp.Integer(0))
    if kind == "linear":
        scale = 1 - vam
        sx = d * scale
        return where(sp.Abs(sx) < 1, 1 - sx, sp.Integer(0))
    if kind == "quadratic":
        scale = sp.sqrt(1 - vam)
        sx = d * scale
        return where(sp.Abs(sx) < 1, 1 - sx**2, sp.Integer(0))
    if kind == "tanh_squared":
        scale = sp.atanh(sp.sqrt(1 - vam))
        return 1 - sp.tanh(d * scale) ** 2
    raise InternalCompilerError(f"unknown sigmoid {kind!r}")


def tolerance(
    x: sp.Basic, lo: sp.Basic, hi: sp.Basic, margin: sp.Basic, vam: sp.Basic, sigmoid: str
) -> sp.Basic:
    """dm_control's `rewards.tolerance(x, bounds=(lo, hi), margin, sigmoid, value_at_margin)`.

    1 inside [lo, hi]; outside, `sigmoid` of the distance to the nearest bound in
    units of `margin` (value `vam` at distance `margin`); with margin == 0 the
    indicator of the bounds.
    """
    in_bounds = sp.And(lo <= x, x <= hi)
    one, zero = sp.Integer(1), sp.Integer(0)
    if margin.is_number and margin == 0:
        return where(in_bounds, one, zero)
    d = where(x < lo, lo - x, x - hi) / margin
    if margin.is_number:
        return sp.Piecewise((one, in_bounds), (_sigmoid(d, vam, sigmoid), True))
    return sp.Piecewise((one, in_bounds), (zero, sp.Eq(margin, 0)), (_sigmoid(d, vam, sigmoid), True))



def norm2(v: Val) -> Val:
    return vec.reduce_sum(vec.elementwise(_sq, v))


def angle(u: Sequence[sp.Basic], v: Sequence[sp.Basic]) -> sp.Basic:
    """atan2(|u x v|, u . v): accurate for small and near-pi angles."""
    d = sum((a * b for a, b in zip(u, v)), sp.Integer(0))
    if len(u) == 3:
        c = cross(u, v)
        s = sp.sqrt(sum((ci**2 for ci in c), sp.Integer(0)))
    elif len(u) == 2:
        s = sp.Abs(u[0] * v[1] - u[1] * v[0])
    else:
        nu = sum((a**2 for a in u), sp.Integer(0))
        nv = sum((b**2 for b in v), sp.Integer(0))
        s = sp.sqrt(sp.Max(nu * nv - d**2, 0))
    return sp.atan2(s, d)

