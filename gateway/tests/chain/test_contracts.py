"""The contracts: rebuild identically, authorisation, sequential batches, MerkleProof and
ecrecover views, gas per anchor. Each chain test runs on the embedded chain and on anvil."""

from __future__ import annotations

import json
import random
import subprocess

import pytest
from eth_account import Account
from eth_tester.exceptions import TransactionFailed
from web3.exceptions import ContractLogicError

from terrapin.gateway.chain import bundle, merkle
from terrapin.gateway.chain.node import BUILD_DIR, Chain, ChainConfig, transact
from terrapin.gateway.protocol.signature import recover_signer
from terrapin.tools.devkit.chainkit import ANVIL_KEY, REPO, deploy_on_rpc
from terrapin.tools.devkit.simboard import SimBoard

GAS_TARGET = 60_000
# web3 turns anvil's revert into ContractLogicError; eth-tester's custom errors surface raw.
REVERT = (ContractLogicError, TransactionFailed)


def test_artifacts_rebuild_identically(node_exe: str) -> None:
    result = subprocess.run(
        [node_exe, "tools/js/build-contracts.mjs", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for name in ("TerrapinRegistry", "TerrapinAnchor"):
        art = json.loads((BUILD_DIR / f"{name}.json").read_text())
        assert art["compiler"]["version"].startswith("0.8.30+")
        assert art["compiler"]["settings"]["optimizer"] == {"enabled": True, "runs": 200}
        assert len(art["settingsHash"]) == 64
        # Creation code opens by setting the free-memory pointer (PUSH 0x80/0x160.., 0x40, MSTORE).
        assert "604052" in art["bytecode"][:16] and len(art["bytecode"]) > 1000


@pytest.fixture(params=["embedded", "anvil"])
def chain(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Chain:
    if request.param == "embedded":
        return Chain.connect(ChainConfig())
    anvil = request.getfixturevalue("anvil")
    monkeypatch.setenv("TERRAPIN_CHAIN_KEY", ANVIL_KEY)
    return Chain.connect(deploy_on_rpc(anvil.url))


def _anchor(chain: Chain, account, batch_id: int, root: bytes, count: int):
    data = chain.anchor.functions.anchor(batch_id, root, count)._encode_transaction_data()
    return transact(chain.w3, account, {"to": chain.anchor.address, "data": data, "gas": 200_000})


def test_only_gateways_anchor_and_only_the_admin_grants(chain: Chain) -> None:
    stranger = Account.create()
    transact(chain.w3, chain.account, {"to": stranger.address, "value": 10**18})
    root = bytes(range(32))
    fn = chain.anchor.functions.anchor(0, root, 1)
    with pytest.raises(REVERT):
        fn.call({"from": stranger.address})
    role = chain.registry.functions.GATEWAY_ROLE().call()
    with pytest.raises(REVERT):
        chain.registry.functions.grantRole(role, stranger.address).call({"from": stranger.address})
    assert chain.registry.functions.isGateway(chain.address).call()
    data = chain.registry.functions.revokeRole(role, chain.address)._encode_transaction_data()
    transact(chain.w3, chain.account, {"to": chain.registry.address, "data": data})
    assert not chain.registry.functions.isGateway(chain.address).call()
    with pytest.raises(REVERT):
        fn.call({"from": chain.address})


def test_batches_are_strictly_sequential_and_never_anchored_twice(chain: Chain) -> None:
    fn = chain.anchor.functions
    with pytest.raises(REVERT):
        fn.anchor(1, b"\1" * 32, 1).call({"from": chain.address})  # gap
    with pytest.raises(REVERT):
        fn.anchor(0, bytes(32), 1).call({"from": chain.address})  # zero root
    with pytest.raises(REVERT):
        fn.anchor(0, b"\1" * 32, 0).call({"from": chain.address})  # empty batch
    receipt = _anchor(chain, chain.account, 0, b"\1" * 32, 5)
    event = chain.anchor.events.Anchored().process_receipt(receipt)[0]["args"]
    assert (event["batchId"], event["root"], event["count"], event["gateway"]) == (
        0,
        b"\1" * 32,
        5,
        chain.address,
    )
    with pytest.raises(REVERT):
        fn.anchor(0, b"\2" * 32, 5).call({"from": chain.address})  # twice
    assert fn.rootOf(0).call() == b"\1" * 32
    assert fn.nextBatchId().call() == 1
    assert fn.totalReadings().call() == 5


def test_verify_reading_matches_python_proofs_and_signatures(chain: Chain) -> None:
    rng = random.Random(7)
    boards = [SimBoard.make(rng) for _ in range(3)]
    readings = []
    for i in range(37):
        board = boards[i % 3]
        envelope, digest = board.signed_reading(i + 1)
        readings.append((board, i + 1, digest, envelope))
    tree = merkle.build_tree([(b.address, s, d) for b, s, d, _ in readings])
    _anchor(chain, chain.account, 0, tree.root, len(readings))
    fn = chain.anchor.functions
    for i, (board, seq, digest, envelope) in enumerate(readings):
        proof = tree.proof(i)
        address = chain.w3.to_checksum_address(board.address)
        assert fn.leafHash(address, seq, digest).call() == tree.leaf(i)
        assert fn.verifyReading(0, address, seq, digest, proof).call()
        assert not fn.verifyReading(1, address, seq, digest, proof).call()  # not anchored
        assert not fn.verifyReading(0, address, seq + 1, digest, proof).call()
        sig = bundle.parse_envelope(envelope).signature
        _, v = recover_signer(digest, sig, board.address)
        assert fn.verifyReadingSigned(0, address, seq, digest, proof, sig, v).call()
        assert fn.verifyReadingSigned(0, address, seq, digest, proof, sig, v + 27).call()
        assert not fn.verifyReadingSigned(0, address, seq, digest, proof, sig, 1 - v).call()
        other = chain.w3.to_checksum_address(boards[(i + 1) % 3].address)
        assert not fn.verifyReadingSigned(0, other, seq, digest, proof, sig, v).call()


def test_gas_per_anchor_is_flat_and_under_target(chain: Chain) -> None:
    used = [
        _anchor(chain, chain.account, i, bytes([i + 1]) * 32, count)["gasUsed"]
        for i, count in enumerate([1, 1000, 100_000, 7])
    ]
    assert max(used) <= GAS_TARGET, used
    assert max(used) - min(used) <= 100, used
