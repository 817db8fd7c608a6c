"""One anchorer among several gateway instances, elected through PostgreSQL.

Every instance ingests, checks, stores and acks; batching, anchoring and rewards
run on exactly one: the holder of a session-level advisory lock. The lock lives
as long as the session that took it: an instance killed (kill -9, a lost host)
loses its TCP connection, PostgreSQL ends the session and releases the lock, and
a standby takes it at its next try (every `interval` s). Server-side TCP
keepalives bound how long a dead host's session can linger (~KEEPALIVE_BOUND s).

A leader checks its session every `interval` s; when it is gone (PostgreSQL
restarted, the network cut) it stops its chain stages before it tries again.
Until they stop they are fenced (pgsql.hold_lease): each write transaction of
a chain stage checks under the write lock that the lease session still holds
the lock, so nothing is closed or recorded once another instance may lead.
Behind that: the batcher refuses when batches changed under it, every
transaction is in the txlog before it is sent, and the anchor contract refuses
a second root for a batch id. The stages are built anew at each election, so the new leader
reconciles the txlog (a recorded transaction maybe never sent) before it sends.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from terrapin.gateway.pgsql import LEADER_LOCK, PgConnection, hold_lease
from terrapin.gateway.retry import disk_refuses

log = logging.getLogger("terrapin.gateway.leader")

DEFAULT_INTERVAL = 1.0  # s between tries (standby) and session checks (leader)
KEEPALIVE = (5, 2, 3)  # server-side TCP keepalive: idle s, interval s, probes
KEEPALIVE_BOUND = KEEPALIVE[0] + KEEPALIVE[1] * KEEPALIVE[2]


class Election:
    """The anchorer lease on one PostgreSQL database: try(), held(), release()."""

    def __init__(self, url: str):
        self.url = url
        self._conn: Any = None

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; False when another instance does or the
        database cannot be reached."""
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
                idle, interval, count = KEEPALIVE
                self._conn.execute(f"SET tcp_keepalives_idle = {idle}")
                self._conn.execute(f"SET tcp_keepalives_interval = {interval}")
                self._conn.execute(f"SET tcp_keepalives_count = {count}")
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,)).fetchone()
            if row and row[0]:
                hold_lease(self.url, self._conn.info.backend_pid)  # fences the stages' writes
                return True
            return False
        except psycopg.Error as exc:
            log.debug("election: %s", exc)
            self._drop()
            return False

    def held(self) -> bool:
        """Is the session that took the lease still alive (so the lease still ours)?"""
        import psycopg

        if self._conn is None or self._conn.closed:
            return False
        try:
            self._conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            self._drop()
            return False

    def release(self) -> None:
        self._drop()  # ending the session releases the lock

    def _drop(self) -> None:
        hold_lease(self.url, 0)
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


class LeaderStages:
    """The chain stages, run only while this instance holds the lease. One stage to
    the server: run(shutdown) and status(), like the stages it wraps."""

    def __init__(
        self,
        election: Election,
        build: Callable[[], list],
        *,
        interval: float = DEFAULT_INTERVAL,
        instance: str = "",
    ):
        self.election = election
        self.build = build
        self.interval = interval
        self.instance = instance
        self.leader = False
        self.elections = 0
        self.stages: list = []
        self._failed: BaseException | None = None

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "leader": self.leader,
            "elections": self.elections,
            "instance": self.instance,
        }
        for stage in list(self.stages):
            if hasattr(stage, "status"):
                out[type(stage).__name__] = stage.status()
        return out

    def view(self, owner: str | None = None) -> dict[str, Any]:
        """/api/rewards on any instance: the rewards stage's view where it runs (with
        claimed/claimable from the contract), else the same figures from the database."""
        for stage in list(self.stages) if self.leader else []:
            if callable(getattr(stage, "view", None)):
                return stage.view(owner)
        from terrapin.gateway.api import RewardsUnavailable
        from terrapin.gateway.rewards import tables as rewards_store

        conn = PgConnection(self.election.url)
        try:
            row = conn.execute("SELECT to_regclass('rewards_epochs') IS NOT NULL").fetchone()
            if not (row and row[0]):
                raise RewardsUnavailable("no reward epoch computed yet")
            if owner is None:
                result = rewards_store.overview(conn)  # type: ignore[arg-type]
            else:
                result = rewards_store.status(conn, owner)  # type: ignore[arg-type]
        finally:
            conn.close()
        result["chain"] = False  # claimed/claimable need the rewards stage's chain
        return result

    def run(self, shutdown: threading.Event) -> None:
        try:
            while not shutdown.is_set():
                if self.election.try_acquire():
                    self._lead(shutdown)
                else:
                    shutdown.wait(self.interval)
        finally:
            self.election.release()

    def _lead(self, shutdown: threading.Event) -> None:
        self.elections += 1
        log.info("elected the anchorer (batch, anchor, rewards run here)")
        stop = threading.Event()
        try:
            self.stages = self.build()
        except sqlite3.OperationalError as exc:
            if not disk_refuses(exc):
                raise
            # The database went away between the election and the stages' connections:
            # give the lease back and try again, as after any lost lease.
            log.warning("chain stages not started (%s); standing by", exc)
            self.election.release()
            shutdown.wait(self.interval)
            return
        threads = [
            threading.Thread(target=self._run_one, args=(s, stop), name=type(s).__name__)
            for s in self.stages
        ]
        self.leader = True
        for t in threads:
            t.start()
        try:
            while not shutdown.is_set() and self._failed is None:
                shutdown.wait(self.interval)
                if not self.election.held():
                    log.warning("lost the anchorer lease; stopping the chain stages, standing by")
                    break
        finally:
            self.leader = False
            stop.set()
            for t in threads:
                t.join()
            for stage in self.stages:
                if hasattr(stage, "close"):
                    _quietly(stage.close)
            self.election.release()
        if self._failed is not None:
            raise self._failed

    def _run_one(self, stage: Any, stop: threading.Event) -> None:
        try:
            stage.run(stop)
        except BaseException as exc:  # the server's rule: a stage that raises stops it all
            self._failed = exc
            stop.set()


def _quietly(call: Callable[[], Any]) -> None:
    try:
        call()
    except Exception as exc:  # closing a connection PostgreSQL already dropped
        log.debug("closing a stage: %s", exc)


def wait_for_leader(stages: list[LeaderStages], timeout: float) -> LeaderStages | None:
    """The one of `stages` that leads within `timeout` s (tests, bench)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for s in stages:
            if s.leader:
                return s
        time.sleep(0.05)
    return None
