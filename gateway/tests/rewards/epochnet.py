"""The gateway's own code on one chain, for the rewards tests that attack or recompute
settled epochs (as test_manifest_chain.py): Store, Batcher, Anchorer on one database,
boards bound by their own signatures, epochs settled with settle_epoch. Loaded by path
(pytest runs with --import-mode=importlib)."""

from __future__ import annotations

from pathlib import Path

from eth_account import Account
from web3 import Web3

from terrapin.gateway.chain.anchorer import Anchorer
from terrapin.gateway.chain.batcher import Batcher
from terrapin.gateway.chain.node import Chain, ChainConfig, transact
from terrapin.gateway.protocol.envelope import decode_envelope
from terrapin.gateway.rewards import onchain as rewards_chain
from terrapin.gateway.rewards import tables as rewards_store
from terrapin.gateway.rewards.binding import bind_digest, pack_signature
from terrapin.gateway.store import Pending, Store
from terrapin.tools.devkit import chainkit
from terrapin.tools.devkit.simboard import SimBoard

DAY = 86_400
PARAMS = rewards_store.Params(budget=1_000_003, cap=4)


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

    def bind_in_one_block(self, pairs: list[tuple[SimBoard, str]]) -> None:
        """Several BoardBound events in one block (anvil: automine off, then one block)."""
        w3, account = self.w3, self.chain.account
        w3.provider.make_request("evm_setAutomine", [False])
        nonce = w3.eth.get_transaction_count(account.address, "pending")
        for i, (board, owner) in enumerate(pairs):
            bind_nonce = self.binder.functions.bindNonce(
                Web3.to_checksum_address(board.address)
            ).call()
            digest = bind_digest(owner, bind_nonce, self.chain.chain_id, self.binder.address)
            sig = board.private.sign_recoverable(digest, hasher=None)
            call = self.binder.functions.bindBoard(
                Web3.to_checksum_address(board.address),
                Web3.to_checksum_address(owner),
                pack_signature(sig[:64], sig[64]),
            )
            tx = call.build_transaction(
                {"from": account.address, "nonce": nonce + i, "gas": 300_000, "chainId": 31337}
            )
            w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
        w3.provider.make_request("evm_mine", [])
        w3.provider.make_request("evm_setAutomine", [True])

    def transact(self, call, sender=None) -> dict:
        tx = {"to": call.address, "data": call._encode_transaction_data()}
        return transact(self.w3, sender or self.chain.account, tx)
