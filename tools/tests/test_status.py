"""`device status`: a board from the gateway's database and its status API (the
gateway's own Store, Stats and Api, on a free port)."""

from __future__ import annotations

import json
import time

from terrapin.gateway.api import Api
from terrapin.gateway.protocol.reasons import Reason
from terrapin.gateway.stats import Stats
from terrapin.gateway.store import Pending, Rejected, Store
from terrapin.tools.cli.main import main

BOARD = bytes.fromhex("4b62683727b68dce2ae023e62a98b98268e89e55")
PUB = bytes.fromhex("04" + "11" * 64)


def test_status_from_store_and_api(tmp_path, capsys):
    db = tmp_path / "gw.db"
    store = Store(db)
    try:
        store.add_device(BOARD, PUB)
        now = time.time()
        pending = [
            Pending(BOARD, seq, bytes([seq]) * 32, b"env", 1_700_000_000 + seq, now)
            for seq in (1, 2, 3)
        ]
        bad = Rejected(
            f"terrapin/v1/{BOARD.hex()}/reading", Reason.BAD_SIGNATURE, b"x", now, BOARD, 4
        )
        store.commit(pending, [bad])
    finally:
        store.close()
    stats = Stats()
    stats.status(BOARD, {"state": "online", "fw": "0.1.0", "outbox": 7, "seq": 3}, time.time())
    api = Api("127.0.0.1", 0, stats.snapshot).start()
    try:
        host, port = api.address
        url = f"http://{host}:{port}"
        args = ["device", "status", "0x" + BOARD.hex(), "--db", str(db), "--api", url]
        assert main([*args, "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert main(args) == 0
        text = capsys.readouterr().out
    finally:
        api.stop()
    g = result["gateway"]
    assert g["allowed"] and g["pubkey_known"] and g["readings"] == 3 and g["highest_seq"] == 3
    assert g["rejections"] == {"BAD_SIGNATURE": 1}
    assert result["board"]["outbox"] == 7 and result["gateway_api"] == "up"
    assert "readings stored: 3, highest seq 3" in text
    assert "rejected: BAD_SIGNATURE 1" in text
    assert "last status: online · fw 0.1.0 · seq 3 · outbox 7" in text


def test_status_mistakes(tmp_path, capsys):
    assert main(["device", "status", "nothex", "--db", str(tmp_path / "x.db")]) == 1
    assert "is not a board address" in capsys.readouterr().err
    assert main(["device", "status", BOARD.hex(), "--db", str(tmp_path / "none.db")]) == 1
    assert "no gateway database" in capsys.readouterr().err
    code = main(["device", "status", BOARD.hex(), "--config", str(tmp_path / "none.toml")])
    assert code == 2 and "no gateway config" in capsys.readouterr().err
