"""The serial uplink on UART0, beside the TP1 console (issue 18: an emulator whose
UART1 output never reaches the host). The real firmware app on the unix port
(hil_tests/mp_uart0_board.py) with its console and its uplink on ONE stream, read
through a model of the ESP32's 260-byte UART0 input ring that drops what does
not fit; the real host bridge demuxes that stream into the console (a local
serial socket, driven by the TP1 client of `terrapin device`) and the uplink
(to a real Mosquitto and the independent test gateway of conftest.py).

With the bridge's flow control, a burst from the broker (a retained OTA offer
of ~430 bytes, the acks of a backlog) never overflows the ring, the uplink
never drops, every TP1 request is answered with its own id while the backlog
drains, and every reading is stored once. Without it (`paced=False`, the same
test otherwise) the ring drops bytes: the model can tell."""

from __future__ import annotations

import json
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from terrapin.firmware import keystore
from terrapin.hil.boards import REPO, compile_firmware
from terrapin.hil.serialbridge import SerialBridge
from terrapin.tools.board.serialconsole import BoardConsole, Link, NoAnswer, open_port
from terrapin.tools.devkit.virtualboard import VirtualBoard
from terrapin.tools.micropython import ESP32_HEAP

pytestmark = [pytest.mark.micropython, pytest.mark.mosquitto]

SCRIPT = REPO / "hil_tests" / "mp_uart0_board.py"
READINGS = 30


def retain_offer(broker, addr: str) -> str:
    """A retained OTA offer for the board, as `terrapin device ota publish` leaves
    one: the board gets it at every SUBSCRIBE, ~430 bytes in one burst."""
    version = "uart0-burst-1"
    offer = {
        "v": 1,
        "version": version,
        "release": 7,
        "size": 1000,
        "sha256": "ab" * 32,
        "chunk": 256,
        "notes": "n" * 200,  # past the window (pieces), within the board's 512-byte packets
    }
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="ota-publisher")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    pub.publish(f"terrapin/v1/{addr}/ota", json.dumps(offer), qos=1, retain=True).wait_for_publish(
        5
    )
    pub.loop_stop()
    pub.disconnect()
    return version


@pytest.mark.parametrize("paced", [True, False], ids=["flow-control", "no-flow-control"])
def test_console_and_uplink_share_uart0(
    paced: bool, fw, gateway, mosquitto, micropython_exe, tmp_path: Path
) -> None:
    compile_firmware()
    flash = tmp_path / "flash"
    flash.mkdir()
    _priv, _pub, addr_b, _new = keystore.identity(str(flash))
    addr = addr_b.hex()
    version = retain_offer(mosquitto, addr)
    cfg = fw.board_config(mosquitto.port, serial_uplink={"uart": 0}, status_period_s=1)
    (flash / "config.json").write_text(json.dumps(cfg))
    gateway.ack_enabled = False  # a backlog first: nothing is acked yet
    vb = VirtualBoard(
        flash,
        script=SCRIPT,
        args=(str(REPO), "--config", "config.json", "--flash", ".", "--console")
        + ("--max-readings", str(READINGS), "--exit-when-drained", "--stats"),
        tcp_port=0,
        heapsize=ESP32_HEAP,
        deploy=False,
        restart=False,
    ).start()
    bridge = SerialBridge(vb.url, tmp_path / "uart0.log", console=True, paced=paced).start()
    link = Link(open_port(bridge.console_url))
    slowest, answers, unanswered = 0.0, 0, 0
    try:
        con = BoardConsole(link)
        con.wait_ready(60)

        def ask() -> None:
            nonlocal slowest, answers, unanswered
            t = time.monotonic()
            try:
                assert con.request("info", timeout=5)["addr"] == addr
            except NoAnswer:
                unanswered += vb.running()  # not the board's exit in mid-request
                return
            slowest = max(slowest, time.monotonic() - t)
            answers += 1

        t0 = time.monotonic()
        while time.monotonic() - t0 < 3:  # readings pile up unacked, resent each second
            ask()
        gateway.ack_enabled = True
        deadline = time.monotonic() + 90
        while vb.running() and time.monotonic() < deadline:
            ask()  # answered while the backlog drains over the same line
        while vb.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        code = vb.exit_codes[-1] if vb.exit_codes else None
        log = vb.console_log()
        context = f"\n--- board ---\n{log[-3000:]}"
        dropped = "[ring] dropped" in log
        if not paced:
            assert dropped, "no byte lost without flow control: the ring model is not biting"
            return
        assert not dropped, "the host overran the board's 260-byte input ring" + context
        assert code == 0, context
        assert bridge.windows == 1 and bridge.uplinks == 1, (bridge.uplinks, context)
        assert f"ota {version}: no ota_pubkey" in log, "the retained offer did not arrive" + context
        assert gateway.seqs(addr) == set(range(1, READINGS + 1)), context
        stats = json.loads(log.split("TP-STATS ", 1)[1].splitlines()[0])
        assert stats["pending"] == 0 and stats["acked"] == READINGS, stats
        assert unanswered == 0 and con.stale == 0, (unanswered, con.stale, context)
        assert answers >= 10 and slowest < 2.0, (answers, slowest, context)
        assert "Traceback" not in log and "out of memory" not in log, context
    finally:
        link.close()
        bridge.stop()
        vb.stop()
