"""`terrapin verify` pins what it trusts (issue 14): attacks on anvil, and exit codes.

Before, `verify BUNDLE --rpc URL` trusted whatever `contract` the bundle named, so an
attacker's own registry and anchor on the same chain proved a reading the gateway never
stored (exit 0). Now the anchor is pinned (--anchor / --network), and the anchoring
transaction's sender must have been a registered gateway at the anchoring block."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from eth_account import Account

from terrapin.gateway.chain import bundle, merkle
from terrapin.gateway.chain.anchorer import Anchorer
from terrapin.gateway.chain.batcher import Batcher
from terrapin.gateway.chain.node import Chain, deploy, grant_gateway, rpc_web3, transact
from terrapin.gateway.chain.proof import make_bundle
from terrapin.tools.cli.main import main
from terrapin.tools.devkit.chainkit import ANVIL_KEY, add_readings, deploy_on_rpc, make_db
from terrapin.tools.devkit.simboard import SimBoard

pytestmark = pytest.mark.anvil

# Anvil's second default account (public test key): the attacker.
ATTACKER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"


@pytest.fixture
def network(anvil, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The real network on anvil: registry, anchor, one gateway that anchored a batch.
    Returns (anvil, config, a bundle the gateway wrote, the network file)."""
    monkeypatch.setenv("TERRAPIN_CHAIN_KEY", ANVIL_KEY)
    db = tmp_path / "gw.db"
    board = SimBoard.make(random.Random(41))
    readings = add_readings(make_db(db), [board], 4)
    Batcher(db, batch_size=4).close_due(force=True)
    config = deploy_on_rpc(anvil.url)
    Anchorer(db, Chain.connect(config)).anchor_pending()
    good = tmp_path / "good.json"
    good.write_text(make_bundle(db, board.address, readings[-1][2]).dumps())
    net = tmp_path / "network.json"
    net.write_text(
        json.dumps({"chain_id": 31337, "anchor": config.anchor, "registry": config.registry})
    )
    return anvil, config, good, net


def _rejected_reading_anchored(w3, sender, anchor, tmp_path: Path) -> Path:
    """A reading the gateway never stored (a board's signature over seq 999), anchored by
    `sender` on `anchor` in a tree of its own; the bundle that proves it."""
    board = SimBoard.make(random.Random(99))
    envelope, digest = board.signed_reading(999)
    tree = merkle.build_tree([(board.address, 999, digest), (board.address, 1000, bytes(32))])
    data = anchor.functions.anchor(0, tree.root, 2)._encode_transaction_data()
    receipt = transact(w3, sender, {"to": anchor.address, "data": data, "gas": 200_000})
    forged = bundle.Bundle(
        envelope=envelope,
        pubkey=board.pubkey,
        device=board.address,
        seq=999,
        digest=digest,
        leaf=tree.leaf(0),
        proof=tree.proof(0),
        root=tree.root,
        batch=0,
        chain_id=w3.eth.chain_id,
        contract=bytes.fromhex(anchor.address[2:]),
        tx=bytes(receipt["transactionHash"]),
        block=receipt["blockNumber"],
    )
    path = tmp_path / "forged.json"
    path.write_text(forged.dumps())
    return path


def _verify(capsys, *args: str) -> tuple[int, dict[str, dict], str]:
    code = main(["verify", *args, "--json"])
    out, err = capsys.readouterr()
    checks = {c["name"]: c for c in json.loads(out)} if out.strip() else {}
    return code, checks, err


def test_attacker_registry_and_anchor_on_the_same_chain_are_refused(
    network, tmp_path: Path, capsys
) -> None:
    anvil, config, good, net_file = network
    w3 = rpc_web3(anvil.url)
    attacker = Account.from_key(ATTACKER_KEY)
    registry, anchor = deploy(w3, attacker)  # the attacker's own pair
    grant_gateway(w3, attacker, registry, attacker.address)
    forged = _rejected_reading_anchored(w3, attacker, anchor, tmp_path)

    # Trusting the bundle's own contract is how it verified before; that is refused now.
    code, _, err = _verify(capsys, str(forged), "--rpc", anvil.url)
    assert code == 2 and "trust statement" in err
    # Pinned to the network's anchor: the bundle is false.
    for pin in (["--anchor", config.anchor], ["--network", str(net_file)]):
        code, checks, _ = _verify(capsys, str(forged), "--rpc", anvil.url, *pin)
        assert code == 1 and not checks["trusted anchor"]["ok"], checks
        assert "you trust" in checks["trusted anchor"]["detail"]
        # The gateway's real bundle verifies against the same pin.
        code, checks, _ = _verify(capsys, str(good), "--rpc", anvil.url, *pin)
        assert code == 0 and all(c["ok"] for c in checks.values()), checks


def test_an_unregistered_sender_anchoring_into_the_real_anchor_is_refused(
    network, tmp_path: Path, capsys
) -> None:
    """anchor() is open to any sender (its own namespace): registration is checked by the
    verifier at the anchoring block, so registering the sender afterwards does not help."""
    anvil, config, _, net_file = network
    w3 = rpc_web3(anvil.url)
    attacker = Account.from_key(ATTACKER_KEY)
    real = w3.eth.contract(address=config.anchor, abi=Chain.connect(config).anchor.abi)
    forged = _rejected_reading_anchored(w3, attacker, real, tmp_path)
    code, checks, _ = _verify(capsys, str(forged), "--rpc", anvil.url, "--network", str(net_file))
    assert code == 1, checks
    assert checks["trusted anchor"]["ok"] and checks["anchoring transaction"]["ok"]
    assert "was not a registered gateway at block" in checks["registered gateway"]["detail"]
    admin = Account.from_key(ANVIL_KEY)
    registry = Chain.connect(config).registry
    grant_gateway(w3, admin, registry, attacker.address)  # registered one block too late
    code, checks, _ = _verify(capsys, str(forged), "--rpc", anvil.url, "--anchor", config.anchor)
    assert code == 1 and not checks["registered gateway"]["ok"], checks


def test_a_gateway_revoked_after_anchoring_still_verifies(network, capsys) -> None:
    """Registration is read at the anchoring block, not now."""
    anvil, config, good, _ = network
    chain = Chain.connect(config)
    role = chain.registry.functions.GATEWAY_ROLE().call()
    data = chain.registry.functions.revokeRole(role, chain.address)._encode_transaction_data()
    transact(chain.w3, chain.account, {"to": chain.registry.address, "data": data})
    assert not chain.registry.functions.isGateway(chain.address).call()
    code, checks, _ = _verify(capsys, str(good), "--rpc", anvil.url, "--anchor", config.anchor)
    assert code == 0 and checks["registered gateway"]["ok"], checks


def test_exit_codes_a_script_can_use(network, tmp_path: Path, capsys) -> None:
    anvil, config, good, _ = network
    # 3: offline checks passed, nothing on chain (with or without a pin), and words say so.
    assert main(["verify", str(good)]) == 3
    out, err = capsys.readouterr()
    assert "NOTHING was checked on chain" in out and "not verified" in err
    assert main(["verify", str(good), "--anchor", config.anchor]) == 3
    capsys.readouterr()
    # 1: pinned to another anchor, even offline.
    other = "0x" + "11" * 20
    assert main(["verify", str(good), "--anchor", other]) == 1
    # 2: the node is unreachable; the bundle or the network file cannot be read.
    anvil.stop()
    assert main(["verify", str(good), "--rpc", anvil.url, "--anchor", config.anchor]) == 2
    assert "cannot reach the node" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "missing.json")]) == 2
    (tmp_path / "net-bad.json").write_text('{"chain_id": 31337, "anchor": "0x12"}')
    code = main(
        ["verify", str(good), "--rpc", anvil.url, "--network", str(tmp_path / "net-bad.json")]
    )
    assert code == 2
    assert "missing registry" in capsys.readouterr().err
    # A pinned chain id that is not the bundle's.
    (tmp_path / "net-other.json").write_text(
        json.dumps({"chain_id": 1, "anchor": config.anchor, "registry": config.registry})
    )
    assert main(["verify", str(good), "--network", str(tmp_path / "net-other.json")]) == 1
    assert "you trust 1" in capsys.readouterr().out


def test_a_root_nobody_anchored_never_reads_as_verified(network, tmp_path: Path, capsys) -> None:
    """A self-consistent bundle whose root was never anchored: exit 3 offline (with
    words), 1 on chain against the pinned anchor; never 0."""
    anvil, config, good, _ = network
    data = json.loads(good.read_text())
    board = SimBoard.make(random.Random(7))
    envelope, digest = board.signed_reading(5)
    tree = merkle.build_tree([(board.address, 5, digest)])
    data |= {
        "envelope": envelope.hex(),
        "pubkey": board.pubkey.hex(),
        "device": "0x" + board.address.hex(),
        "seq": 5,
        "digest": "0x" + digest.hex(),
        "leaf": "0x" + tree.leaf(0).hex(),
        "proof": [],
        "root": "0x" + tree.root.hex(),
    }
    path = tmp_path / "unanchored.json"
    path.write_text(json.dumps(data))
    assert main(["verify", str(path)]) == 3
    out, err = capsys.readouterr()
    assert "NOTHING was checked on chain" in out and "not verified" in err
    code, checks, _ = _verify(capsys, str(path), "--rpc", anvil.url, "--anchor", config.anchor)
    assert code == 1 and not checks["anchoring transaction"]["ok"], checks
