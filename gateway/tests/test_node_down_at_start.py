"""`[chain] network` down when the gateway starts: it starts anyway, stores and acks
readings, says "node unreachable since ..." and anchors once the node is up (anvil
started late, with the contracts deployed before: its state file)."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

from web3 import Web3

from terrapin.gateway.chain.node import artifact
from terrapin.tools.devkit.chainkit import ANVIL_KEY, Anvil, deploy_on_rpc
from terrapin.tools.devkit.gatewayhome import GatewayHome, chain_section, start_broker
from terrapin.tools.devkit.gatewayproc import RUN_COMMAND, GatewayProcess
from terrapin.tools.devkit.simboard import SimBoard

ENV = {"TERRAPIN_CHAIN_KEY": ANVIL_KEY}
PER_BOARD = 20


def _batches(db: Path) -> list[tuple]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute("SELECT id, root, status, count FROM batches ORDER BY id").fetchall()
    finally:
        conn.close()


def _wait(what: str, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_gateway_starts_with_the_node_down_and_anchors_when_it_comes(
    anvil_exe, mosquitto_exe, tmp_path, gw_tools
):
    node = Anvil(anvil_exe, tmp_path, "--silent", "--state", str(tmp_path / "anvil.json"))
    node.start()
    deployed = deploy_on_rpc(node.url)
    node.stop()  # down before the gateway starts; its state (the contracts) is kept
    section = chain_section(
        node.url, registry=deployed.registry, anchor=deployed.anchor, rpc_timeout=2
    )
    home = GatewayHome(tmp_path / "gw", chain=section)
    broker = start_broker(home)
    gw = GatewayProcess(home, env=ENV)
    boards: list[SimBoard] = []
    try:
        creds = [home.add_sim_board() for _ in range(2)]
        gw_tools.reload_broker(broker)
        gw.start()  # today: a 137-line traceback and exit code 1
        anchor = gw.status()["stages"]["Anchorer"]
        assert anchor["node"].startswith("unreachable since "), anchor
        assert "chain unreachable" in anchor["error"], anchor
        shown = subprocess.run(
            [*RUN_COMMAND[:-1], "status", "--config", str(home.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "Anchorer: node unreachable since " in shown.stdout, shown.stdout + shown.stderr
        assert "connection refused" in shown.stdout, shown.stdout

        boards = [SimBoard("127.0.0.1", home.mqtt_port, k, password=pw).start() for k, pw in creds]
        published = {b.address: set(range(1, PER_BOARD + 1)) for b in boards}
        for b in boards:
            for seq in published[b.address]:
                b.publish(b.envelope(seq), seq)
        gw_tools.wait_settled(boards, published, timeout=30)
        gw_tools.check_exactly_once(home.db_path, boards, published, gw.log_tail())
        assert all(status != "anchored" for _, _, status, _ in _batches(home.db_path))

        node.start()  # the node comes back
        anchored = _wait(
            "every reading anchored",
            lambda: (
                (b := _batches(home.db_path))
                and all(s in ("anchored", "confirmed") for _, _, s, _ in b)
                and sum(n for *_, n in b) == 2 * PER_BOARD
                and b
            ),
            timeout=90,
        )
        anchor = gw.status()["stages"]["Anchorer"]
        assert anchor["node"] == "reachable" and anchor["error"] is None, anchor
        contract = Web3(Web3.HTTPProvider(node.url)).eth.contract(
            address=deployed.anchor, abi=artifact("TerrapinAnchor")["abi"]
        )
        gateway_address = anchor["gateway"]
        for batch_id, root, _, _ in anchored:
            assert bytes(contract.functions.rootOf(gateway_address, batch_id).call()) == root
        assert gw.running()
    finally:
        for b in boards:
            b.stop()
        gw.stop()
        broker.stop()
        node.stop()
