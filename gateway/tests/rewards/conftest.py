"""Fixtures for the rewards tests: compiled contracts, and a chain (embedded or anvil)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import coincurve
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from terrapin.gateway.chain.node import transact
from terrapin.tools.devkit.chainkit import Anvil

REPO = Path(__file__).resolve().parents[3]
HARNESS = "gateway/tests/rewards/BoardBindingHarness.sol"


@pytest.fixture(scope="session")
def compiled(node_exe: str) -> dict[str, dict]:
    """TerrapinRewards and the test-only BoardBinding harness, compiled with the pinned solcjs."""
    proc = subprocess.run(
        [
            node_exe,
            str(REPO / "tools/js/compile-one.mjs"),
            "gateway/contracts/TerrapinRewards.sol",
            HARNESS,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["contracts"]


@dataclass
class Net:
    """A chain for one test: web3, funded local accounts, helpers to deploy and send."""

    name: str
    w3: Web3
    accounts: list[LocalAccount]
    tester: object = None

    def deploy(self, artifact: dict, *args, sender: LocalAccount | None = None):
        factory = self.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        data = factory.constructor(*args).data_in_transaction
        receipt = transact(self.w3, sender or self.accounts[0], {"data": data, "gas": 3_000_000})
        return self.w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"])

    def send(self, sender: LocalAccount, call) -> dict:
        return transact(
            self.w3, sender, {"to": call.address, "data": call._encode_transaction_data()}
        )

    def set_next_timestamp(self, timestamp: int) -> None:
        """Mine the next block at `timestamp` (must be later than the latest block)."""
        if self.tester is not None:
            self.tester.time_travel(timestamp)
        else:
            self.w3.provider.make_request("evm_setNextBlockTimestamp", [timestamp])


def _fund(w3: Web3, n: int) -> list[LocalAccount]:
    accounts = [
        Account.from_key(coincurve.PrivateKey(bytes([i + 1]) * 32).secret) for i in range(n)
    ]
    funder = w3.eth.accounts[0]
    for account in accounts:
        tx = w3.eth.send_transaction({"from": funder, "to": account.address, "value": 10**20})
        w3.eth.wait_for_transaction_receipt(tx)
    return accounts


@pytest.fixture
def embedded() -> Net:
    from eth_tester import EthereumTester, PyEVMBackend
    from web3 import EthereumTesterProvider

    tester = EthereumTester(PyEVMBackend())
    w3 = Web3(EthereumTesterProvider(tester))
    return Net("embedded", w3, _fund(w3, 6), tester)


@pytest.fixture
def anvil(anvil_exe: str, tmp_path: Path) -> Iterator[Net]:
    node = Anvil(anvil_exe, tmp_path, "--chain-id", "31337").start()
    try:
        w3 = Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 10}))
        yield Net("anvil", w3, _fund(w3, 6))
    finally:
        node.stop()


@pytest.fixture(params=["embedded", "anvil"])
def net(request) -> Net:
    return request.getfixturevalue(request.param)


ZERO = "0x" + "00" * 20


def _independent_rule(readings, bindings, through, budget, cap, epoch_seconds=86_400):
    """docs/REWARDS.md's rule written again from the document, sharing no code with
    gateway/rewards/rule.py: readings (board, seq, flags, epoch), bindings (board, owner,
    timestamp) in chain order. Returns {epoch: {owner: amount}}, cumulative {owner: amount}."""
    first: dict = {}
    for board, seq, flags, epoch in readings:
        key = (board.lower(), seq)
        first[key] = min(first.get(key, (epoch, flags)), (epoch, flags))
    per_epoch, cumulative = {}, {}
    for epoch in sorted({e for e, _f in first.values() if e <= through}):
        counts: dict = {}
        for (board, _seq), (e, flags) in first.items():
            if e == epoch and flags == 0:
                counts[board] = counts.get(board, 0) + 1
        weights = {b: min(n, cap) for b, n in counts.items()}
        total = sum(weights.values())
        owner_of = {}
        for board, owner, ts in bindings:
            if ts < (epoch + 1) * epoch_seconds:
                owner_of[board.lower()] = owner.lower()
        paid: dict = {}
        for board, w in weights.items():
            owner = owner_of.get(board, ZERO)
            if owner != ZERO and budget * w // total:
                paid[owner] = paid.get(owner, 0) + budget * w // total
        per_epoch[epoch] = paid
        for owner, amount in paid.items():
            cumulative[owner] = cumulative.get(owner, 0) + amount
    return per_epoch, cumulative


def _oz_root(node: str, cumulative: dict) -> str:
    """The cumulative tree's root from @openzeppelin/merkle-tree (tools/js/rewards-tree.mjs)."""
    values = [[o, str(a)] for o, a in sorted(cumulative.items()) if a]
    proc = subprocess.run(
        [node, str(REPO / "tools/js/rewards-tree.mjs")],
        input=json.dumps({"cases": [{"values": values}]}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["results"][0]["root"]


@pytest.fixture(scope="session")
def independent_rule():
    return _independent_rule


@pytest.fixture(scope="session")
def oz_root(node_exe: str):
    return lambda cumulative: _oz_root(node_exe, cumulative)


def add_stamped_readings(conn, boards: list, count: int, stamp: int) -> None:
    """chainkit.add_readings, but each reading signed with the board time `stamp`: the rule
    flags a reading by its own time against its anchoring block's (docs/REWARDS.md), and
    chainkit's FIXED_TIME is months before the chain's clock (TIME_OLD). `stamp` 0 is a
    board whose clock is unset (TIME_UNSYNCED)."""
    conn.execute("BEGIN")
    for board in boards:
        conn.execute(
            "INSERT OR IGNORE INTO devices(address, pubkey, added_at) VALUES (?, ?, ?)",
            (board.address, board.pubkey, stamp),
        )
    for i in range(count):
        board = boards[i % len(boards)]
        (seq,) = conn.execute(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM readings WHERE device = ?", (board.address,)
        ).fetchone()
        envelope, digest = board.signed_reading(seq, stamp)
        conn.execute(
            "INSERT INTO readings(device, seq, digest, envelope, time, received_at, flags) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (board.address, seq, digest, envelope, stamp, stamp, 0 if stamp else 1),
        )
    conn.execute("COMMIT")


@pytest.fixture
def stamped_readings():
    """add_stamped_readings, for the test modules (conftest is not importable)."""
    return add_stamped_readings
