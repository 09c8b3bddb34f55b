"""Turn a stalled jitted call into a clear error instead of a silent hang.

Some jax / mujoco-mjx combinations deadlock inside `block_until_ready` (0% CPU,
no error, forever; see /work/shared/notes and tests/test_mjx_no_deadlock.py).
The main thread cannot be interrupted while it waits inside XLA, so a daemon
thread watches the clock: when one watched section runs longer than
`timeout_s` it reports what stalled and, by default, ends the process with
exit status `STALL_EXIT_CODE`.

    watchdog = Watchdog(timeout_s=600)
    with watchdog.watch("training iteration 12"):
        state = train_step(state)
        jax.block_until_ready(state)
    watchdog.close()
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

__all__ = ["Watchdog", "STALL_EXIT_CODE", "report_stall_and_exit"]

#: Exit status of a process the watchdog ended (distinct from user errors (2) and bugs (3)).
STALL_EXIT_CODE = 4


def report_stall_and_exit(what: str, elapsed_s: float) -> None:
    """Default stall handler: one clear message on stderr, then exit without unwinding the stuck thread."""
    sys.stderr.write(
        f"ksimdsl: error: {what} did not finish within {elapsed_s:.0f} s; it appears stalled "
        "(a known jax/mujoco-mjx deadlock looks like this: 0% CPU inside block_until_ready). "
        "Check the jax/mujoco-mjx versions (README.md, Tested versions), try devices=1, "
        "fewer envs or engine=mujoco, "
        "or raise watchdog_s=... if the work is just slow.\n"
    )
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(STALL_EXIT_CODE)


class Watchdog:
    """Calls `on_stall(what, elapsed_s)` once when a `watch` section outlives `timeout_s`.

    `timeout_s <= 0` disables the watchdog (sections are not timed).
    """

    def __init__(self, timeout_s: float, *, on_stall: Callable[[str, float], None] = report_stall_and_exit):
        self.timeout_s = float(timeout_s)
        self.on_stall = on_stall
        self._cond = threading.Condition()
        self._what: str | None = None
        self._started = 0.0
        self._limit = self.timeout_s
        self._generation = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        if self.timeout_s > 0:
            self._thread = threading.Thread(target=self._run, name="ksimdsl-watchdog", daemon=True)
            self._thread.start()

    @contextmanager
    def watch(self, what: str, *, timeout_s: float | None = None) -> Iterator[None]:
        """Time the body of the `with` block; `timeout_s` overrides the default for this section."""
        if self._thread is None:
            yield
            return
        with self._cond:
            self._generation += 1
            self._what = what
            self._started = time.monotonic()
            self._limit = self.timeout_s if timeout_s is None else float(timeout_s)
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._what = None
                self._cond.notify()

    def close(self) -> None:
        """Stop the watchdog thread."""
        if self._thread is None:
            return
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)
        self._thread = None

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                if self._what is None:
                    self._cond.wait()
                    continue
                generation, what = self._generation, self._what
                remaining = self._started + self._limit - time.monotonic()
                if remaining > 0:
                    self._cond.wait(timeout=remaining)
                    continue
                if self._generation == generation and self._what is not None:
                    elapsed = time.monotonic() - self._started
                    self._what = None  # report each stalled section once
                    self._cond.release()
                    try:
                        self.on_stall(what, elapsed)
                    finally:
                        self._cond.acquire()
