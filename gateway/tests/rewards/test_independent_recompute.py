"""Issue 19's sign-off: epochs recomputed by a second implementation written from
docs/REWARDS.md alone (`independent.py`: cbor2, ecdsa, eth-hash, web3), byte for byte:
the golden manifest, several epochs with 3 and then 5 boards settled by the gateway's
own code on the embedded chain and on anvil, and `terrapin demo` runs (3 boards on the
embedded chain, 5 on anvil). Each rebuilt manifest must serialise to the published
bytes, its keccak256 must be the `RootPublished` manifest hash, its root and total the
published ones, its batch roots the `Anchored` ones, its bindings the `BoardBound` events,
and the trees @openzeppelin/merkle-tree's (node)."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from terrapin.gateway.chain.anchorer import Anchorer
from terrapin.gateway.chain.batcher import Batcher
from terrapin.gateway.chain.node import Chain, ChainConfig
from terrapin.gateway.protocol.envelope import decode_envelope
from terrapin.gateway.rewards import onchain as rewards_chain
from terrapin.gateway.rewards import tables as rewards_store
from terrapin.gateway.rewards.binding import bind_digest, pack_signature
from terrapin.gateway.store import Pending, Store
from terrapin.tools.devkit import chainkit
from terrapin.tools.devkit.simboard import SimBoard

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
_spec = importlib.util.spec_from_file_location("independent_rewards", HERE / "independent.py")
ind = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ind)

DAY = 86_400
PARAMS = rewards_store.Params(budget=1_000_003, cap=4)
OWNERS = ["0x" + c * 20 for c in ("a1", "b2", "c3")]


def node_tree(node_exe: str, script: str, cases: list[dict]) -> list[dict]:
    proc = subprocess.run(
        [node_exe, str(REPO / "tools/js" / script)],
        input=json.dumps({"cases": cases}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["results"]


def check_independently(data: bytes, node_exe: str, w3: Web3 | None = None) -> dict:
    """Everything this file checks of one published manifest; returns the rebuilt one."""
    m = json.loads(data)
    rebuilt = ind.rebuild(m)
    for key in m:  # name the first field that differs, then the bytes
        assert rebuilt[key] == m[key], f"{key}: published {m[key]!r}, recomputed {rebuilt[key]!r}"
    assert ind.dump(rebuilt) == data, "same content, other bytes: the doc's format is incomplete"
    # The trees, node for node, against @openzeppelin/merkle-tree.
    if rebuilt["cumulative"]:
        values = [[o, a] for o, a in rebuilt["cumulative"].items()]
        (oz,) = node_tree(node_exe, "rewards-tree.mjs", [{"values": values}])
        assert oz["tree"] == rebuilt["tree"]["nodes"]
    cases = [
        {"values": [[r["board"], str(r["seq"]), r["digest"]] for r in b["readings"]], "proofs": []}
        for b in rebuilt["batches"]
    ]
    if cases:
        results = node_tree(node_exe, "merkle-check.mjs", cases)
        assert [r["root"] for r in results] == [b["root"] for b in rebuilt["batches"]]
    if w3 is None:
        return rebuilt
    facts = ind.chain_facts(w3, m)
    assert facts["published"] == {
        "root": rebuilt["root"],
        "total": rebuilt["total"],
        "manifest_hash": ind.manifest_hash(data),
    }
    listed = [
        {k: b[k] for k in ("gateway", "id", "block", "root", "count")} for b in rebuilt["batches"]
    ]
    assert sorted(facts["anchored"], key=lambda a: (a["block"], a["id"])) == listed
    for b in rebuilt["batches"]:
        assert w3.eth.get_block(b["block"])["timestamp"] == b["timestamp"]
    bound = [
        {k: e[k] for k in ("block", "log_index", "board", "owner", "timestamp")}
        for e in facts["bindings"]
    ]
    assert bound == m["bindings"]
    cut = w3.eth.get_block(m["cutoff"]["block"])
    assert cut["timestamp"] == m["cutoff"]["timestamp"]
    assert cut["timestamp"] >= (m["epoch"] + 1) * m["rule"]["epoch_seconds"]
    return rebuilt


def test_the_golden_manifest_is_rebuilt_to_its_bytes(node_exe):
    fixtures = HERE / "fixtures"
    data = (fixtures / "epoch-golden.manifest.json").read_bytes()
    golden = json.loads((fixtures / "epoch-golden.json").read_text())
    rebuilt = check_independently(data, node_exe)
    assert (rebuilt["root"], rebuilt["total"]) == (golden["root"], golden["total"])
    assert ind.manifest_hash(data) == golden["manifest_hash"]
    # The rebuild can fail: a tampered input changes what it derives.
    tampered = json.loads(data)
    tampered["rule"]["cap"] = 2
    with pytest.raises(AssertionError, match="boards: published"):
        check_independently(ind.dump(tampered), node_exe)


class Network:
    """The gateway's own code on one chain (as test_manifest_chain.py): Store, Batcher,
    Anchorer, boards bound by their own signatures, epochs settled with settle_epoch."""

    def __init__(self, kind: str, request, monkeypatch, tmp_path: Path):
        if kind == "embedded":
            self.chain, self.url = Chain.connect(ChainConfig()), None
        else:
            node = request.getfixturevalue("anvil")
            self.url = node.w3.provider.endpoint_uri
            monkeypatch.setenv("TERRAPIN_CHAIN_KEY", chainkit.ANVIL_KEY)
            config = chainkit.deploy_on_rpc(self.url, confirmations=1, poll_seconds=0.05)
            self.chain = Chain.connect(config)
        self.w3, self.db = self.chain.w3, tmp_path / "gateway.sqlite"
        self.store, self.batcher = Store(self.db), Batcher(self.db)
        self.anchorer, self.conn = Anchorer(self.db, self.chain), rewards_store.connect(self.db)
        self.out = tmp_path / "rewards"
        self.binder = rewards_chain.binding_contract(self.w3, self.chain.registry.address)
        self.token = rewards_chain.deploy_rewards(
            self.w3, self.chain.account, admin=Account.create().address
        )

    def at(self, timestamp: int) -> None:
        if self.chain.tester is not None:
            self.chain.tester.time_travel(timestamp)
            self.chain.tester.mine_blocks(1)
        else:
            self.w3.provider.make_request("evm_setNextBlockTimestamp", [timestamp])
            self.w3.provider.make_request("evm_mine", [])

    def bind(self, board: SimBoard, owner: str) -> None:
        c = self.chain
        nonce = self.binder.functions.bindNonce(Web3.to_checksum_address(board.address)).call()
        digest = bind_digest(owner, nonce, c.chain_id, self.binder.address)
        sig = board.private.sign_recoverable(digest, hasher=None)
        rewards_chain.bind_board(
            c.w3, c.account, self.binder, board.address, owner, pack_signature(sig[:64], sig[64])
        )

    def ingest(self, board: SimBoard, seq: int, t: int, value: float = 21.5) -> None:
        env = board.envelope(seq, t, (("temperature", "Cel", value),))
        self.store.commit([Pending(board.address, seq, decode_envelope(env).digest, env, t, t)])

    def anchor(self) -> None:
        self.batcher.close_due(force=True)
        self.anchorer.anchor_pending(until="confirmed", timeout=60)

    def settle(self, epoch: int) -> bytes:
        done = rewards_store.settle_epoch(
            self.conn,
            self.w3,
            self.chain.account,
            self.token,
            self.binder,
            epoch,
            PARAMS,
            self.out,
            anchor=self.chain.anchor.address,
        )
        return done.manifest.read_bytes()

    def close(self) -> None:
        for part in (self.store, self.batcher, self.anchorer, self.conn):
            part.close()


@pytest.mark.parametrize("kind", ["embedded", "anvil"])
def test_several_epochs_with_3_then_5_boards_are_rebuilt_and_match_the_chain(
    kind, request, monkeypatch, tmp_path, node_exe
):
    net = Network(kind, request, monkeypatch, tmp_path)
    rng = random.Random(1919)
    boards = [SimBoard.make(rng) for _ in range(5)]
    day0 = int(net.w3.eth.get_block("latest")["timestamp"]) // DAY + 2
    seqs = dict.fromkeys(range(5), 0)

    def readings(day: int, active: int, per_board: int, odd=()) -> None:
        t = day * DAY + 900
        net.at(t)
        for i in range(active):
            for _ in range(per_board + i % 3):  # unequal counts, some past the cap
                seqs[i] += 1
                net.ingest(boards[i], seqs[i], t, 900.0 if (i, seqs[i]) in odd else 21.5)
            net.anchor()  # one batch per board: several batches an epoch

    # Epoch 0: 3 boards (owners a1, b2; the third unowned), one out-of-range reading.
    net.at(day0 * DAY + 300)
    net.bind(boards[0], OWNERS[0])
    net.bind(boards[1], OWNERS[1])
    readings(day0, 3, 3, odd={(1, 2)})
    # Epoch 1: 5 boards; board 2 bound to c3, board 0 moved to b2 inside the epoch.
    net.at((day0 + 1) * DAY + 300)
    net.bind(boards[2], OWNERS[2])
    net.bind(boards[3], OWNERS[0])
    readings(day0 + 1, 5, 2)
    net.bind(boards[0], OWNERS[1])
    # Epoch 2: 5 boards again; board 3 unbound (zero owner), an equivocation before settling.
    net.at((day0 + 2) * DAY + 300)
    net.bind(boards[3], "0x" + "00" * 20)
    readings(day0 + 2, 5, 1)
    net.ingest(boards[4], seqs[4], (day0 + 2) * DAY + 900, value=22.5)
    net.at((day0 + 3) * DAY + 300)

    published = [net.settle(day0 + k) for k in range(3)]
    rebuilt = [check_independently(data, node_exe, net.w3) for data in published]
    sizes = [len({b for b in r["boards"]}) for r in rebuilt]
    assert sizes == [3, 5, 5]
    assert rebuilt[2]["previous"]["root"] == rebuilt[1]["root"]
    assert any(
        r["reason"] == "flagged" and r["flags"] == 64
        for b in rebuilt[2]["batches"]
        for r in b["readings"]
    )
    net.close()


def demo(out: Path, boards: int, *rpc: str, env: dict | None = None) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "terrapin.tools.cli.main",
            "demo",
            "--boards",
            str(boards),
            "--readings",
            "3",
            "--out",
            str(out),
            *rpc,
        ],
        capture_output=True,
        text=True,
        timeout=170,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / "summary.json").read_text())


@pytest.mark.timeout(240)
def test_demo_runs_are_rebuilt_on_the_embedded_chain_and_on_anvil(
    micropython_exe, mosquitto_exe, anvil_exe, node_exe, tmp_path
):
    # 3 boards, embedded chain: the chain ends with the demo, so what it published is
    # what the demo's summary records (and its in-process verify).
    summary = demo(tmp_path / "embedded", 3)
    r = summary["rewards"]
    data = Path(r["manifest"]).read_bytes()
    rebuilt = check_independently(data, node_exe)
    assert (rebuilt["root"], rebuilt["total"]) == (r["root"], r["total"])
    assert ind.manifest_hash(data) == r["manifest_hash"] and r["manifest_verified_on_chain"]
    assert len(rebuilt["boards"]) == 3
    # 5 boards on anvil: the chain outlives the demo and is read directly.
    node = chainkit.Anvil(anvil_exe, tmp_path).start()
    try:
        summary = demo(
            tmp_path / "anvil",
            5,
            "--rpc",
            node.url,
            "--key-env",
            "K",
            env={"K": chainkit.ANVIL_KEY},
        )
        data = Path(summary["rewards"]["manifest"]).read_bytes()
        w3 = Web3(Web3.HTTPProvider(node.url))
        rebuilt = check_independently(data, node_exe, w3)
        assert len(rebuilt["boards"]) == 5
    finally:
        node.stop()
