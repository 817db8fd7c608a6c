"""Epoch manifests on a real chain (the embedded eth-tester chain and anvil): readings
stored by the gateway's Store, batched and anchored by the real stages, boards bound by
their own signatures, epochs settled with the manifest hash published with the root; then
`terrapin rewards verify` recomputes each epoch from the manifest and the chain alone,
names the first difference of a tampered one, and an equivocation that arrives after an
epoch was published leaves that epoch's manifest and root as published."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from eth_account import Account
from web3 import Web3

from terrapin.gateway.api import Api
from terrapin.gateway.chain.anchorer import Anchorer
from terrapin.gateway.chain.batcher import Batcher
from terrapin.gateway.chain.node import Chain, ChainConfig
from terrapin.gateway.protocol.envelope import decode_envelope
from terrapin.gateway.protocol.reasons import Flag
from terrapin.gateway.rewards import ledger
from terrapin.gateway.rewards import manifest as fmt
from terrapin.gateway.rewards import onchain as rewards_chain
from terrapin.gateway.rewards import tables as rewards_store
from terrapin.gateway.rewards.binding import bind_digest, pack_signature
from terrapin.gateway.store import Pending, Store
from terrapin.tools.cli.main import main
from terrapin.tools.devkit import chainkit
from terrapin.tools.devkit.simboard import SimBoard
from terrapin.tools.rewardsverify import run
from terrapin.tools.verifier import Trust

DAY = 86_400
ALICE, BOB = "0x" + "a1" * 20, "0x" + "b0" * 20
PARAMS = rewards_store.Params(budget=1_000_000, cap=5)


class Network:
    """One chain for the test, with the gateway's contracts, and a way to set its clock."""

    def __init__(self, kind: str, request, monkeypatch):
        self.kind = kind
        if kind == "embedded":
            self.chain = Chain.connect(ChainConfig())
            self.url = None
        else:
            node = request.getfixturevalue("anvil")
            self.url = node.w3.provider.endpoint_uri
            monkeypatch.setenv("TERRAPIN_CHAIN_KEY", chainkit.ANVIL_KEY)
            config = chainkit.deploy_on_rpc(self.url, confirmations=1, poll_seconds=0.05)
            self.chain = Chain.connect(config)
        self.w3 = self.chain.w3

    def at(self, timestamp: int) -> None:
        """Mine a block stamped `timestamp`: the chain's clock moves there."""
        if self.chain.tester is not None:
            self.chain.tester.time_travel(timestamp)
            self.chain.tester.mine_blocks(1)
        else:
            self.w3.provider.make_request("evm_setNextBlockTimestamp", [timestamp])
            self.w3.provider.make_request("evm_mine", [])


@pytest.fixture(params=["embedded", "anvil"])
def net(request, monkeypatch) -> Network:
    return Network(request.param, request, monkeypatch)


class Gateway:
    """The gateway's side: Store, Batcher, Anchorer on one database; settle_epoch."""

    def __init__(self, net: Network, tmp_path: Path):
        self.net, self.db = net, tmp_path / "gateway.sqlite"
        self.store = Store(self.db)
        self.batcher, self.anchorer = Batcher(self.db), Anchorer(self.db, net.chain)
        self.conn = rewards_store.connect(self.db)
        self.out = tmp_path / "rewards"
        w3, account = net.w3, net.chain.account
        self.binder = rewards_chain.binding_contract(w3, net.chain.registry.address)
        self.token = rewards_chain.deploy_rewards(w3, account, admin=Account.create().address)

    def bind(self, board: SimBoard, owner: str) -> None:
        c = self.net.chain
        nonce = self.binder.functions.bindNonce(Web3.to_checksum_address(board.address)).call()
        sig = board.private.sign_recoverable(
            bind_digest(owner, nonce, c.chain_id, self.binder.address), hasher=None
        )
        signature = pack_signature(sig[:64], sig[64])
        rewards_chain.bind_board(c.w3, c.account, self.binder, board.address, owner, signature)

    def ingest(self, board: SimBoard, seq: int, t: int, value: float = 21.5) -> bytes:
        """One signed reading through the Store (a second one for a stored seq is an
        equivocation: rejected, kept in `rejections`)."""
        env = board.envelope(seq, t, (("temperature", "Cel", value),))
        self.store.commit([Pending(board.address, seq, decode_envelope(env).digest, env, t, t)])
        return env

    def anchor(self) -> None:
        self.batcher.close_due(force=True)
        self.anchorer.anchor_pending(until="confirmed", timeout=60)

    def settle(self, epoch: int) -> rewards_store.Computed:
        return rewards_store.settle_epoch(
            self.conn,
            self.net.w3,
            self.net.chain.account,
            self.token,
            self.binder,
            epoch,
            PARAMS,
            self.out,
            anchor=self.net.chain.anchor.address,
        )

    def close(self) -> None:
        for part in (self.store, self.batcher, self.anchorer, self.conn):
            part.close()


class StatusOnly:
    """What the Api reads from a Gateway for the manifest route: cfg.store.path."""

    def __init__(self, db: Path):
        self.cfg = SimpleNamespace(store=SimpleNamespace(path=str(db)))

    def snapshot(self) -> dict:
        return {}


def verify_cli(gw: Gateway, epoch: int, source: str, capsys) -> tuple[int, str]:
    argv = ["rewards", "verify", "--epoch", str(epoch), "--manifest", source]
    if gw.net.url:  # the anchor and the rewards contract a stranger trusts
        argv += ["--rpc", gw.net.url, "--anchor", gw.net.chain.anchor.address]
        argv += ["--rewards", gw.token.address]
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out + out.err


def first_failure(checks) -> tuple[str, str]:
    failed = [c for c in checks.items if not c.ok]
    assert failed, "a tampered manifest verified"
    return failed[0].name, failed[0].detail


def test_epochs_verify_on_chain_tampering_is_named_and_a_late_equivocation_changes_nothing(
    net, tmp_path, capsys, oz_root
):
    gw = Gateway(net, tmp_path)
    rng = random.Random(19)
    b0, b1, b2 = (SimBoard.make(rng) for _ in range(3))
    w3 = net.w3
    trust = Trust(anchor=bytes.fromhex(net.chain.anchor.address[2:]))
    day0 = int(w3.eth.get_block("latest")["timestamp"]) // DAY + 2
    t0 = day0 * DAY + 600

    # Epoch day0: b0 -> Alice (3 readings), b1 -> Bob (2, one out of range), b2 unowned.
    net.at(t0)
    gw.bind(b0, ALICE)
    gw.bind(b1, BOB)
    for seq in (1, 2, 3):
        gw.ingest(b0, seq, t0)
    gw.ingest(b1, 1, t0)
    gw.ingest(b1, 2, t0, value=900.0)  # OUT_OF_RANGE
    gw.ingest(b2, 1, t0)
    gw.anchor()
    # Epoch day0+1: b2 bound to Alice; b0's seq 4 equivocated BEFORE the epoch is settled.
    t1 = (day0 + 1) * DAY + 600
    net.at(t1)
    gw.bind(b2, ALICE)
    gw.ingest(b0, 4, t1)
    gw.ingest(b2, 2, t1)
    gw.anchor()
    gw.ingest(b0, 4, t1, value=30.0)  # the same seq signed again: evidence
    net.at((day0 + 2) * DAY + 600)

    first = gw.settle(day0)
    second = gw.settle(day0 + 1)
    data0, data1 = first.manifest.read_bytes(), second.manifest.read_bytes()
    m0, m1 = fmt.loads(data0), fmt.loads(data1)
    assert first.distribution.root == m0.root and second.distribution.root == m1.root
    assert m0.boards[b1.address].flagged == 1 and m0.boards[b2.address].owner is None
    (evidence,) = m1.equivocations
    assert evidence.board == b0.address and evidence.seq == 4
    flags = {(r.board, r.seq): r.flags for b in m1.batches for r in b.readings}
    assert flags[(b0.address, 4)] == Flag.EQUIVOCATED
    assert m1.previous_root == m0.root and m1.cumulative[bytes.fromhex(ALICE[2:])] > 0
    for m in (m0, m1):  # the settled trees are @openzeppelin/merkle-tree's
        assert oz_root({"0x" + o.hex(): a for o, a in m.cumulative.items()}) == "0x" + m.root.hex()

    for epoch, data in ((day0, data0), (day0 + 1, data1)):
        checks = run(data, epoch, w3=w3, trust=trust)
        assert checks.ok and checks.on_chain, [c for c in checks.items if not c.ok]
    if net.url:  # the command, as a stranger runs it: exit 0
        code, text = verify_cli(gw, day0 + 1, str(second.manifest), capsys)
        assert code == 0 and "verified on chain" in text, text

    # Tampered copies: the first difference is named, on chain too.
    def tampered(edit) -> bytes:
        doc = json.loads(data0)
        edit(doc)
        return (json.dumps(doc, indent=1, ensure_ascii=True) + "\n").encode()

    def set_owner(d):
        d["bindings"][0]["owner"] = BOB

    def set_flag(d):
        d["batches"][0]["readings"][0]["flags"] = 1

    def drop_reading(d):
        d["batches"][0]["readings"].pop()
        d["batches"][0]["count"] -= 1

    cases = [
        (set_owner, "bindings on chain", "binding #0: the manifest says block"),
        (set_flag, "flags", "the manifest says flags 1 (TIME_UNSYNCED), recomputed 0"),
        (drop_reading, "readings and batches", "its listed readings build root"),
        (lambda d: d["rule"]["flags"].update(min_time=2**32), "flags", "recomputed 4 (TIME_OLD)"),
    ]  # fmt: skip
    for edit, name, detail in cases:
        got = first_failure(run(tampered(edit), day0, w3=w3, trust=trust))
        assert got[0] == name and detail in got[1], got
    # The same content in other bytes is not the manifest the chain committed to.
    reformatted = (json.dumps(json.loads(data0), indent=2) + "\n").encode()
    got = first_failure(run(reformatted, day0, w3=w3, trust=trust))
    assert got[0] == "root, total and manifest hash on chain", got
    assert "this file hashes to" in got[1], got
    assert first_failure(run(data0, day0, w3=w3, trust=Trust(anchor=bytes(20))))[0] == (
        "chain and cut-off"
    )

    # A later equivocation of a published reading (b0 seq 1, epoch day0): the store flags
    # it and keeps the evidence, but day0's manifest rebuilds to the same bytes and root.
    gw.ingest(b0, 1, t0, value=99.0)
    (stored_flags,) = gw.conn.execute(
        "SELECT flags FROM readings WHERE device = ? AND seq = 1", (b0.address,)
    ).fetchone()
    assert stored_flags & Flag.EQUIVOCATED
    assert main(["rewards", "manifest", "--epoch", str(day0), "--db", str(gw.db)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert ledger.stored(gw.conn, day0)[0].read_bytes() == data0
    again = rewards_store.compute(gw.conn, day0 + 1, PARAMS)
    assert again.distribution.root == second.distribution.root
    assert run(data0, day0, w3=w3, trust=trust).on_chain

    # The gateway serves the manifest byte for byte; verify reads it by URL.
    api = Api("127.0.0.1", 0, StatusOnly(gw.db).snapshot).start()
    try:
        host, port = api.address
        url = f"http://{host}:{port}/api/rewards/epochs/{day0 + 1}/manifest"
        code, text = verify_cli(gw, day0 + 1, url, capsys)
        assert code == (0 if net.url else 3), text
        code, text = verify_cli(
            gw, 5, f"http://{host}:{port}/api/rewards/epochs/5/manifest", capsys
        )
        assert code == 2 and "404" in text, text
    finally:
        api.stop()
    gw.close()


def test_an_epoch_published_before_manifests_is_where_the_next_one_starts(tmp_path, monkeypatch):
    """A gateway upgraded from rule 1 (stored flags, no manifests): its last published
    distribution holds the cumulative amounts the chain has; the next epoch adds to those,
    never to a recomputation of the old epochs under rule 2."""
    from terrapin.gateway.rewards import distribution

    net = Network("embedded", None, monkeypatch)
    gw = Gateway(net, tmp_path)
    board = SimBoard.make(random.Random(7))
    day0 = int(net.w3.eth.get_block("latest")["timestamp"]) // DAY + 2
    net.at(day0 * DAY + 600)
    gw.bind(board, ALICE)
    gw.ingest(board, 1, day0 * DAY + 600)
    gw.anchor()
    # What the old gateway published for day0 (its own amount, under its rule): recorded.
    old = distribution.build(day0, {ALICE: 777})
    path = distribution.write(old, rewards_store.distribution_path(gw.out, day0))
    rewards_store.record(gw.conn, old, path)
    rewards_store.record_published(gw.conn, day0, b"\x01" * 32)
    net.at((day0 + 1) * DAY + 600)
    gw.ingest(board, 2, (day0 + 1) * DAY + 600)
    gw.anchor()
    net.at((day0 + 2) * DAY + 600)
    m = fmt.loads(gw.settle(day0 + 1).manifest.read_bytes())
    alice = bytes.fromhex(ALICE[2:])
    assert m.previous == {alice: 777} and m.previous_root == old.root
    assert m.cumulative == {alice: 777 + PARAMS.budget}
    gw.close()
