"""One writer per run directory: an exclusive `flock` on `RUN_DIR/.lock` for the whole run.

Two `ksimdsl train --run-dir SAME` (or two `--resume`) at once would interleave
checkpoints and metrics. The first takes the lock and writes its PID into the
lock file; the second fails at once with a message naming that PID. The kernel
drops the lock when the process ends, however it ends (kill -9 included), so a
stale lock file never blocks a later run.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ksimdsl.errors import KsimError

__all__ = ["LOCK_FILE", "run_lock"]

LOCK_FILE = ".lock"


def _holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return "another process"
    return f"process {pid}" if pid.isdigit() else "another process"


@contextmanager
def run_lock(run_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the run directory's lock while the body runs; KsimError if another process holds it."""
    import fcntl

    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise KsimError(f"cannot lock run directory {run_dir}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise KsimError(
                    f"run directory {run_dir} is in use by {_holder(path)} (another `ksimdsl train`); "
                    "wait for it to finish or stop it, or train into another directory"
                ) from None
            raise KsimError(f"cannot lock run directory {run_dir}: {exc.strerror or exc}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock
