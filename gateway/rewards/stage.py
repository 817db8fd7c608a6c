"""The rewards stage of the gateway: settle each reward epoch once, after it has ended.

    [pipeline]
    stages = ["batch", "anchor", "rewards"]

Input: the chain stages' confirmed batches and their anchoring blocks' timestamps (an
epoch is `timestamp // epoch_seconds`, docs/REWARDS.md). Output: per epoch, the
distribution file, its row in `rewards_epochs`, and the root published to
TerrapinRewards with the gateway's key (`rewards_store.settle_epoch`).

Epoch E is due when (1) the chain's latest block is stamped at or after the end of E,
so no later anchor can land in E, (2) no batch anchored in E still waits for its
confirmations and (3) no anchoring transaction is in flight (it may land in E). Only
epochs with anchored readings are settled (an empty one changes nobody's amount). What
was settled is recorded per contract in `rewards_settled`, and
the contract itself only accepts increasing epochs, so a restart (or a crash between
the publishing transaction and the record) never publishes an epoch twice.

The stage uses `stage.chain_for(cfg)`: the same Chain as the anchorer. On the embedded
chain, which lives only in this process, it deploys TerrapinRewards at its first start
(the address is kept in the database and reused while that chain lives), and mines an
empty block when the wall clock has passed an epoch's end but no block has (eth-tester
mines only on demand and stamps a block with the time its predecessor was mined). On a
JSON-RPC chain `[rewards] contract` is required and the gateway key needs ORACLE_ROLE.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from eth_account import Account
from web3.exceptions import ProviderConnectionError

from terrapin.gateway.chain.node import Chain, ChainError
from terrapin.gateway.errors import ConfigError
from terrapin.gateway.pgsql import is_url, store_location
from terrapin.gateway.retry import Failures, RetryPolicy, disk_refuses
from terrapin.gateway.rewards import ledger
from terrapin.gateway.rewards import onchain as rewards_chain
from terrapin.gateway.rewards import tables as rewards_store
from terrapin.gateway.rewards.rule import RewardsError
from terrapin.gateway.rewards.settings import rule_params

log = logging.getLogger("terrapin.gateway.rewards.rule")

SCHEMA = """
CREATE TABLE IF NOT EXISTS rewards_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rewards_settled (
    contract TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    root BLOB,
    publish_tx BLOB,
    settled_at REAL NOT NULL,
    PRIMARY KEY (contract, epoch)
);
"""
DEFAULT_POLL = 5.0
MAX_BACKOFF = 60.0
# Waited out without a limit: the node unreachable (requests' errors are OSErrors),
# or a ChainError / RewardsError that says what the operator must fix.
_EXPECTED = (ChainError, RewardsError, OSError, ProviderConnectionError)


def _expected(exc: BaseException) -> bool:
    """A condition the rewards stage waits out rather than a bug."""
    return isinstance(exc, _EXPECTED) or disk_refuses(exc)


class RewardsStage:
    """Settles due epochs; `step()` is one pass, `run(shutdown)` the stage loop."""

    def __init__(
        self,
        db_path: str | Path,
        chain: Chain,
        params: rewards_store.Params | None = None,
        *,
        contract: str | None = None,
        binding: str | None = None,
        from_block: int = 0,
        out_dir: str | Path | None = None,
        poll_seconds: float = DEFAULT_POLL,
    ):
        # A SQLite file, or a postgresql:// URL ([store] url; then out_dir is given).
        self.db_path: Any = db_path if is_url(db_path) else Path(db_path)
        self.chain = chain
        self.params = params or rewards_store.Params()
        self.from_block = from_block
        self.out_dir = Path(out_dir) if out_dir else Path(db_path).parent / "rewards"
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()  # one step at a time (the run loop, tests)
        # Made in the server's thread, used in the stage's: steps are serialised by _lock;
        # status() reads a summary and view() its own connection, so neither waits for a
        # transaction being mined.
        self.conn = self._connect()
        self.conn.executescript(SCHEMA)
        ledger.ensure(self.conn)  # the epoch manifests' tables (status reads them)
        self.conn.commit()
        w3 = chain.w3
        self.token = rewards_chain.rewards_contract(w3, contract or self._embedded_contract())
        self.binding = rewards_chain.binding_contract(w3, binding or chain.registry.address)
        self.contract_key = f"{chain.chain_id}:{self.token.address}"
        self.error: str | None = None
        self.retry = RetryPolicy(attempts=5, first=1.0, cap=MAX_BACKOFF)  # a bug
        self.polls = 0
        self.next_due: int | None = None
        self._summary = self._summarise()

    def _connect(self) -> sqlite3.Connection:
        if is_url(self.db_path):
            return rewards_store.connect(self.db_path)
        conn = sqlite3.connect(str(self.db_path), timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(rewards_store.SCHEMA)
        return conn

    # -- the contract ----------------------------------------------------------
    def _embedded_contract(self) -> str:
        """TerrapinRewards on the embedded chain: the one this database knows, if this
        very chain holds it, else a new deployment (oracle: the gateway key; admin: another)."""
        if self.chain.tester is None:
            raise ConfigError(
                "the rewards stage needs [rewards] contract (the TerrapinRewards address) "
                "on a JSON-RPC chain"
            )
        key = f"contract:{self.chain.chain_id}:{self.chain.registry.address}"
        row = self.conn.execute("SELECT value FROM rewards_meta WHERE key = ?", (key,)).fetchone()
        if row and self.chain.w3.eth.get_code(row[0]):
            return row[0]
        # The admin is a throw-away key apart from the oracle (this chain ends with the
        # process); on a real chain the admin stays cold (docs/REWARDS.md).
        token = rewards_chain.deploy_rewards(
            self.chain.w3,
            self.chain.account,
            admin=Account.create().address,
            epoch_seconds=self.params.epoch_seconds,
            epoch_cap=self.params.budget,
        )
        with self.conn:
            self.conn.execute(
                "INSERT OR REPLACE INTO rewards_meta VALUES (?, ?)", (key, token.address)
            )
        log.info("embedded chain: TerrapinRewards %s", token.address)
        return token.address

    # -- which epochs -----------------------------------------------------------
    def last_settled(self) -> int | None:
        row = self.conn.execute(
            "SELECT MAX(epoch) FROM rewards_settled WHERE contract = ?", (self.contract_key,)
        ).fetchone()
        return row[0]

    def _batch_epochs(self) -> list[tuple[int, str]]:
        """(epoch, status) of every anchored or confirmed batch with a known block time."""
        names = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master")}
        if "batches" not in names:
            return []
        es = self.params.epoch_seconds
        rows = self.conn.execute(
            "SELECT t.timestamp, b.status FROM batches b JOIN rewards_block_times t "
            "ON t.block_hash = b.block_hash WHERE b.status IN ('anchored', 'confirmed')"
        ).fetchall()
        return [(ts // es, status) for ts, status in rows]

    def _in_flight(self) -> bool:
        """A batch whose anchoring transaction is out but not yet seen mined: once mined it
        counts in the epoch of its block, which may be one about to be settled, and an
        epoch manifest must list every batch anchored in its epoch."""
        row = self.conn.execute("SELECT 1 FROM batches WHERE status = 'sent' LIMIT 1")
        return row.fetchone() is not None

    def _head_time(self) -> int:
        """The latest block's timestamp; on the embedded chain, mined forward to the
        wall clock when an epoch's end has passed only there."""
        w3 = self.chain.w3
        head = int(w3.eth.get_block("latest")["timestamp"])
        tester = self.chain.tester
        if tester is not None and self.next_due is not None:
            end = (self.next_due + 1) * self.params.epoch_seconds
            for _ in range(3):  # a block is stamped with its predecessor's mining time
                if head >= end or time.time() < end:
                    break
                tester.mine_blocks(1)
                head = int(w3.eth.get_block("latest")["timestamp"])
        return head

    def due(self) -> list[int]:
        """Epochs to settle now, oldest first."""
        rewards_store.sync(self.conn, self.chain.w3, None)  # block times of new batches
        last = self.last_settled()
        epochs = self._batch_epochs()
        pending = sorted({e for e, _s in epochs if last is None or e > last})
        self.next_due = pending[0] if pending else None
        if not pending:
            return []
        if self._in_flight():  # its transaction may land in any of them: wait for it
            return []
        head = self._head_time()
        unconfirmed = {e for e, status in epochs if status != "confirmed"}
        out = []
        for epoch in pending:
            if head < (epoch + 1) * self.params.epoch_seconds or epoch in unconfirmed:
                break
            out.append(epoch)
        return out

    # -- settling -----------------------------------------------------------------
    def _record(self, epoch: int, root: bytes | None, tx: bytes | None) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT OR IGNORE INTO rewards_settled VALUES (?, ?, ?, ?, ?)",
                (self.contract_key, epoch, root, tx, time.time()),
            )

    def settle(self, epoch: int) -> dict[str, Any]:
        """Compute, write, record and publish `epoch` unless this contract already has it."""
        published = int(self.token.functions.epoch().call())
        has_root = self.token.functions.merkleRoot().call() != b"\0" * 32
        already = has_root and published >= epoch  # e.g. killed after the publishing tx
        result = rewards_store.settle_epoch(
            self.conn,
            self.chain.w3,
            self.chain.account,
            self.token,
            self.binding,
            epoch,
            self.params,
            self.out_dir,
            publish=not already,
            from_block=self.from_block,
            anchor=self.chain.anchor.address,
        )
        dist = result.distribution
        tx = None
        if dist is not None and not already:
            row = self.conn.execute(
                "SELECT publish_tx FROM rewards_epochs WHERE epoch = ?", (epoch,)
            ).fetchone()
            tx = bytes(row[0]) if row and row[0] else None
        if already and dist is not None:
            tx = self._published_tx(epoch)
            if tx is not None:
                rewards_store.record_published(self.conn, epoch, tx)
        self._record(epoch, None if dist is None else dist.root, tx)
        if already:
            log.info("epoch %d was already published on chain; recorded", epoch)
        elif dist is None:
            log.info("epoch %d settled: no owner earned anything, nothing published", epoch)
        else:
            log.info("epoch %d settled: root 0x%s, tx 0x%s", epoch, dist.root.hex(), tx.hex())
        return {"epoch": epoch, "published": tx is not None}

    def _published_tx(self, epoch: int) -> bytes | None:
        """The transaction that published `epoch` (its RootPublished event), if any."""
        logs = self.token.events.RootPublished().get_logs(
            from_block=self.from_block, argument_filters={"epoch": epoch}
        )
        return bytes(logs[-1]["transactionHash"]) if logs else None

    def step(self) -> list[int]:
        """Settle every due epoch; returns the epochs settled in this pass."""
        with self._lock:
            self.polls += 1
            done = []
            for epoch in self.due():
                self.settle(epoch)
                done.append(epoch)
            if done:
                self.due()  # refresh next_due for status()
            self._summary = self._summarise()
            return done

    def run(self, shutdown: threading.Event) -> None:
        """Stage loop. Expected conditions are waited out without a limit (capped,
        jittered backoff; `status()["error"]` names them): the node unreachable, a
        ChainError or RewardsError the operator must fix, a busy or full database.
        Any other error is retried `self.retry.attempts` times (settling is
        recorded per epoch and the contract takes each epoch once, so repeating a
        step is safe), then GaveUp ends run() and with it the gateway."""
        backoff = 1.0
        failures = Failures("rewards step", self.retry, log)
        while not shutdown.is_set():
            try:
                self.step()
                self.error = None
                backoff = 1.0
                wait = self.poll_seconds
                failures.succeeded()
            except Exception as exc:
                if not _expected(exc):
                    self.error = (
                        f"{type(exc).__name__}: {exc} "
                        f"(attempt {failures.count + 1} of {self.retry.attempts})"
                    )
                    wait = failures.failed(exc)  # raises GaveUp after the last attempt
                else:
                    wait = backoff * (0.5 + random.random() / 2)
                    self.error = f"{exc} (retrying without limit)"
                    log.warning("rewards: %s; retrying in %.0f s", exc, wait)
                    backoff = min(backoff * 2, MAX_BACKOFF)
            shutdown.wait(wait)

    # -- views ----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        es = self.params.epoch_seconds
        return self._summary | {
            "current_epoch": int(time.time()) // es,
            "polls": self.polls,
            "error": self.error,
        }

    def _summarise(self) -> dict[str, Any]:
        es = self.params.epoch_seconds
        row = self.conn.execute(
            "SELECT epoch, root, publish_tx FROM rewards_settled WHERE contract = ? "
            "ORDER BY epoch DESC LIMIT 1",
            (self.contract_key,),
        ).fetchone()
        count = self.conn.execute(
            "SELECT COUNT(*) FROM rewards_settled WHERE contract = ?", (self.contract_key,)
        ).fetchone()[0]
        return {
            "contract": self.token.address,
            "epoch_seconds": es,
            "last_settled_epoch": None if row is None else row[0],
            "last_root": None if row is None or row[1] is None else "0x" + bytes(row[1]).hex(),
            "last_tx": None if row is None or row[2] is None else "0x" + bytes(row[2]).hex(),
            "settled": count,
            "next_due_epoch": self.next_due,
            "next_due_at": None if self.next_due is None else (self.next_due + 1) * es,
            "last_manifest_hash": self._last_manifest_hash(),
        }

    def _last_manifest_hash(self) -> str | None:
        """keccak256 of the latest epoch manifest written (what went on chain with its root)."""
        row = self.conn.execute(
            "SELECT hash FROM rewards_manifests WHERE hash IS NOT NULL ORDER BY epoch DESC LIMIT 1"
        ).fetchone()
        return None if row is None else "0x" + bytes(row[0]).hex()

    def view(self, owner: str | None = None) -> dict[str, Any]:
        """The /api/rewards data: the database's view plus what the contract says."""
        conn = self._connect()
        try:
            base = rewards_store.status(conn, owner) if owner else rewards_store.overview(conn)
            dist = rewards_store.latest_distribution(conn)
        finally:
            conn.close()
        base["contract"] = self.token.address
        owners = [base["owner"]] if owner is not None else list(base["owners"])
        chain = {o: rewards_chain.owner_view(self.token, dist, o) for o in owners}
        keys = ("balance", "claimed", "claimable", "published_epoch")
        if owner is not None:
            return base | {k: chain[base["owner"]][k] for k in keys}
        for o, entry in base["owners"].items():
            entry.update({k: chain[o][k] for k in keys})
        return base


def rewards(cfg: Any) -> RewardsStage:
    """The rewards stage from the gateway config's [rewards] section (gateway/server.py)."""
    from terrapin.gateway.chain.stage import chain_for

    section = dict(cfg.sections.get("rewards", {}))
    params = rule_params(section)
    poll = section.get("poll_seconds", DEFAULT_POLL)
    if isinstance(poll, bool) or not isinstance(poll, int | float) or poll <= 0:
        raise ConfigError("[rewards] poll_seconds must be a positive number")
    db_path = Path(cfg.store.path)
    return RewardsStage(
        store_location(cfg),
        chain_for(cfg),
        params,
        contract=section.get("contract"),
        binding=section.get("binding"),
        from_block=int(section.get("from_block", 0)),
        out_dir=section.get("out_dir") or db_path.parent / "rewards",
        poll_seconds=float(poll),
    )
