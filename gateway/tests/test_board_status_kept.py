"""An offline board keeps its last reported firmware, free heap and outbox depth on
/api/boards (with when it reported them), also after a gateway restart, when the
broker re-delivers only the retained `offline` (real Mosquitto, the gateway in a
thread, a simulated board's MQTT client)."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request

from terrapin.gateway.boardstatus import KeptStatus, file_for, with_last_known
from terrapin.tools.devkit.gatewayhome import GatewayHome, reload_broker, start_broker
from terrapin.tools.devkit.gatewayproc import GatewayThread
from terrapin.tools.devkit.simboard import SimBoard

FULL = {"state": "online", "fw": "0.1.0", "heap_free": 31136, "outbox": 7, "seq": 12}


def board_entry(home: GatewayHome, address: str) -> dict:
    url = f"http://127.0.0.1:{home.api_port}/api/boards/0x{address}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def wait_state(home: GatewayHome, address: str, state: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        entry = board_entry(home, address)
        if entry["state"] == state:
            return entry
        if time.monotonic() > deadline:
            raise AssertionError(f"board never reached state {state!r}: {entry}")
        time.sleep(0.2)


def test_an_offline_board_keeps_its_last_values_across_a_restart(tmp_path, mosquitto_exe):
    home = GatewayHome(tmp_path / "gw")
    broker = start_broker(home)
    key, password = home.add_sim_board()
    reload_broker(broker)
    gw = GatewayThread(home.config).start(timeout=60)
    board = SimBoard("127.0.0.1", home.mqtt_port, key, password=password)
    topic = f"terrapin/v1/{board.hex}/status"
    board.client.will_set(topic, b"offline", 1, True)  # as firmware/session.py sets it
    board.start()
    try:
        board.client.publish(topic, json.dumps(FULL).encode(), 1, True)
        online = wait_state(home, board.hex, "online")
        assert (online["firmware"], online["heap_free"], online["outbox"]) == ("0.1.0", 31136, 7)
        reported_at = online["values_at"]
        assert reported_at == online["status_at"]

        # The board drops off without a DISCONNECT (power cut): the broker publishes
        # its last will, the retained `offline`, and keeps only that.
        board.client.loop_stop()
        board.client.socket().close()
        offline = wait_state(home, board.hex, "offline")
        assert offline["online"] is False
        assert (offline["firmware"], offline["heap_free"], offline["outbox"]) == ("0.1.0", 31136, 7)
        assert offline["values_at"] == reported_at < offline["status_at"]

        gw.stop()
        gw = GatewayThread(home.config).start(timeout=60)  # gets the retained `offline` only
        again = wait_state(home, board.hex, "offline")
        assert (again["firmware"], again["heap_free"], again["outbox"]) == ("0.1.0", 31136, 7)
        assert again["values_at"] == reported_at
    finally:
        with contextlib.suppress(OSError):  # its socket is gone already
            board.stop()
        gw.stop()
        broker.stop()


def test_a_new_full_status_replaces_the_kept_values(tmp_path):
    kept = KeptStatus(file_for(tmp_path / "gateway.db"))
    board = "ab" * 20
    first = with_last_known(None, FULL, 100.0, kept, board)
    offline = with_last_known(first, {"state": "offline"}, 200.0, kept, board)
    assert offline["last_known"]["fw"] == "0.1.0" and offline["last_known"]["received_at"] == 100.0
    back = with_last_known(offline, dict(FULL, fw="0.2.0"), 300.0, kept, board)
    assert "last_known" not in back and back["fw"] == "0.2.0"
    again = with_last_known(back, {"state": "offline"}, 400.0, kept, board)
    assert again["last_known"]["fw"] == "0.2.0"
    # A restarted gateway (nothing in memory) reads the file.
    reread = KeptStatus(file_for(tmp_path / "gateway.db"))
    assert (
        with_last_known(None, {"state": "offline"}, 500.0, reread, board)["last_known"]
        == (again["last_known"])
    )


def test_a_damaged_file_is_ignored(tmp_path):
    path = file_for(tmp_path / "gateway.db")
    path.write_text("{not json")
    assert KeptStatus(path).values == {}
    path.write_text(json.dumps({"ab" * 20: {"fw": "0.1.0"}, "short": {"fw": "x"}, "cd" * 20: 5}))
    assert KeptStatus(path).values == {"ab" * 20: {"fw": "0.1.0"}}
