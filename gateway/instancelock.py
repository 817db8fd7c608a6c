"""One gateway per database: an exclusive lock on a file beside it.

`gateway run` takes the lock before anything else and holds it for the life of
the process; the file holds the pid of the holder. The kernel drops a flock
when its process dies (even by kill -9), so a stale file never blocks a restart.
A second gateway on the same database exits at once (exit code 3, EXIT_LOCKED)
naming the pid that holds it; `gateway restore` and `gateway init --force` use
`holder()` to refuse a live home.

    lock = InstanceLock(cfg.store.path).acquire()   # InstanceLocked if taken
    ...
    lock.release()
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from terrapin.gateway.errors import TerrapinError

EXIT_LOCKED = 3  # `gateway run`, `restore`, `init --force`: the home is in use


class InstanceLocked(TerrapinError):
    """Another live process holds the database's instance lock."""

    exit_code = EXIT_LOCKED


def lock_path(db_path: str | Path) -> Path:
    """The lock file for a database: `<db>.lock` beside it."""
    return Path(f"{db_path}.lock")


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    # 0600 from creation; the fd is not inherited by the verify workers (close-on-exec).
    return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


class InstanceLock:
    """The exclusive lock of one database, held from acquire() to release()."""

    def __init__(self, db_path: str | Path):
        self.db_path = Path(db_path)
        self.path = lock_path(db_path)
        self._fd: int | None = None

    def acquire(self, what: str = "a gateway") -> InstanceLock:
        fd = _open(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise InstanceLocked(
                f"{what} cannot start: the gateway with pid {pid or '?'} "
                f"already uses {self.db_path} (lock {self.path})",
                hint="one gateway per database: stop that one first (systemctl stop "
                "terrapin-gateway, or kill it), or give this one its own [store] path",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # no pid left behind for a reader to puzzle over
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> InstanceLock:
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(db_path: str | Path) -> int | None:
    """The pid of the live process holding the database's lock, else None
    (0 when it is held but the file names no pid)."""
    path = lock_path(db_path)
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
