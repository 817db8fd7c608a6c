"""A board's last known status values (firmware, free heap, outbox depth, ...) while
it is offline.

A board's retained status message is its full JSON status while it is up and the
7 bytes `offline` (its last will, or its own clean stop) after: the broker keeps only
that one message, so once a board drops off, what it last reported is gone from the
broker. The gateway keeps it instead, under "last_known" (with the time it was
reported) beside the offline state, in memory and in a small JSON file beside the
database, so a restarted gateway that gets only `offline` from the broker still
shows it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("terrapin.gateway.boardstatus")

# A status message with a firmware version is a full one (firmware/status.py); the
# others (`offline`, an unreadable message) carry only a state.
FULL = "fw"
MAX_BOARDS = 100_000  # the file is read whole at start: bound what it may hold


def last_known(status: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a board last reported in a full status message (with `received_at`), from
    its current entry, or None if it never sent one."""
    if not status:
        return None
    if FULL in status:
        return {k: v for k, v in status.items() if k not in ("state", "last_known")}
    return status.get("last_known")


def file_for(db_path: str | Path) -> Path:
    """The JSON file beside the database (like its instance lock, `<db>.lock`)."""
    return Path(str(db_path) + ".board-status.json")


class KeptStatus:
    """The last full status of every board that went offline, in a JSON file
    (hex address -> values), written when a board goes offline, read at start."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self.values: dict[str, dict[str, Any]] = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:  # a damaged file costs only the old values
            log.warning("board status file %s unreadable (%s): starting without it", self.path, exc)
            return {}
        if not isinstance(data, dict):
            return {}
        return {
            k: v for k, v in list(data.items())[:MAX_BOARDS] if isinstance(v, dict) and len(k) == 40
        }

    def get(self, board: str) -> dict[str, Any] | None:
        with self._lock:
            return self.values.get(board)

    def keep(self, board: str, values: dict[str, Any]) -> None:
        """Remember `values` for `board` and rewrite the file (atomically: a crash
        leaves the old file or the new one)."""
        with self._lock:
            if self.values.get(board) == values:
                return
            self.values[board] = values
            text = json.dumps(self.values, sort_keys=True)
            tmp = self.path.with_suffix(".tmp")
            try:
                tmp.write_text(text)
                os.replace(tmp, self.path)
            except OSError as exc:  # still kept in memory; the API shows it until a restart
                log.warning("cannot write %s: %s", self.path, exc)


def with_last_known(
    previous: dict[str, Any] | None,
    status: dict[str, Any],
    now: float,
    kept: KeptStatus | None = None,
    board: str = "",
) -> dict[str, Any]:
    """The entry to keep for a board's new status message: the message with its
    arrival time, plus, when it is not a full one, the values the board last
    reported (from memory, else from `kept`, the file a restarted gateway reads)."""
    entry = dict(status, received_at=round(now, 3))
    if FULL in status:
        return entry
    known = last_known(previous) or (kept.get(board) if kept is not None else None)
    if known:
        entry["last_known"] = known
        if kept is not None:
            kept.keep(board, known)
    return entry
