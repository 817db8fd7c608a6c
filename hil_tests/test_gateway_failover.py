"""HIL scenario `gateway_failover`: three gateway instances on PostgreSQL share the
readings of real firmware boards (MQTT shared subscription) and elect one anchorer.

kill -9 hits the anchorer and random instances (each restarted, as systemd would),
PostgreSQL restarts once and Mosquitto once, while the boards publish. The end
state is every scenario's (hil.finish: each signed reading stored once, verified,
anchored, outboxes empty) plus the ledger's: batch ids 0..n-1 with no gap, each
reading in one batch, one mined transaction per batch, exactly those roots on chain.
Its own module: the gateway of this module is the three-instance cluster.
"""

from __future__ import annotations

import random
import time

import pytest

from terrapin.hil.endstate import batch_problems
from terrapin.tools.devkit.cluster import Cluster, ClusterHome

pytestmark = [pytest.mark.mosquitto, pytest.mark.micropython, pytest.mark.anvil]

DRAIN = ("--exit-when-drained", "--stats")
INSTANCES = 3


def take(n: int) -> tuple[str, ...]:
    return ("--max-readings", str(n), *DRAIN)


@pytest.fixture(scope="module")
def gateway_home(tmp_path_factory, chain, postgres_server) -> ClusterHome:
    url = postgres_server.create_database()
    return ClusterHome(tmp_path_factory.mktemp("gateway"), url, chain.section, instances=INSTANCES)


@pytest.fixture(scope="module")
def gateway(gateway_home: ClusterHome, broker, chain):
    cluster = Cluster(gateway_home, env=chain.env).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_gateway_failover(hil, boards, gateway, broker, postgres_server, chain):
    """kill -9 the anchorer twice and a random instance once, restart PostgreSQL and
    Mosquitto, under load from two boards: 0 lost, 0 duplicated, 0 double-anchored."""
    rng = random.Random(int(time.time()))
    kills = gateway.kills
    fleet = [boards("b0"), boards("b1")]
    total = hil.n(70)
    for b in fleet:
        b.start(*take(total))
    faults = ["leader", "postgres", "random", "mosquitto", "leader"]
    for i, fault in enumerate(faults, 1):
        hil.wait_signed(fleet[0], min(total, hil.n(10) * i))
        if fault == "postgres":
            postgres_server.restart()
        elif fault == "mosquitto":
            broker.stop()
            time.sleep(hil.seconds(0.5))
            broker.start()
        else:
            victim = gateway.leader() if fault == "leader" else rng.randrange(INSTANCES)
            gateway.kill(victim)
            time.sleep(hil.seconds(0.5))
            gateway.procs[victim].start(wait=False)
    gateway.start()  # every instance back for the drain
    assert len(gateway.leaders()) <= 1
    hil.finish(fleet, anchor_timeout=60)
    assert gateway.kills == kills + 3
    assert len(gateway.leaders()) == 1
    contract, address = _anchor(chain)
    problems = batch_problems(gateway_home_url(hil), contract, address)
    assert not problems, "\n".join(problems)


def gateway_home_url(hil) -> str:
    return hil.home.store_url


def _anchor(chain):
    """The anchor contract (read through the node itself) and the one gateway that
    anchored on it."""
    from web3 import Web3

    from terrapin.gateway.chain.node import artifact

    w3 = Web3(Web3.HTTPProvider(chain.rpc_url))
    contract = w3.eth.contract(
        address=chain.section["anchor"], abi=artifact("TerrapinAnchor")["abi"]
    )
    gateways = {e["args"]["gateway"] for e in contract.events.Anchored().get_logs(from_block=0)}
    assert len(gateways) == 1, f"anchored by {gateways}: the instances share one gateway key"
    return contract, gateways.pop()
