"""Stop requests for long work: Ctrl-C, SIGTERM and SIGHUP all mean "stop cleanly at the next boundary".

SLURM, Kubernetes and `timeout` stop jobs with SIGTERM, a closed terminal sends
SIGHUP: training treats them like Ctrl-C, finishing the iteration in flight and
writing a checkpoint. A second signal aborts at once (KeyboardInterrupt). The
handlers are installed only in the main thread (Python's rule) and restored on
exit.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["StopFlag", "STOP_SIGNALS"]

#: The signals that request a clean stop, by name (those this platform has).
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class StopFlag:
    """`requested` turns true on the first stop signal; `signal_name` says which one."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None

    @contextmanager
    def installed(self) -> Iterator["StopFlag"]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        def handler(signum: int, frame: Any) -> None:
            if self.requested:
                restore()
                raise KeyboardInterrupt
            self.requested = True
            self.signal_name = signal.Signals(signum).name

        for sig in STOP_SIGNALS:
            signal.signal(sig, handler)
        try:
            yield self
        finally:
            restore()
