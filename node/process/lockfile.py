"""The home lock: one node per home, held with an OS lock (flock) for the node's whole life.

    lock = HomeLock(home_root).acquire()   # NodeError naming the running node's pid otherwise
    HomeLock(home_root).holder()           # pid of the node holding it, None when none runs
    lock.release()

The kernel drops the lock when the process dies, however it dies, so a crashed node never
leaves a stale lock behind; the pid written into the file is only there to be reported.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from node.errors import NodeError

LOCK_FILE = "node.lock"


class HomeLock:
    def __init__(self, home_root: Path) -> None:
        self.path = Path(home_root) / LOCK_FILE
        self._fd: int | None = None

    def _try_lock(self) -> int | None:
        """An fd holding the lock, or None when another process holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def _recorded_pid(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or "0") or None
        except (OSError, ValueError):
            return None

    def acquire(self) -> HomeLock:
        fd = self._try_lock()
        if fd is None:
            pid = self._recorded_pid()
            raise NodeError(f"a node (pid {pid or '?'}) is already running on {self.path.parent}; stop it with "
                            f"`mergenet node stop --home {self.path.parent}` or use another --home")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def holder(self) -> int | None:
        """The pid of the process holding the lock; None when no node runs on this home."""
        if not self.path.exists():
            return None
        fd = self._try_lock()
        if fd is not None:
            os.close(fd)
            return None
        return self._recorded_pid()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
