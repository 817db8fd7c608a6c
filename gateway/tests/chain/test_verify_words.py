"""`terrapin verify` says what the bundle proves in words: board, seq, time (UTC), each
record's name, value and unit, the batch, block and time of the anchor (anvil)."""

from __future__ import annotations

import datetime as dt
import random
import re
from pathlib import Path

import pytest
from web3 import Web3

from terrapin.gateway.chain.anchorer import Anchorer
from terrapin.gateway.chain.batcher import Batcher
from terrapin.gateway.chain.node import Chain
from terrapin.gateway.protocol.envelope import build_envelope, decode_envelope
from terrapin.tools.cli.main import main
from terrapin.tools.devkit.chainkit import ANVIL_KEY, deploy_on_rpc, make_db
from terrapin.tools.devkit.simboard import SimBoard

pytestmark = pytest.mark.anvil

TIME = 1_790_000_000
RECORDS = (("temperature", "Cel", 19.1), ("humidity", "%RH", 48.25), ("pm2_5", "ug/m3", 3.0))


def test_verify_prints_the_reading_and_its_anchor(
    anvil, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("TERRAPIN_CHAIN_KEY", ANVIL_KEY)
    db = tmp_path / "gw.db"
    conn = make_db(db)
    board = SimBoard.make(random.Random(5))
    conn.execute(
        "INSERT INTO devices(address, pubkey, added_at) VALUES (?, ?, 0)",
        (board.address, board.pubkey),
    )
    # The board rounds to float32 (19.1 travels as 19.100000381469727).
    envelope = build_envelope(board.private, 7, TIME, RECORDS)
    conn.execute(
        "INSERT INTO readings(device, seq, digest, envelope, time, received_at) "
        "VALUES (?, 7, ?, ?, ?, ?)",
        (board.address, decode_envelope(envelope).digest, envelope, TIME, TIME + 1.0),
    )
    conn.commit()
    Batcher(db, batch_size=4).close_due(force=True)
    config = deploy_on_rpc(anvil.url)
    Anchorer(db, Chain.connect(config)).anchor_pending()
    bundle = tmp_path / "b.json"
    addr = "0x" + board.address.hex()
    assert main(["proof", addr, "7", "--db", str(db), "--out", str(bundle)]) == 0
    capsys.readouterr()

    assert main(["verify", str(bundle), "--rpc", anvil.url, "--anchor", config.anchor]) == 0
    out = capsys.readouterr().out
    words = out.split("What this bundle proves:", 1)[1]
    block = Web3(Web3.HTTPProvider(anvil.url)).eth.get_block("latest")
    mined = dt.datetime.fromtimestamp(block["timestamp"], dt.UTC)
    assert f"board     {addr}" in words
    assert re.search(r"^  seq       7$", words, re.M)
    assert "time      2026-09-21 14:13:20 UTC" in words  # TIME, by hand: 1790000000 s
    assert re.search(r"^    temperature  19\.1 Cel$", words, re.M), words
    assert re.search(r"^    humidity     48\.25 %RH$", words, re.M)
    assert re.search(r"^    pm2_5        3 ug/m3$", words, re.M)
    assert f"anchored  batch 0, block {block['number']}, {mined:%Y-%m-%d %H:%M:%S} UTC" in words
    assert f"contract {config.anchor.lower()}" in words.lower()

    # Offline: the same reading, but the anchor's time is not known and it says so.
    assert main(["verify", str(bundle)]) == 3
    out = capsys.readouterr().out
    assert "What the bundle claims (signed by the board; the anchor NOT checked):" in out
    assert "time not known (the chain was not asked)" in out
    assert "temperature  19.1 Cel" in out

    # A false bundle gets no description: nothing it says is vouched for.
    text = bundle.read_text().replace('"seq": 7', '"seq": 8')
    bundle.write_text(text)
    assert main(["verify", str(bundle), "--rpc", anvil.url, "--anchor", config.anchor]) == 1
    out = capsys.readouterr().out
    assert "What this bundle proves" not in out and "claims" not in out
