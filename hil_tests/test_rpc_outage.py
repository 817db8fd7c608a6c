"""The chain's JSON-RPC goes away while readings arrive (anvil behind a proxy the
test controls). Its own module: the gateway of these tests anchors on anvil."""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.mosquitto, pytest.mark.micropython, pytest.mark.anvil]

DRAIN = ("--exit-when-drained", "--stats")


def take(n: int) -> tuple[str, ...]:
    return ("--max-readings", str(n), *DRAIN)


def test_rpc_outage(hil, board, chain):
    """The chain's RPC goes away while readings arrive: they are stored and acked at
    once, batches wait, and every one is anchored exactly once when the RPC is back."""
    board.start(*take(hil.n(40)))
    hil.wait_signed(board, hil.n(5))
    chain.proxy.partition()
    hil.wait_signed(board, hil.n(40))
    time.sleep(hil.seconds(3.0))
    chain.proxy.heal()
    hil.finish([board], anchor_timeout=90)
    _check_roots_on_chain(hil.home.db_path, chain.rpc_url, chain.section["anchor"])


def _check_roots_on_chain(db, rpc_url: str, anchor: str) -> None:
    """Every batch root in the gateway's DB is the root the contract holds, once."""
    import sqlite3

    from web3 import Web3

    from terrapin.gateway.chain.node import artifact
    from terrapin.tools.devkit.chainkit import next_batch_id

    w3 = Web3(Web3.HTTPProvider(rpc_url))
    contract = w3.eth.contract(address=anchor, abi=artifact("TerrapinAnchor")["abi"])
    con = sqlite3.connect(db)
    batches = con.execute("SELECT id, root FROM batches ORDER BY id").fetchall()
    con.close()
    assert batches
    gateways = {e["args"]["gateway"] for e in contract.events.Anchored().get_logs(from_block=0)}
    assert len(gateways) == 1, gateways
    (gateway,) = gateways
    for batch_id, root in batches:
        got = contract.functions.rootOf(gateway, batch_id).call()
        assert got == bytes(root), f"batch {batch_id}"
    assert next_batch_id(contract, gateway) == len(batches)
