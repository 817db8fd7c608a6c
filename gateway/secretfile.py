"""Files that hold secrets: mode 0600 from the moment they exist.

The text goes to a new temporary file opened with O_CREAT|O_EXCL and mode
0600 (never written first and chmodded after, which leaves a moment when
anyone may open it), then is renamed over the target, so a reader sees the
old file or the new one, never half of one. `group` (a gid) opens the file to
that group (0640) before the rename: the Mosquitto password file, which the
broker reads after dropping to user `mosquitto`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from terrapin.gateway.errors import TerrapinError


def write_secret(
    path: str | Path, data: str | bytes, *, group: int | None = None, replace: bool = True
) -> None:
    """Write `data` to `path` (0600, or 0640 with `group`); with replace=False an
    existing file is an error and stays as it was."""
    p = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # left by a crash of this same pid number: ours to drop
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
            if group is not None:
                os.fchown(f.fileno(), -1, group)
                os.fchmod(f.fileno(), 0o640)
        if replace:
            os.replace(tmp, p)
        else:
            try:
                os.link(tmp, p)  # fails, atomically, when `path` exists
            except FileExistsError:
                raise TerrapinError(f"{p} exists; not overwriting a secret") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
