"""The reading store on PostgreSQL: `store.Store`'s logic on a `pgsql.PgConnection`.

Same schema (in PostgreSQL types), same transaction: `BEGIN IMMEDIATE` takes the
store's write lock, so several gateway instances (and their worker processes)
commit one at a time, as on SQLite, and `readings.id` grows in commit order. A
reading another instance stored meanwhile is caught by UNIQUE(device, seq): the
insert affects no row and the stored digest decides duplicate or equivocation.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

from terrapin.gateway.pgsql import PgConnection
from terrapin.gateway.retry import disk_refuses
from terrapin.gateway.store import SCHEMA, SCHEMA_VERSION, Store

log = logging.getLogger("terrapin.gateway.store")


class PgStore(Store):
    def __init__(self, url: str, *, replay_window: int = 4096, max_rejections: int = 100_000):
        # Not Store.__init__: no file to make; the rest of the state is the same.
        self.url = url
        self.replay_window = replay_window
        self.max_rejections = max_rejections
        self._db = PgConnection(url)  # type: ignore[assignment]
        self._lock = threading.Lock()
        with self._lock:
            self._db.executescript(SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO gateway_meta VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            self._highest: dict[bytes, int] = dict(
                self._db.execute("SELECT device, MAX(seq) FROM readings GROUP BY device")
            )
        self._rejections_since_prune = 0
        self._audit: dict[bytes, tuple[float, float]] = {}
        self._devices: set[bytes] | None = None

    def device_addresses(self) -> set[bytes]:
        """The allow-list; while the server is unreachable, the last one read (the
        policy refreshes it every few seconds; a restart must not stop the checks)."""
        try:
            self._devices = super().device_addresses()
        except sqlite3.OperationalError as exc:
            if self._devices is None or not disk_refuses(exc):
                raise
            log.warning("allow-list not refreshed (%s); using the last one read", exc)
        return set(self._devices)

    def size_bytes(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT pg_database_size(current_database())").fetchone()
        return int(row[0]) if row else 0
