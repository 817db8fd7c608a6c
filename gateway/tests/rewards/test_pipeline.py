"""Rewards end to end on the embedded chain: signed readings -> batches anchored by the real
anchorer in three epochs -> boards bound by their own keys -> `rewards compute` (CLI) ->
publish -> claims; and an independent recomputation from the proof bundles alone
(block timestamps and BoardBound logs from the chain, tree from @openzeppelin/merkle-tree)
that must give the published root."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from terrapin.gateway.chain import bundle
from terrapin.gateway.chain import tables as store
from terrapin.gateway.chain.anchorer import Anchorer
from terrapin.gateway.chain.batcher import Batcher
from terrapin.gateway.chain.node import Chain, ChainConfig, ChainError
from terrapin.gateway.rewards import distribution
from terrapin.gateway.rewards import onchain as rewards_chain
from terrapin.gateway.rewards import tables as rewards_store
from terrapin.gateway.rewards.binding import bind_digest, pack_signature
from terrapin.tools.cli.main import main
from terrapin.tools.devkit import chainkit as testkit
from terrapin.tools.devkit.simboard import SimBoard

REPO = Path(__file__).resolve().parents[3]
DAY = 86_400
ALICE, BOB = "0x" + "a1" * 20, "0x" + "b0" * 20
PARAMS = rewards_store.Params(budget=1_000_000, cap=3)


def sign_binding(board: SimBoard, owner: str, nonce: int, chain_id: int, contract: str) -> bytes:
    """The board's console answer to "sign this digest" (sign_recoverable), packed."""
    sig = board.private.sign_recoverable(bind_digest(owner, nonce, chain_id, contract), hasher=None)
    return pack_signature(sig[:64], sig[64])


def binding_contract(chain: Chain, compiled: dict):
    """The registry once it inherits BoardBinding; until then the test harness."""
    if any(e.get("name") == "bindBoard" for e in chain.registry.abi):
        return rewards_chain.binding_contract(chain.w3, chain.registry.address)
    art = compiled["BoardBindingHarness"]
    factory = chain.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    tx = {"data": factory.constructor().data_in_transaction, "gas": 2_000_000}
    from terrapin.gateway.chain.node import transact

    receipt = transact(chain.w3, chain.account, tx)
    return rewards_chain.binding_contract(chain.w3, receipt["contractAddress"])


def bundles_of(conn, chain: Chain) -> list[dict]:
    """Every anchored reading as a proof bundle (plus its stored flags: bundle-like data)."""
    out = []
    rows = conn.execute(
        "SELECT r.id, r.flags, d.pubkey FROM readings r JOIN devices d ON d.address = r.device"
    )
    for reading_id, flags, pubkey in rows.fetchall():
        lp = store.leaf_proof(conn, reading_id)
        device, seq, digest, envelope = conn.execute(
            "SELECT device, seq, digest, envelope FROM readings WHERE id = ?", (reading_id,)
        ).fetchone()
        b = bundle.Bundle(
            envelope,
            pubkey,
            device,
            seq,
            digest,
            lp.leaf,
            lp.proof,
            lp.batch.root,
            lp.batch.id,
            chain.chain_id,
            bytes.fromhex(chain.anchor.address[2:]),
            lp.batch.tx_hash,
            lp.batch.block_number,
        )
        doc = b.to_json()
        assert bundle.load(json.loads(json.dumps(doc))) == b  # a real bundle
        out.append(doc | {"flags": flags})
    return out


def from_bundles_and_chain(bundles: list[dict], w3: Web3, binding_address: str):
    """What an auditor reads: each reading's epoch from its anchoring block's timestamp,
    the owners from the raw BoardBound logs. Nothing from the gateway's database."""
    readings = [
        (b["device"], b["seq"], b["flags"], w3.eth.get_block(b["block"])["timestamp"] // DAY)
        for b in bundles
    ]
    topic = Web3.keccak(text="BoardBound(address,address,address,uint256)").to_0x_hex()
    logs = w3.eth.get_logs({"address": binding_address, "fromBlock": 0, "topics": [topic]})
    bindings = [
        (
            "0x" + log["topics"][1].hex()[-40:],
            "0x" + log["topics"][3].hex()[-40:],
            w3.eth.get_block(log["blockNumber"])["timestamp"],
        )
        for log in sorted(logs, key=lambda x: (x["blockNumber"], x["logIndex"]))
    ]
    return readings, bindings


def test_three_epochs_bind_compute_publish_claim_and_recompute(
    tmp_path, compiled, capsys, independent_rule, oz_root, stamped_readings
):
    rng = random.Random(42)
    db = tmp_path / "gateway.sqlite"
    conn = testkit.make_db(db)
    boards = [SimBoard.make(rng) for _ in range(3)]
    chain = Chain.connect(ChainConfig())
    w3, tester = chain.w3, chain.tester
    binder = binding_contract(chain, compiled)
    token = rewards_chain.deploy_rewards(w3, chain.account, admin=Account.create().address)
    batcher, anchorer = Batcher(db), Anchorer(db, chain)
    day0 = w3.eth.get_block("latest")["timestamp"] // DAY + 2
    addr = ["0x" + b.address.hex() for b in boards]

    def bind(i: int, owner: str) -> None:
        nonce = binder.functions.bindNonce(Web3.to_checksum_address(addr[i])).call()
        sig = sign_binding(boards[i], owner, nonce, chain.chain_id, binder.address)
        rewards_chain.bind_board(w3, chain.account, binder, addr[i], owner, sig)

    def at(day: int) -> None:
        tester.time_travel(day * DAY + 600)  # the next blocks are in that UTC day

    def anchor_epoch(counts: list[int], flag_first_of: int | None = None) -> None:
        stamp = w3.eth.get_block("latest")["timestamp"]  # the board's clock: now, on chain
        for i, n in enumerate(counts):
            for k in range(n):
                # A data-quality flag (the board's clock unset) on one reading of that board,
                # recomputed from the signed envelope by the rule.
                flagged = i == flag_first_of and k == n - 1
                stamped_readings(conn, [boards[i]], 1, 0 if flagged else stamp)
        batcher.close_due(force=True)
        anchorer.anchor_pending()

    def compute_cli(config: Path, epoch: int) -> dict:
        argv = ["rewards", "compute", "--epoch", str(epoch), "--config", str(config), "--json"]
        assert main(argv) == 0
        return json.loads(capsys.readouterr().out)

    # Epoch day0: board0 -> Alice, board1 -> Bob, board2 unbound.
    at(day0)
    bind(0, ALICE)
    bind(1, BOB)
    anchor_epoch([2, 4, 1], flag_first_of=1)  # board1: 4 readings, 1 flagged -> 3 (cap 3)
    # Epoch day0+1: board2 bound to Alice.
    at(day0 + 1)
    bind(2, ALICE)
    anchor_epoch([1, 5, 1])
    # Epoch day0+2: board0 re-bound by a new signature of its own to Bob.
    at(day0 + 2)
    bind(0, BOB)
    anchor_epoch([3, 0, 0])
    assert all(b.status in ("anchored", "confirmed") for b in store.batches(conn))

    rconn = rewards_store.connect(db)
    assert rewards_store.sync(rconn, w3, binder) == {"block_times": 3, "bindings": 4}
    assert rewards_store.sync(rconn, w3, None) == {"block_times": 0, "bindings": 4}  # kept

    expected = {}
    for day in (day0, day0 + 1, day0 + 2):
        result = rewards_store.compute(rconn, day, PARAMS)
        path = rewards_store.distribution_path(tmp_path / "rewards", day)
        rewards_store.record(
            rconn, result.distribution, distribution.write(result.distribution, path)
        )
        expected[day] = result

    # The CLI needs no chain once synced: everything comes from the database. Deterministic.
    config = tmp_path / "gateway.toml"
    config.write_text(f'[store]\npath = "{db}"\n[rewards]\nbudget = 1000000\ncap = 3\n')
    for _ in range(2):
        out = compute_cli(config, day0 + 1)
        assert out["root"] == "0x" + expected[day0 + 1].distribution.root.hex()
    path = rewards_store.distribution_path(tmp_path / "rewards", day0 + 1)
    assert distribution.load(path) == expected[day0 + 1].distribution
    assert main(["rewards", "compute", "--epoch", str(day0 + 1), "--config", str(config)]) == 0
    table = capsys.readouterr().out
    assert "Epoch" in table and addr[1][:12] in table and "wrote" in table

    e0 = expected[day0].this_epoch
    assert e0.readings == {addr[0]: 2, addr[1]: 3, addr[2]: 1} and e0.flagged == {addr[1]: 1}
    assert e0.owners == {ALICE: 1_000_000 * 2 // 6, BOB: 1_000_000 * 3 // 6}
    assert e0.unowned == 1_000_000 // 6  # board2 had no owner: nobody gets its share
    e2 = expected[day0 + 2].this_epoch
    assert e2.owners == {BOB: 1_000_000}  # board0 now Bob's

    # Settle each epoch as the gateway does (sync, compute, file, publish), then claim.
    relayer = chain.account
    for day in (day0, day0 + 1, day0 + 2):
        settled = rewards_store.settle_epoch(
            rconn, w3, chain.account, token, binder, day, PARAMS, tmp_path / "settled"
        )
        dist = settled.distribution
        assert dist.root == expected[day].distribution.root
        assert dist.contract == token.address.lower() and dist.chain_id == chain.chain_id
        for owner in dist.claims:
            if rewards_chain.owner_view(token, dist, owner)["claimable"] != "0":
                rewards_chain.claim(w3, relayer, token, dist, owner)
            else:  # earned nothing new this epoch: a claim pays nothing and reverts
                with pytest.raises(ChainError, match="NothingToClaim"):
                    rewards_chain.claim(w3, relayer, token, dist, owner)
        for owner, c in dist.claims.items():
            assert token.functions.balanceOf(Web3.to_checksum_address(owner)).call() == c.amount
        view = rewards_chain.owner_view(token, dist, ALICE)
        assert view["claimable"] == "0" and view["cumulative"] == str(dist.claims[ALICE].amount)

    # Independent recomputation from the bundles + chain gives the published root.
    bundles = bundles_of(conn, chain)
    readings, bindings = from_bundles_and_chain(bundles, w3, binder.address)
    final = expected[day0 + 2].distribution
    _per_epoch, cumulative = independent_rule(
        readings, bindings, day0 + 2, PARAMS.budget, PARAMS.cap
    )
    assert cumulative == {o: c.amount for o, c in final.claims.items()}
    assert oz_root(cumulative) == "0x" + token.functions.merkleRoot().call().hex()
    assert token.functions.merkleRoot().call() == final.root
    # ...and for an earlier epoch too (its root was replaced on chain, but the event kept it).
    _per_epoch, cumulative0 = independent_rule(readings, bindings, day0, PARAMS.budget, PARAMS.cap)
    (first_event,) = [
        e for e in token.events.RootPublished().get_logs(from_block=0) if e["args"]["epoch"] == day0
    ]
    assert oz_root(cumulative0) == "0x" + first_event["args"]["root"].hex()

    # The status view for the API, offline from the database.
    status = rewards_store.status(rconn, ALICE)
    assert status["boards"] == [addr[2]] and status["epoch"] == day0 + 2 and status["published"]
    assert status["cumulative"] == str(expected[day0 + 2].distribution.claims[ALICE].amount)
    everyone = rewards_store.status(rconn)
    assert set(everyone["owners"]) == {ALICE, BOB} and everyone["boards"][addr[0]] == BOB
    nobody = rewards_store.status(rconn, "0x" + "99" * 20)
    assert nobody["cumulative"] == "0" and nobody["boards"] == [] and nobody["proof"] == []
    rconn.close()
    batcher.close()
    anchorer.close()
