"""End to end: the real firmware on the unix port against the real gateway.

`terrapin gateway init` makes the gateway home (Mosquitto password file and
ACL), the board's address is allow-listed with `gateway device add`, and the
board logs in with its own broker user. Every reading the board stored must
end up in the gateway's SQLite exactly once, acked, and the outbox drains.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time

import pytest
from click.testing import CliRunner

from terrapin.firmware import keystore
from terrapin.tools.devkit.broker import Mosquitto, free_port

pytestmark = [pytest.mark.micropython, pytest.mark.mosquitto]


def cli(*args: str) -> str:
    from terrapin.tools.cli.gateway import gateway

    result = CliRunner().invoke(gateway, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_virtual_board_with_the_real_gateway(fw, micropython_exe, mosquitto_exe, tmp_path):
    from terrapin.gateway.config import load_config
    from terrapin.gateway.server import Gateway

    home = tmp_path / "gw"
    mqtt_port, api_port = free_port(), free_port()
    cli("init", "--dir", str(home), "--mqtt-port", str(mqtt_port), "--api-port", str(api_port))
    # The board's key is made on "its flash" first (as on first boot), then allow-listed.
    cfg = fw.board_config(mqtt_port)
    board = fw.AppBoard(micropython_exe, tmp_path, cfg)
    board.flash.mkdir(parents=True, exist_ok=True)
    _priv, _pub, addr, _new = keystore.identity(str(board.flash))
    added = json.loads(
        cli("device", "add", addr.hex(), "--json", "--config", str(home / "gateway.toml"))
    )
    cfg["broker"].update({"user": addr.hex(), "password": added["mqtt_password"]})
    board.config.write_text(json.dumps(cfg))

    mq = home / "mosquitto"
    broker = Mosquitto(
        mq / "run", port=mqtt_port, password_file=mq / "passwd", acl_file=mq / "acl"
    ).start()  # fmt: skip
    gateway = Gateway(load_config(home / "gateway.toml"))
    shutdown = threading.Event()
    thread = threading.Thread(target=gateway.run, args=(shutdown,), daemon=True)
    try:
        broker.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        time.sleep(0.3)
        thread.start()
        assert gateway.ingest.connected.wait(10), "gateway did not connect"
        time.sleep(0.2)
        board.start("--max-readings", "25", "--exit-when-drained", "--stats")
        assert board.wait(60) == 0, board.console()
        stats = board.stats()
        assert stats["pending"] == 0 and stats["acked"] >= 25 and stats["rejected"] == 0
    finally:
        shutdown.set()
        thread.join(15)
        broker.stop()
    db = load_config(home / "gateway.toml").store.path
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT seq FROM readings WHERE device = ?", (addr,)).fetchall()
    assert sorted(r[0] for r in rows) == list(range(1, 26)), "each reading stored exactly once"
