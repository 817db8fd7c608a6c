"""Three gateway instances on PostgreSQL and a shared subscription, under faults.

Simulated boards publish all along; kill -9 hits the elected anchorer and random
instances (each restarted, as systemd would), PostgreSQL restarts once and
Mosquitto once. At the end every published reading is acked and stored exactly
once, every stored reading is in exactly one anchored batch, batch ids run
0..n-1 with no gap, and the chain holds exactly those roots."""

from __future__ import annotations

import random
import time

import pytest

from terrapin.gateway.chain.node import Chain, ChainConfig
from terrapin.gateway.pgsql import PgConnection
from terrapin.hil.endstate import batch_problems
from terrapin.tools.devkit.chainkit import ANVIL_KEY, Anvil, deploy_on_rpc
from terrapin.tools.devkit.cluster import Cluster, ClusterHome
from terrapin.tools.devkit.gatewayhome import chain_section, start_broker

pytestmark = pytest.mark.timeout(240)

BOARDS = 4
RATE = 15.0  # readings/s per board


@pytest.fixture
def anvil_chain(anvil_exe, tmp_path):
    node = Anvil(anvil_exe, tmp_path, "--silent").start()
    try:
        deployed = deploy_on_rpc(node.url)
        section = chain_section(
            node.url,
            registry=deployed.registry,
            anchor=deployed.anchor,
            key_env="TERRAPIN_CHAIN_KEY",
            rpc_timeout=2,
            batch_size=100,
        )
        yield section
    finally:
        node.stop()


def wait_until(what: str, done, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout:.0f} s")
        time.sleep(0.2)


def test_three_instances_survive_kills_and_restarts(
    tmp_path, postgres_server, mosquitto_exe, anvil_chain, gw_tools, monkeypatch
):
    url = postgres_server.create_database()
    home = ClusterHome(tmp_path / "gw", url, anvil_chain, instances=3)
    broker = start_broker(home, extra_config="max_inflight_messages 1000")
    cluster = Cluster(home, env={"TERRAPIN_CHAIN_KEY": ANVIL_KEY})
    load = None
    rng = random.Random(int(time.time()))
    takeovers: list[float] = []
    try:
        cluster.start()
        first = cluster.leader()
        assert cluster.leaders() == [first]  # one anchorer, elected
        load = gw_tools.BoardLoad(home, broker, [home.add_sim_board() for _ in range(BOARDS)], RATE)
        load.start()
        faults = ["leader", "random", "postgres", "leader", "mosquitto", "random", "leader"]
        for fault in faults:
            time.sleep(rng.uniform(1.5, 3.0))
            if fault == "postgres":
                postgres_server.restart()
            elif fault == "mosquitto":
                broker.restart()
            else:
                victim = cluster.leader() if fault == "leader" else rng.randrange(3)
                was_leader = victim in cluster.leaders()
                killed_at = time.monotonic()
                cluster.kill(victim)
                if was_leader:
                    cluster.leader(timeout=20)
                    takeovers.append(time.monotonic() - killed_at)
                cluster.procs[victim].start(wait=False)
        load.stop()
        cluster.start()  # every instance up again for the drain

        resent = [0.0]

        def settled() -> bool:
            if time.monotonic() - resent[0] > 3.0:  # what a real board does until its ACK
                resent[0] = time.monotonic()
                for b in load.boards:
                    b.resend_unacked()
            return all(b.settled(load.published[b.address]) for b in load.boards)

        wait_until("every reading acked", settled, 60)
        wait_until("every reading anchored", lambda: _unbatched(url) == 0, 60)
        wait_until("every batch anchored", lambda: _unanchored(url) == 0, 60)
        assert len(cluster.leaders()) == 1

        db = PgConnection(url)
        total = 0
        for b in load.boards:
            want = load.published[b.address]
            rows = [
                r[0] for r in db.execute("SELECT seq FROM readings WHERE device = ?", (b.address,))
            ]
            total += len(want)
            missing = sorted(want - set(rows))
            assert not missing, f"board {b.hex}: lost {missing[:10]}\n{cluster.log_tail()}"
            assert len(rows) == len(set(rows)) == len(want), f"board {b.hex}: stored twice"
            assert not b.rejected, f"board {b.hex}: rejected {list(b.rejected.items())[:5]}"
        assert total >= BOARDS * RATE * 10  # load ran through all the faults
        monkeypatch.setenv("TERRAPIN_CHAIN_KEY", ANVIL_KEY)
        chain = Chain.connect(ChainConfig.from_mapping(anvil_chain))
        problems = batch_problems(url, chain.anchor, chain.address)
        assert not problems, "\n".join(problems)
        assert takeovers and max(takeovers) < 10.0, takeovers
        print(
            f"takeovers after killing the anchorer: {[round(t, 2) for t in takeovers]} s;"
            f" {total} readings, {cluster.kills} kills"
        )
    finally:
        if load is not None:
            load.close()
        cluster.stop()
        broker.stop()


def _unbatched(url: str) -> int:
    db = PgConnection(url)
    try:
        return db.execute(
            "SELECT COUNT(*) FROM readings r LEFT JOIN batch_leaves l ON l.reading_id = r.id"
            " WHERE l.reading_id IS NULL"
        ).fetchone()[0]
    finally:
        db.close()


def _unanchored(url: str) -> int:
    db = PgConnection(url)
    try:
        return db.execute(
            "SELECT COUNT(*) FROM batches WHERE status NOT IN ('anchored', 'confirmed')"
        ).fetchone()[0]
    finally:
        db.close()
