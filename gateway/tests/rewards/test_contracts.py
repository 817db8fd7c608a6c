"""BoardBinding and TerrapinRewards on the embedded chain and on anvil, attacks included."""

from __future__ import annotations

import ast

import coincurve
import pytest
from eth_tester.exceptions import TransactionFailed
from web3 import Web3
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD

from terrapin.gateway.chain.node import ChainError
from terrapin.gateway.rewards import distribution
from terrapin.gateway.rewards import onchain as rewards_chain
from terrapin.gateway.rewards.binding import bind_digest, pack_signature

BOARD_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
BOARD = "0x" + Web3.keccak(coincurve.PrivateKey(BOARD_KEY).public_key.format(False)[1:])[-20:].hex()
ALICE, BOB, CAROL = ("0x" + c * 40 for c in "abc")


def board_signs(digest: bytes, key: bytes = BOARD_KEY) -> bytes:
    """What the board returns over its console (sign_recoverable), packed for bindBoard."""
    sig = coincurve.PrivateKey(key).sign_recoverable(digest, hasher=None)
    return pack_signature(sig[:64], sig[64])


def revert_data(exc: Exception) -> bytes:
    """The revert data of a failed call, from web3 (anvil) or eth-tester (embedded)."""
    if isinstance(exc, ContractLogicError):
        return bytes.fromhex(str(exc.data).removeprefix("0x"))
    text = str(exc).split("execution reverted: ", 1)[1]
    return ast.literal_eval(text)


def reverts(call, sender, error: str):
    """`call` reverts with the custom error named `error` (checked by its selector)."""
    (entry,) = [e for e in call.contract_abi if e["type"] == "error" and e["name"] == error]
    signature = f"{error}({','.join(i['type'] for i in entry['inputs'])})"
    with pytest.raises((ContractLogicError, TransactionFailed)) as info:
        call.call({"from": sender.address})
    assert revert_data(info.value)[:4] == Web3.keccak(text=signature)[:4], info.value


def cs(address: str) -> str:
    return Web3.to_checksum_address(address)


# -- board binding -------------------------------------------------------------------------


def test_bind_rebind_and_every_forgery(net, compiled):
    w3, relayer = net.w3, net.accounts[0]
    harness = compiled["BoardBindingHarness"]
    contract = net.deploy(harness)
    other_contract = net.deploy(harness)
    chain_id = w3.eth.chain_id
    binding = rewards_chain.binding_contract(w3, contract.address)

    assert contract.functions.bindDigest(cs(ALICE), 0).call() == bind_digest(
        ALICE, 0, chain_id, contract.address
    )

    # Forged: signed by another key for the right message.
    forged = board_signs(bind_digest(ALICE, 0, chain_id, contract.address), key=b"\x09" * 32)
    reverts(
        contract.functions.bindBoard(cs(BOARD), cs(ALICE), forged), relayer, "BoardSignatureInvalid"
    )
    # Replays of the board's own signature made for another chain id / another contract.
    other_chain = board_signs(bind_digest(ALICE, 0, chain_id + 1, contract.address))
    reverts(
        contract.functions.bindBoard(cs(BOARD), cs(ALICE), other_chain),
        relayer,
        "BoardSignatureInvalid",
    )
    other_addr = board_signs(bind_digest(ALICE, 0, chain_id, other_contract.address))
    reverts(
        contract.functions.bindBoard(cs(BOARD), cs(ALICE), other_addr),
        relayer,
        "BoardSignatureInvalid",
    )
    # A valid signature for Alice cannot bind the board to Bob.
    good = board_signs(bind_digest(ALICE, 0, chain_id, contract.address))
    reverts(
        contract.functions.bindBoard(cs(BOARD), cs(BOB), good), relayer, "BoardSignatureInvalid"
    )
    # A high-s twin of a valid signature is refused (no malleability).
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    high = (
        good[:32]
        + (n - int.from_bytes(good[32:64], "big")).to_bytes(32, "big")
        + bytes([55 - good[64]])
    )
    reverts(
        contract.functions.bindBoard(cs(BOARD), cs(ALICE), high), relayer, "BoardSignatureInvalid"
    )
    assert contract.functions.ownerOfBoard(cs(BOARD)).call() == "0x" + "00" * 20

    # The real binding, sent by a relayer that is neither board nor owner.
    receipt = rewards_chain.bind_board(w3, relayer, binding, BOARD, ALICE, good)
    assert contract.functions.ownerOfBoard(cs(BOARD)).call() == cs(ALICE)
    assert contract.functions.bindNonce(cs(BOARD)).call() == 1
    (event,) = binding.events.BoardBound().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["owner"] == cs(ALICE) and event["args"]["nonce"] == 0
    # The other contract still has the board unbound: the signature was for this one only.
    assert other_contract.functions.ownerOfBoard(cs(BOARD)).call() == "0x" + "00" * 20

    # Replaying the used signature fails (nonce moved on), so does a new one by another key.
    with pytest.raises(ChainError, match="would revert"):
        rewards_chain.bind_board(w3, relayer, binding, BOARD, ALICE, good)
    forged = board_signs(bind_digest(BOB, 1, chain_id, contract.address), key=b"\x09" * 32)
    reverts(
        contract.functions.bindBoard(cs(BOARD), cs(BOB), forged), relayer, "BoardSignatureInvalid"
    )

    # Re-bind with a new signature from the same board; the old owner cannot roll it back.
    rebind = board_signs(bind_digest(BOB, 1, chain_id, contract.address))
    receipt = rewards_chain.bind_board(w3, net.accounts[3], binding, BOARD, BOB, rebind)
    (event,) = binding.events.BoardBound().process_receipt(receipt, errors=DISCARD)
    assert (event["args"]["previousOwner"], event["args"]["owner"]) == (cs(ALICE), cs(BOB))
    reverts(
        contract.functions.bindBoard(cs(BOARD), cs(ALICE), good), relayer, "BoardSignatureInvalid"
    )
    bound = rewards_chain.bindings(w3, binding)
    assert [(b, o) for b, o, _t in bound] == [(BOARD, ALICE), (BOARD, BOB)]


# -- reward token and distributor ----------------------------------------------------------


def deploy_rewards(net, oracle, cap: int = 10**6):
    """The committed build artifact (gateway/contracts/build/TerrapinRewards.json); the
    admin is accounts[0], a different key from the oracle; daily epochs."""
    return rewards_chain.deploy_rewards(
        net.w3, net.accounts[0], admin=net.accounts[0].address, oracle=oracle.address,
        epoch_cap=cap,
    )  # fmt: skip


def balance(contract, owner: str) -> int:
    return contract.functions.balanceOf(cs(owner)).call()


def test_publish_and_claim_across_epochs(net):
    w3 = net.w3
    admin, oracle, stranger, relayer = (
        net.accounts[0],
        net.accounts[1],
        net.accounts[2],
        net.accounts[3],
    )
    token = deploy_rewards(net, oracle)

    d1 = distribution.build(100, {ALICE: 300, BOB: 700})
    # Nobody but the oracle sets a root, the admin included.
    for account in (stranger, admin):
        reverts(
            token.functions.publishRoot(100, d1.root, d1.total, bytes(32)),
            account,
            "AccessControlUnauthorizedAccount",
        )
        with pytest.raises(ChainError):
            rewards_chain.publish_root(w3, account, token, d1)
    rewards_chain.publish_root(w3, oracle, token, d1)
    assert token.functions.merkleRoot().call() == d1.root
    assert token.functions.epoch().call() == 100

    # Anyone submits; tokens go to the owner.
    rewards_chain.claim(w3, relayer, token, d1, ALICE)
    assert balance(token, ALICE) == 300 and balance(token, relayer.address) == 0
    # Claiming twice pays nothing more.
    reverts(token.functions.claim(*rewards_chain.claim_args(d1, ALICE)), relayer, "NothingToClaim")
    with pytest.raises(ChainError):
        rewards_chain.claim(w3, relayer, token, d1, ALICE)
    assert balance(token, ALICE) == 300
    # Wrong proof, and another owner's amount and proof under one's own address.
    owner, amount, proof = rewards_chain.claim_args(d1, BOB)
    reverts(token.functions.claim(owner, amount + 1, proof), stranger, "InvalidProof")
    reverts(token.functions.claim(owner, amount, [b"\x01" * 32]), stranger, "InvalidProof")
    reverts(token.functions.claim(cs(CAROL), amount, proof), stranger, "InvalidProof")
    reverts(token.functions.claim(cs(ALICE), amount, proof), stranger, "InvalidProof")

    # Epochs only go forward; totals never shrink.
    d2 = distribution.build(101, {ALICE: 500, BOB: 900, CAROL: 50})
    reverts(token.functions.publishRoot(100, d2.root, d2.total, bytes(32)), oracle, "EpochNotNext")
    reverts(
        token.functions.publishRoot(101, d2.root, d1.total - 1, bytes(32)), oracle, "TotalDecreased"
    )
    reverts(token.functions.publishRoot(101, b"\0" * 32, d2.total, bytes(32)), oracle, "ZeroRoot")
    receipt = rewards_chain.publish_root(w3, oracle, token, d2)
    (event,) = token.events.RootPublished().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["epoch"] == 101 and event["args"]["cumulativeTotal"] == 1450

    # An epoch-100 proof no longer claims; the cumulative proofs pay the difference.
    reverts(token.functions.claim(*rewards_chain.claim_args(d1, BOB)), stranger, "InvalidProof")
    assert token.functions.claimable(*rewards_chain.claim_args(d2, ALICE)).call() == 200
    receipt = rewards_chain.claim(w3, stranger, token, d2, ALICE)
    (event,) = token.events.Claimed().process_receipt(receipt, errors=DISCARD)
    assert (event["args"]["amount"], event["args"]["cumulativeAmount"]) == (200, 500)
    rewards_chain.claim(w3, stranger, token, d2, BOB)  # never claimed epoch 100: gets both
    rewards_chain.claim(w3, stranger, token, d2, CAROL)
    assert [balance(token, o) for o in (ALICE, BOB, CAROL)] == [500, 900, 50]
    assert token.functions.totalSupply().call() == d2.total

    view = rewards_chain.owner_view(token, d2, BOB)
    assert view["claimed"] == "900" and view["claimable"] == "0" and view["published_epoch"] == 101


def test_supply_never_exceeds_the_published_total(net):
    """A tree whose leaves add up to more than its declared total cannot mint the excess."""
    oracle = net.accounts[1]
    token = deploy_rewards(net, oracle)
    d = distribution.build(1, {ALICE: 600, BOB: 600})
    net.send(oracle, token.functions.publishRoot(1, d.root, 1000, bytes(32)))
    rewards_chain.claim(net.w3, net.accounts[2], token, d, ALICE)
    reverts(
        token.functions.claim(*rewards_chain.claim_args(d, BOB)),
        net.accounts[2],
        "ExceedsPublishedTotal",
    )


def test_roles_are_administered_by_the_admin(embedded):
    admin, oracle, newcomer = embedded.accounts[0], embedded.accounts[1], embedded.accounts[4]
    token = deploy_rewards(embedded, oracle)
    role = token.functions.ORACLE_ROLE().call()
    d = distribution.build(7, {ALICE: 1})
    reverts(
        token.functions.grantRole(role, newcomer.address),
        oracle,
        "AccessControlUnauthorizedAccount",
    )
    embedded.send(admin, token.functions.grantRole(role, newcomer.address))
    embedded.send(admin, token.functions.revokeRole(role, oracle.address))
    reverts(
        token.functions.publishRoot(7, d.root, d.total, bytes(32)),
        oracle,
        "AccessControlUnauthorizedAccount",
    )
    rewards_chain.publish_root(embedded.w3, newcomer, token, d)
    assert token.functions.symbol().call() == "TRP" and token.functions.decimals().call() == 18


def test_gas_figures_for_the_chain_bench():
    figures = rewards_chain.gas_figures(owners=16)
    assert figures["claim_proof_hashes"] == 4
    # Publishing is two storage updates and an event; a first claim writes two fresh slots.
    assert 25_000 < figures["gas_per_epoch_root"] < 60_000 < figures["gas_first_epoch_root"]
    assert 60_000 < figures["gas_per_claim"] < 130_000
    assert figures["gas_per_repeat_claim"] < figures["gas_per_claim"]


def test_firmware_signature_binds_on_chain(embedded, compiled):
    """The board's own code (firmware/secp256k1.py, as on the board) makes a binding the
    contract accepts: the digest from the host, r||s + v from sign_recoverable."""
    from terrapin.firmware import cose, secp256k1

    priv = secp256k1.generate_private_key()
    board = "0x" + bytes(cose.address(secp256k1.public_key(priv))).hex()
    contract = embedded.deploy(compiled["BoardBindingHarness"])
    digest = bind_digest(ALICE, 0, embedded.w3.eth.chain_id, contract.address)
    sig64, v = secp256k1.sign_recoverable(priv, digest)
    binding = rewards_chain.binding_contract(embedded.w3, contract.address)
    rewards_chain.bind_board(
        embedded.w3, embedded.accounts[0], binding, board, ALICE, pack_signature(sig64, v)
    )
    assert contract.functions.ownerOfBoard(cs(board)).call() == cs(ALICE)


# -- a leaked oracle key (issue 14) ----------------------------------------------------------
# Before: publishRoot took any larger epoch and any total up to 2**192 - 1, and the oracle
# was also the admin, so one hot key could mint without bound and freeze publishing.


def test_leaked_oracle_cannot_jump_epochs_or_freeze_publishing(net):
    oracle = net.accounts[1]
    token = deploy_rewards(net, oracle)
    d = distribution.build(100, {ALICE: 300})
    top = 2**64 - 1
    # First publication: any started epoch, never one in the future (2**64 - 1 would freeze).
    reverts(token.functions.publishRoot(top, d.root, d.total, bytes(32)), oracle, "EpochNotStarted")
    net.send(oracle, token.functions.publishRoot(100, d.root, d.total, bytes(32)))
    # Then exactly the next epoch: no jump to the last epoch, none over a gap.
    for epoch in (top, 102, 100, 99):
        reverts(
            token.functions.publishRoot(epoch, d.root, d.total, bytes(32)), oracle, "EpochNotNext"
        )
    net.send(oracle, token.functions.publishRoot(101, d.root, d.total, bytes(32)))  # not frozen
    assert token.functions.epoch().call() == 101


def test_publish_skips_no_epoch_but_carries_the_root_over_empty_ones(net):
    oracle = net.accounts[1]
    token = deploy_rewards(net, oracle)
    rewards_chain.publish_root(net.w3, oracle, token, distribution.build(100, {ALICE: 300}))
    d = distribution.build(103, {ALICE: 500})
    receipt = rewards_chain.publish_root(net.w3, oracle, token, d)  # carries 100's root over
    logs = token.events.RootPublished().get_logs(from_block=0)
    assert [e["args"]["epoch"] for e in logs] == [100, 101, 102, 103]
    assert [e["args"]["cumulativeTotal"] for e in logs] == [300, 300, 300, 500]
    assert logs[-1]["transactionHash"] == receipt["transactionHash"]


def test_leaked_oracle_cannot_mint_over_the_epoch_cap(net):
    admin, oracle = net.accounts[0], net.accounts[1]
    token = deploy_rewards(net, oracle, cap=1_000)
    whale = distribution.build(1, {ALICE: 2**192 - 1})
    reverts(
        token.functions.publishRoot(1, whale.root, whale.total, bytes(32)), oracle, "OverEpochCap"
    )
    over = distribution.build(1, {ALICE: 1_001})
    reverts(
        token.functions.publishRoot(1, over.root, over.total, bytes(32)), oracle, "OverEpochCap"
    )
    # A root whose declared total is within the cap cannot pay more than that total.
    net.send(oracle, token.functions.publishRoot(1, over.root, 1_000, bytes(32)))
    reverts(
        token.functions.claim(*rewards_chain.claim_args(over, ALICE)),
        admin,
        "ExceedsPublishedTotal",
    )
    # The bound is cumulative: each epoch adds at most the cap, and totals never shrink.
    d2 = distribution.build(2, {ALICE: 2_001})
    reverts(token.functions.publishRoot(2, d2.root, d2.total, bytes(32)), oracle, "OverEpochCap")
    reverts(token.functions.publishRoot(2, d2.root, 999, bytes(32)), oracle, "TotalDecreased")
    # Only the admin sets the cap.
    reverts(token.functions.setEpochCap(2**192 - 1), oracle, "AccessControlUnauthorizedAccount")
    net.send(admin, token.functions.setEpochCap(1_001))
    net.send(oracle, token.functions.publishRoot(2, d2.root, d2.total, bytes(32)))
    assert token.functions.cumulativeTotal().call() == 2_001


def test_admin_replaces_a_bad_root_nobody_claimed_against(net):
    admin, oracle, relayer = net.accounts[0], net.accounts[1], net.accounts[3]
    token = deploy_rewards(net, oracle, cap=1_000)
    d1 = distribution.build(1, {ALICE: 300, BOB: 100})
    rewards_chain.publish_root(net.w3, oracle, token, d1)
    rewards_chain.claim(net.w3, relayer, token, d1, ALICE)
    bad = distribution.build(2, {CAROL: 1_400})  # a leaked oracle pays itself
    good = distribution.build(2, {ALICE: 500, BOB: 300})
    rewards_chain.publish_root(net.w3, oracle, token, bad)
    # The oracle cannot overwrite a root, neither by publishing again nor by replacing.
    reverts(
        token.functions.publishRoot(2, good.root, good.total, bytes(32)), oracle, "EpochNotNext"
    )
    reverts(
        token.functions.replaceRoot(good.root, good.total, bytes(32)),
        oracle,
        "AccessControlUnauthorizedAccount",
    )
    # The admin replaces it within the same bounds (from epoch 1's total).
    reverts(token.functions.replaceRoot(good.root, 400 + 1_001, bytes(32)), admin, "OverEpochCap")
    reverts(token.functions.replaceRoot(good.root, 399, bytes(32)), admin, "TotalDecreased")
    receipt = net.send(admin, token.functions.replaceRoot(good.root, good.total, bytes(32)))
    (event,) = token.events.RootReplaced().process_receipt(receipt, errors=DISCARD)
    assert (event["args"]["epoch"], event["args"]["oldRoot"]) == (2, bad.root)
    assert token.functions.merkleRoot().call() == good.root
    reverts(token.functions.claim(*rewards_chain.claim_args(bad, CAROL)), relayer, "InvalidProof")
    rewards_chain.claim(net.w3, relayer, token, good, BOB)
    # Once someone claimed against the latest root it stays.
    reverts(
        token.functions.replaceRoot(bad.root, bad.total, bytes(32)), admin, "AlreadyClaimedAgainst"
    )
    assert balance(token, BOB) == 300 and balance(token, CAROL) == 0


def test_paused_stops_claims_and_publishing_until_the_admin_unpauses(net):
    admin, oracle, relayer = net.accounts[0], net.accounts[1], net.accounts[3]
    token = deploy_rewards(net, oracle)
    d1 = distribution.build(1, {ALICE: 300})
    rewards_chain.publish_root(net.w3, oracle, token, d1)
    reverts(token.functions.pause(), oracle, "AccessControlUnauthorizedAccount")
    net.send(admin, token.functions.pause())
    claim = token.functions.claim(*rewards_chain.claim_args(d1, ALICE))
    reverts(claim, relayer, "EnforcedPause")
    d2 = distribution.build(2, {ALICE: 400})
    reverts(token.functions.publishRoot(2, d2.root, d2.total, bytes(32)), oracle, "EnforcedPause")
    reverts(token.functions.unpause(), oracle, "AccessControlUnauthorizedAccount")
    net.send(admin, token.functions.unpause())
    rewards_chain.claim(net.w3, relayer, token, d1, ALICE)
    assert balance(token, ALICE) == 300


def test_deploy_keeps_the_admin_apart_from_the_oracle(embedded):
    deployer = embedded.accounts[1]
    with pytest.raises(ChainError, match="same key"):
        rewards_chain.deploy_rewards(embedded.w3, deployer, admin=deployer.address)
    token = rewards_chain.deploy_rewards(embedded.w3, deployer, admin=embedded.accounts[0].address)
    admin_role = token.functions.DEFAULT_ADMIN_ROLE().call()
    oracle_role = token.functions.ORACLE_ROLE().call()
    assert not token.functions.hasRole(admin_role, deployer.address).call()
    assert token.functions.hasRole(oracle_role, deployer.address).call()
    assert token.functions.hasRole(admin_role, embedded.accounts[0].address).call()
