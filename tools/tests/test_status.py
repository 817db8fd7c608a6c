"""`device status`: a board from the gateway's database and its status API (the
gateway's own Store, Stats and Api, on a free port)."""

from __future__ import annotations

import json
import re
import time

import pytest

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


def _store_signed(db, board, seqs) -> None:
    from terrapin.gateway.protocol.envelope import decode_envelope

    store = Store(db)
    try:
        store.add_device(board.address, board.pubkey)
        now = time.time()
        pending = []
        for seq in seqs:
            t = 1_790_000_000 + seq
            env = board.envelope(seq, t=t)
            pending.append(Pending(board.address, seq, decode_envelope(env).digest, env, t, now))
        store.commit(pending, [])
    finally:
        store.close()


def test_status_shows_the_latest_values_and_whether_they_are_anchored(tmp_path, capsys):
    import random

    from terrapin.gateway.chain.stage import stages
    from terrapin.tools.devkit.simboard import SimBoard

    db = tmp_path / "gw.db"
    board = SimBoard.make(random.Random(3))
    _store_signed(db, board, [1, 2, 3])
    args = ["device", "status", board.address.hex(), "--db", str(db)]

    def text() -> str:
        assert main(args) == 0
        return capsys.readouterr().out

    out = text()
    assert "latest reading: seq 3, 2026-09-21 14:13:23 UTC, received" in out
    assert "    temperature  21.5 Cel\n    humidity     48.25 %RH\n" in out
    assert "latest reading on chain: NOT anchored yet: stored, not in a batch" in out
    batcher, anchorer = stages(db, {"batch_size": 10, "gas_limit": 120_077})
    batcher.close_due(force=True)
    assert "latest reading on chain: NOT anchored yet: in batch 0 (pending)" in text()
    anchorer.anchor_pending()
    block = anchorer.status()["last_anchored"]["block"]
    on_chain = rf"latest reading on chain: (anchored|confirmed) in batch 0, block {block} \(tx 0x"
    assert re.search(on_chain, text())
    assert main([*args, "--json"]) == 0
    g = json.loads(capsys.readouterr().out)["gateway"]
    assert g["last_values"][0] == {"name": "temperature", "value": 21.5, "unit": "Cel"}
    assert g["last_anchor"]["state"] in ("anchored", "confirmed")


@pytest.mark.anvil
def test_status_shows_the_owner_right_after_a_bind(anvil_exe, tmp_path, capsys, monkeypatch):
    """The database learns a binding only when the rewards stage next settles an epoch;
    `device status` asks the registry, so the owner shows as soon as bindBoard is mined."""
    import random

    from eth_account import Account
    from web3 import Web3

    from terrapin.firmware import secp256k1
    from terrapin.gateway.rewards import binding as rewards_binding
    from terrapin.gateway.rewards import tables as rewards_store
    from terrapin.gateway.rewards.onchain import bind_board, binding_contract
    from terrapin.tools.devkit import chainkit
    from terrapin.tools.devkit.simboard import SimBoard

    owner = "0x" + "ab" * 20
    db = tmp_path / "gw.db"
    board = SimBoard.make(random.Random(4))
    _store_signed(db, board, [1])
    rewards_store.connect(db).close()  # rewards tables, no binding synced: the old trap
    node = chainkit.Anvil(anvil_exe, tmp_path).start()
    try:
        cfg = chainkit.deploy_on_rpc(node.url)
        args = ["device", "status", "0x" + board.address.hex(), "--db", str(db)]
        assert main(args) == 0
        assert "pass --rpc URL --contract REGISTRY to ask the chain" in capsys.readouterr().out
        chain = ["--rpc", node.url, "--contract", cfg.registry]
        assert main([*args, *chain]) == 0
        assert "owner: not bound (registry" in capsys.readouterr().out

        w3 = Web3(Web3.HTTPProvider(node.url))
        registry = binding_contract(w3, cfg.registry)
        digest = rewards_binding.bind_digest(owner, 0, w3.eth.chain_id, cfg.registry)
        sig, v = secp256k1.sign_recoverable(board.key, digest)
        sender = Account.from_key(chainkit.ANVIL_KEY)
        bind_board(
            w3,
            sender,
            registry,
            "0x" + board.address.hex(),
            owner,
            rewards_binding.pack_signature(sig, v),
        )

        assert main([*args, *chain]) == 0
        out = capsys.readouterr().out
        assert f"owner: {owner} (registry {cfg.registry}, on chain now)" in out
        # From the gateway config's JSON-RPC [chain] alone (what `device status` on the Pi uses).
        toml = tmp_path / "gateway.toml"
        toml.write_text(
            f'[store]\npath = "{db}"\n[api]\nenabled = false\n'
            f'[chain]\nnetwork = "{node.url}"\nregistry = "{cfg.registry}"\n'
        )
        assert main(["device", "status", board.address.hex(), "--config", str(toml)]) == 0
        assert f"owner: {owner} (registry {cfg.registry}" in capsys.readouterr().out
    finally:
        node.stop()
    # The node gone: said in one line, no traceback, the rest still shown.
    assert main([*args, *chain]) == 0
    out = capsys.readouterr().out
    assert "owner: cannot ask the chain (" in out and "readings stored: 1" in out
