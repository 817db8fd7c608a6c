"""The anchorer election on a real PostgreSQL: one leader, takeover when its session
ends, stages stopped on the instance that lost the lease. The stages here are small
test stages (any object with run(stop) and status() is a stage)."""

from __future__ import annotations

import sqlite3
import threading
import time

from terrapin.gateway.leader import Election, LeaderStages, wait_for_leader
from terrapin.gateway.pgsql import PgConnection


class Stage:
    def __init__(self) -> None:
        self.started = threading.Event()
        self.stopped = threading.Event()

    def run(self, stop: threading.Event) -> None:
        self.started.set()
        stop.wait()
        self.stopped.set()

    def status(self) -> dict:
        return {"running": self.started.is_set() and not self.stopped.is_set()}


def start(leader: LeaderStages, shutdown: threading.Event) -> threading.Thread:
    t = threading.Thread(target=leader.run, args=(shutdown,), daemon=True)
    t.start()
    return t


def terminate(url: str, election: Election) -> None:
    """The leader's host vanished: PostgreSQL ends its session."""
    pid = election._conn.info.backend_pid
    admin = PgConnection(url)
    admin.execute("SELECT pg_terminate_backend(?)", (pid,))
    admin.close()


def test_one_leader_and_a_takeover_when_its_session_ends(postgres_url):
    made: list[list[Stage]] = [[], []]
    leaders = [
        LeaderStages(
            Election(postgres_url),
            lambda i=i: made[i].append(Stage()) or made[i][-1:],
            interval=0.2,
            instance=f"i{i}",
        )
        for i in range(2)
    ]
    shutdown = threading.Event()
    threads = [start(x, shutdown) for x in leaders]
    try:
        first = wait_for_leader(leaders, 10)
        assert first is not None
        time.sleep(1.0)  # the other keeps trying and never leads meanwhile
        assert [x.leader for x in leaders].count(True) == 1
        i = leaders.index(first)
        assert made[i][-1].started.wait(5) and made[1 - i] == []
        killed_at = time.monotonic()
        terminate(postgres_url, first.election)
        assert made[i][-1].stopped.wait(5), "the old leader's stage did not stop"
        # A new election (here the old leader's process lives on, so it may win it
        # again: what matters is one leader, elected anew, with its stages anew).
        while sum(x.elections for x in leaders) < 2 or not any(x.leader for x in leaders):
            assert time.monotonic() - killed_at < 10, "no new election within 10 s"
            time.sleep(0.05)
        second = next(x for x in leaders if x.leader)
        j = leaders.index(second)
        assert made[j][-1].started.wait(5) and not made[j][-1].stopped.is_set()
        assert [x.leader for x in leaders].count(True) == 1
        assert first.status()["elections"] + leaders[1 - i].status()["elections"] == 2
    finally:
        shutdown.set()
        for t in threads:
            t.join(10)
    assert all(s.stopped.is_set() for stages in made for s in stages)


def test_a_database_gone_while_building_the_stages_gives_the_lease_back(postgres_url):
    attempts: list[int] = []
    stage = Stage()

    def build() -> list:
        attempts.append(1)
        if len(attempts) == 1:
            exc = sqlite3.OperationalError("PostgreSQL: connection refused")
            exc.sqlite_errorcode = 5  # what pgsql reports for an unreachable server
            raise exc
        return [stage]

    leader = LeaderStages(Election(postgres_url), build, interval=0.1)
    shutdown = threading.Event()
    thread = start(leader, shutdown)
    try:
        assert stage.started.wait(10) and leader.leader
        assert len(attempts) == 2 and leader.elections == 2
    finally:
        shutdown.set()
        thread.join(10)
    assert stage.stopped.is_set() and not leader.leader
