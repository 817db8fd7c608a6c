"""The reading store as an interface, and the one place that picks a backend.

Two implementations with the same semantics: `store.Store` (SQLite, the embedded
default) and `store_pg.PgStore` (PostgreSQL, for several gateway instances). Both
commit many readings in one transaction, decide stored / duplicate / equivocation /
stale inside it on UNIQUE(device, seq), and return outcomes only after COMMIT, so
an ACK is never ahead of the data. The location is a file path (SQLite) or a
`postgresql://` URL (`[store] url` in gateway.toml).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.pgsql import is_url, store_location  # noqa: F401 (re-exported)
from terrapin.gateway.retry import disk_refuses
from terrapin.gateway.store import Device, Outcome, Pending, Rejected


class ReadingStore(Protocol):
    """What the pipeline, the CLI and the API use of a store."""

    def commit(
        self, pending: list[Pending], rejected: Iterable[Rejected] = ()
    ) -> tuple[list[Outcome], list[Rejected]]: ...
    def close(self) -> None: ...
    def highest_seq(self, device: bytes) -> int | None: ...
    def count_readings(self, device: bytes | None = None) -> int: ...
    def reading(self, device: bytes, seq: int) -> dict | None: ...
    def readings(self, *, after_id: int = 0, limit: int = 1000) -> Iterator[dict]: ...
    def rejections(self, *, limit: int = 100) -> list[dict]: ...
    def rejection_counts(self) -> list[dict]: ...
    def add_device(self, address: bytes, pubkey: bytes | None = None, label: str = "") -> bool: ...
    def remove_device(self, address: bytes) -> bool: ...
    def set_pubkey(self, address: bytes, pubkey: bytes) -> None: ...
    def devices(self) -> list[Device]: ...
    def device_addresses(self) -> set[bytes]: ...
    def size_bytes(self) -> int: ...


def open_store(location: str | Path, **options: Any) -> ReadingStore:
    """The store at `location`: a `postgresql://` URL or a SQLite file path."""
    if is_url(location):
        from terrapin.gateway.store_pg import PgStore

        return PgStore(str(location), **options)
    from terrapin.gateway.store import Store

    return Store(location, **options)


class StoreUnavailable(TerrapinError):
    """The store's server did not answer within the wait."""


def open_store_waiting(location: str | Path, timeout: float = 60.0, **options: Any) -> ReadingStore:
    """open_store, waiting out a server that is (re)starting, up to `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return open_store(location, **options)
        except sqlite3.OperationalError as exc:
            if not disk_refuses(exc) or time.monotonic() > deadline:
                raise StoreUnavailable(
                    f"the store does not answer: {exc}",
                    hint="is PostgreSQL running and [store] url right? (docs/SCALE.md)",
                ) from None
            time.sleep(1.0)
