"""One training run per output folder.

``RunLock(OUT).acquire()`` takes an exclusive ``flock`` on ``OUT/.grace-train.lock`` and writes
its PID and host into the file. A second run on the same folder (another process, or a second
trainer in the same process) finds the lock held and gets a ``GraceInputError`` naming the PID
that holds it (the CLI exits with code 2). The kernel drops the lock when its process dies,
whatever the cause (kill -9 included), so a lock left by a dead run is stale by construction
and simply taken over; its PID is mentioned. The file itself is never deleted (deleting a lock
file while others may have it open lets two runs lock two different files).

Where ``fcntl`` does not exist (Windows) no lock is taken, with a warning.
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

from grace.errors import GraceInputError

LOCK_FILE = ".grace-train.lock"

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


class RunLock:
    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None
        self.previous: str = ""  # who held the lock before (a dead run), for the record

    def acquire(self) -> "RunLock":
        if self._fd is not None:
            return self
        if fcntl is None:
            warnings.warn(f"no file locking on this platform: nothing stops a second run on "
                          f"{self.path.parent}", stacklevel=2)
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read(fd) or "another process"
            os.close(fd)
            raise GraceInputError(
                f"{self.path.parent} is used by another training run ({holder}; lock file "
                f"{self.path}): wait for it to finish or stop it, or pass another --output-dir"
            ) from None
        self.previous = _read(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def _read(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode(errors="replace").strip()
