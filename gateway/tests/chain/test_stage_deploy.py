"""Wiring the gateway and the demo use, deployment to a JSON-RPC chain with a keystore,
config errors, and the key staying out of logs."""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account

from terrapin.gateway.chain.node import Chain, ChainConfig
from terrapin.gateway.chain.proof import make_bundle
from terrapin.gateway.chain.stage import stages
from terrapin.gateway.errors import ConfigError
from terrapin.tools.devkit.chainkit import ANVIL_KEY, add_readings, make_db
from terrapin.tools.devkit.simboard import SimBoard
from terrapin.tools.verifier import Trust, run_checks


def test_demo_path_on_the_embedded_chain(tmp_path: Path, caplog, monkeypatch) -> None:
    key = Account.create().key.hex()
    monkeypatch.setenv("TERRAPIN_CHAIN_KEY", key)
    caplog.set_level(logging.DEBUG)
    db = tmp_path / "gw.db"
    readings = add_readings(make_db(db), [SimBoard.make(random.Random(5))], 7)
    batcher, anchorer = stages(db, {"batch_size": 4, "confirmations": 2})
    assert [b.count for b in batcher.close_due(force=True)] == [4, 3]
    anchorer.anchor_pending(until="confirmed")
    _, board, seq = readings[-1]
    bundle = make_bundle(db, board.address, seq)
    trust = Trust(anchor=bytes.fromhex(anchorer.chain.anchor.address[2:]))
    checks = run_checks(bundle.to_json(), w3=anchorer.chain.w3, trust=trust)
    assert checks.ok, [c for c in checks.items if not c.ok]
    assert [c.name for c in checks.items][-1] == "contract views"
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert key.removeprefix("0x") not in text


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ({"batch_sise": 5}, "unknown [chain] key"),
        ({"fee_bump": 1.05}, "10%"),
        ({"confirmations": 0}, "at least 1"),
        ({"network": "ftp://x"}, "JSON-RPC URL"),
        ({"network": "http://127.0.0.1:8545"}, "registry and anchor addresses"),
    ],
)
def test_config_mistakes_say_what_to_fix(section: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("[", r"\[")):
        ChainConfig.from_mapping(section)


def _deploy(url: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "terrapin.tools.cli.main", "chain", "deploy", "--rpc", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in {**os.environ, **env}.items() if v is not None},
    )


def test_deploy_with_a_keystore_then_connect(anvil, tmp_path: Path, monkeypatch) -> None:
    keystore = tmp_path / "deployer.json"
    # pbkdf2 with few rounds: the format is the real one, the test stays fast
    keystore.write_text(
        json.dumps(Account.encrypt(ANVIL_KEY, "s3cret", kdf="pbkdf2", iterations=1000))
    )
    env = {"TERRAPIN_CHAIN_KEY": None, "TERRAPIN_KEYSTORE_PASSWORD": "wrong"}
    bad = _deploy(anvil.url, "--keystore", str(keystore), env=env)
    assert bad.returncode == 2 and "wrong password" in bad.stderr
    env["TERRAPIN_KEYSTORE_PASSWORD"] = "s3cret"
    network = tmp_path / "network.json"
    good = _deploy(anvil.url, "--keystore", str(keystore), "--network-file", str(network), env=env)
    assert good.returncode == 0, good.stderr
    assert "s3cret" not in good.stdout + good.stderr
    assert ANVIL_KEY[2:] not in good.stdout + good.stderr
    lines = dict(line.split(" = ") for line in good.stdout.splitlines() if " = " in line)
    monkeypatch.setenv("TERRAPIN_KEYSTORE_PASSWORD", "s3cret")
    chain = Chain.connect(ChainConfig.from_mapping({k: v.strip('"') for k, v in lines.items()}))
    assert chain.registry.functions.isGateway(chain.address).call()
    assert chain.anchor.functions.registry().call() == chain.registry.address
    published = {
        "chain_id": 31337,
        "anchor": chain.anchor.address,
        "registry": chain.registry.address,
    }
    assert json.loads(network.read_text()) == published  # what `verify --network` pins
    nokey = _deploy(anvil.url, env={"TERRAPIN_CHAIN_KEY": None})
    assert nokey.returncode == 1 and "no deployer key" in nokey.stderr


def test_server_factories_share_one_chain_and_report_status(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from terrapin.gateway.chain import stage

    db = tmp_path / "gw.db"
    add_readings(make_db(db), [SimBoard.make(random.Random(8))], 3)
    cfg = SimpleNamespace(
        store=SimpleNamespace(path=str(db)), sections={"chain": {"batch_size": 2}}
    )
    batcher, anchorer = stage.batcher(cfg), stage.anchorer(cfg)
    assert stage.chain_for(cfg) is anchorer.chain  # the rewards stage gets the same chain
    assert batcher.status()["waiting"] == 3
    batcher.close_due()
    anchorer.anchor_pending()
    status = anchorer.status()
    assert status["batches"] == {"confirmed": 1}
    assert status["last_anchored"]["batch"] == 0 and status["error"] is None
    assert batcher.status()["waiting"] == 1
