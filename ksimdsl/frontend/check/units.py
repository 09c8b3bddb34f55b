"""Units (placeholder)."""

from __future__ import annotations

from ksimdsl.frontend.check.context import Part


class Units(Part):
    pass
