"""Bad config, missing sensors and sensor read errors: clear messages, the board keeps going."""

from __future__ import annotations

import json

import paho.mqtt.client as mqtt
import pytest

pytestmark = [pytest.mark.micropython]


def retained_status(host: str, port: int, timeout: float = 5.0) -> dict[str, bytes]:
    got: dict[str, bytes] = {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda c, u, m: got.__setitem__(m.topic, m.payload)
    client.connect(host, port)
    client.subscribe("terrapin/v1/+/status", qos=1)
    client.loop_start()
    import time

    deadline = time.time() + timeout
    while not got and time.time() < deadline:
        time.sleep(0.05)
    client.loop_stop()
    client.disconnect()
    return got


def test_invalid_json_exits_with_message(fw, micropython_exe, tmp_path):
    board = fw.AppBoard(micropython_exe, tmp_path, {})
    board.config.write_text('{"broker": {"host": "x",}')
    board.start()
    assert board.wait(20) == 2
    assert "config is not valid JSON" in board.console()


def test_bad_values_are_named_and_secrets_never_printed(fw, micropython_exe, tmp_path):
    cfg = fw.board_config(1883)
    cfg["broker"] = {"host": "127.0.0.1", "port": "abc", "user": "u", "password": "hunter2-secret"}
    cfg["sample_period_s"] = 0
    cfg["outbox"] = {"max_bytes": 4096, "segment_bytes": 4096}
    cfg["sensors_typo"] = []
    board = fw.AppBoard(micropython_exe, tmp_path, cfg)
    board.start()
    assert board.wait(20) == 2
    text = board.console()
    assert 'broker.port must be a whole number from 1 to 65535 (got "abc")' in text
    assert "sample_period_s must be a number from 0.001 to 86400 (got 0)" in text
    assert "outbox.max_bytes must be at least twice outbox.segment_bytes" in text
    assert "unknown key sensors_typo ignored (typo?)" in text
    assert "hunter2-secret" not in text
    flash = (board.flash / "key.bin").read_bytes()
    assert flash.hex() not in text and flash[4:36].hex() not in text, "private key printed"


@pytest.mark.mosquitto
def test_config_errors_reach_the_status_topic(fw, micropython_exe, mosquitto, tmp_path):
    cfg = fw.board_config(mosquitto.port, window=0, log="loud")
    board = fw.AppBoard(micropython_exe, tmp_path, cfg)
    board.start()
    assert board.wait(20) == 2, board.console()
    status = retained_status(mosquitto.host, mosquitto.port)
    raw = status[f"terrapin/v1/{board.address()}/status"]
    assert raw != b"offline", board.console() + mosquitto.log_tail()
    body = json.loads(raw)
    assert body["state"] == "config_error"
    assert any("window must be a whole number from 1 to 64" in e for e in body["errors"])
    assert any("log must be one of error, info, debug" in e for e in body["errors"])


@pytest.mark.mosquitto
def test_missing_and_failing_sensors_keep_the_board_running(
    fw, micropython_exe, mosquitto, gateway, tmp_path
):
    cfg = fw.board_config(mosquitto.port)
    cfg["sensors"] = [
        {"driver": "bme280", "sda": 21, "scl": 22},  # no I2C on the unix board
        {"driver": "thermo9000"},  # unknown driver
        {"driver": "ds18b20"},  # pin missing
        {"driver": "simulated", "name": "good", "quantities": ["temperature"]},
        {"driver": "simulated", "name": "flaky", "fail_every": 3},
    ]
    board = fw.AppBoard(micropython_exe, tmp_path, cfg)
    board.start("--max-readings", "12", "--exit-when-drained", "--stats")
    assert board.wait(30) == 0, board.console()
    text = board.console()
    assert "sensors[0] (bme280): no bme280 on the unix board (missing sensor)" in text
    assert "sensors[1]: unknown driver" in text and "thermo9000" in text
    assert 'sensors[2] (ds18b20) needs "pin"' in text
    assert "sensors[4] (flaky): simulated: injected read error" in text
    stats = board.stats()
    assert stats["readings"] == 12 and stats["sensor_failures"] == 4
    addr = board.address()
    assert gateway.seqs(addr) == set(range(1, 13))
    status = json.loads(gateway.status[addr]) if gateway.status[addr] != b"offline" else None
    assert status is None or any("bme280" in e for e in status["errors"])
