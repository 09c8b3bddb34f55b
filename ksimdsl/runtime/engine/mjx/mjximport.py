"""`import_mjx()`: `mujoco.mjx`, imported without its "warp is not installed" noise, and the Warp helpers.

mujoco-mjx (3.3.x and newer) tries `import warp` when it is imported and, when
warp-lang is simply not installed, prints `Failed to import warp: No module
named 'warp'` (and the same for `mujoco_warp`) on stdout. ksimdsl's default MJX
implementation is JAX, which does not need warp, so those two lines are only
noise: `import_mjx` drops exactly them and lets every other line through (a
warp that is installed but broken still reports why). Every ksimdsl module that
uses MJX imports it through here:

    from ksimdsl.runtime.engine.mjx.mjximport import import_mjx
    mjx = import_mjx()

`warp_installed()` says whether MJX can use its Warp implementation;
`quiet_warp()` turns off Warp's per-kernel "Module ... load on device" lines.
"""

from __future__ import annotations

import contextlib
import io
import sys
from types import ModuleType
from typing import TextIO

__all__ = ["import_mjx", "warp_installed", "quiet_warp", "NOISE"]

#: The lines mujoco.mjx prints when warp-lang is not installed (nothing else is dropped).
NOISE = (
    "Failed to import warp: No module named 'warp'",
    "Failed to import mujoco_warp: No module named 'warp'",
)


class _DropNoise(io.TextIOBase):
    """A stdout stand-in that forwards whole lines to `target`, except the lines in NOISE."""

    def __init__(self, target: TextIO):
        self.target = target
        self.pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if line.rstrip() not in NOISE:
                self.target.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def finish(self) -> None:
        if self.pending and self.pending.rstrip() not in NOISE:
            self.target.write(self.pending)
        self.pending = ""
        self.target.flush()


def import_mjx() -> ModuleType:
    """`mujoco.mjx`, imported with the warp-missing lines (NOISE) dropped from stdout."""
    if "mujoco.mjx" in sys.modules:
        return sys.modules["mujoco.mjx"]
    sink = _DropNoise(sys.stdout)
    try:
        with contextlib.redirect_stdout(sink):
            from mujoco import mjx
    finally:
        sink.finish()
    return mjx


def warp_installed() -> bool:
    """True when MJX can run its Warp implementation (warp-lang imports)."""
    import_mjx()
    try:
        from mujoco.mjx import warp as mjx_warp
    except ImportError:  # a mujoco-mjx without the Warp implementation
        return False
    return bool(getattr(mjx_warp, "WARP_INSTALLED", False))


def quiet_warp() -> None:
    """Silence Warp's start-up banner and its line per compiled kernel module (its warnings stay)."""
    if warp_installed():
        import warp

        if hasattr(warp.config, "log_level"):  # warp-lang >= 1.18: warnings and errors only
            warp.config.log_level = max(int(warp.config.log_level), int(getattr(warp, "LOG_WARNING", 30)))
        else:
            warp.config.quiet = True
