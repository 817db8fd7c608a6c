"""Anchor stage: closed batches -> one TerrapinAnchor.anchor transaction each.

Rules that keep a batch from being anchored twice or forgotten:
- The contract keeps each gateway's roots under (gateway, batchId) and refuses a second
  anchor of the same pair; batches are sent lowest id first, one transaction in flight
  at a time, so this gateway's ids on chain have no gaps.
- Every transaction is written to `chain_txs` with its raw signed bytes and committed
  BEFORE it is broadcast. After a crash the recorded bytes are broadcast again (same
  hash, same nonce) unless the chain already has the batch's root.
- Each step first asks the contract (`rootOf(gateway, batchId)`) and the node (receipts,
  nonces, mempool), then acts; the database records what the chain says.
- A transaction not mined after `stuck_after` seconds, or gone from the mempool, is
  replaced with the same nonce and fees raised by `fee_bump` (>= 10%).
- A mined anchor whose block is no longer canonical (receipt gone, or block hash
  changed) puts the batch back in flight; the stuck/dropped rule re-anchors it.
- A batch is `confirmed` once its block has `confirmations` blocks on top (itself
  included); confirmed batches are final.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from web3.exceptions import (
    BlockNotFound,
    ProviderConnectionError,
    TransactionNotFound,
    Web3RPCError,
)

from terrapin.gateway.chain import tables as store
from terrapin.gateway.chain import txlog
from terrapin.gateway.chain.node import GWEI, Chain, ChainError, fees
from terrapin.gateway.retry import Failures, RetryPolicy

log = logging.getLogger(__name__)

# Errors that mean "the node is not reachable right now": retry later, change nothing.
TRANSIENT = (OSError, TimeoutError, ProviderConnectionError)
_BACKOFF_MIN, _BACKOFF_MAX = 1.0, 60.0
_RECHECK = 16  # newest anchored batches whose roots are re-read at start


def unreachable_since(at: float) -> str:
    """The status line for a node that has not answered since `at` (Unix time)."""
    return "unreachable since " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _foreign_root(batch: store.Batch, root: bytes) -> ChainError:
    return ChainError(
        f"batch {batch.id} on chain holds root 0x{root.hex()}, ours is 0x{batch.root.hex()}",
        hint="another process anchors with this gateway's key (a second gateway sharing "
        "the key, or a database restored from an older backup): give each gateway its own key",
    )


class Anchorer:
    def __init__(
        self, db_path: str | Path, chain: Chain, *, clock: Callable[[], float] = time.time
    ):
        self.conn = store.connect(db_path)
        self.chain = chain
        self.config = chain.config
        self.clock = clock
        self._deployment_checked = False
        self.backoff = (_BACKOFF_MIN, _BACKOFF_MAX)  # while the node is unreachable
        self.retry = RetryPolicy(attempts=5, first=_BACKOFF_MIN, cap=_BACKOFF_MAX)  # a bug
        self.last_error: str | None = None
        self.unreachable_at: float | None = None  # first failed step of the current outage

    def close(self) -> None:
        self.conn.close()

    # -- chain queries -------------------------------------------------------------
    def _root_on_chain(self, batch_id: int) -> bytes:
        return bytes(self.chain.anchor.functions.rootOf(self.chain.address, batch_id).call())

    def _receipt(self, tx_hash: bytes) -> Any | None:
        try:
            return self.chain.w3.eth.get_transaction_receipt(tx_hash)
        except TransactionNotFound:
            return None

    def _in_mempool(self, tx_hash: bytes) -> bool:
        try:
            self.chain.w3.eth.get_transaction(tx_hash)
            return True
        except TransactionNotFound:
            return False

    def _block_hash(self, number: int) -> bytes | None:
        try:
            return bytes(self.chain.w3.eth.get_block(number)["hash"])
        except BlockNotFound:
            return None

    # -- the step ------------------------------------------------------------------
    def step(self) -> None:
        """Look at the chain, then move every batch on by at most one action."""
        if not self._deployment_checked:
            self._check_deployment()
        head = self.chain.w3.eth.block_number
        for batch in store.batches(self.conn, store.ANCHORED):
            self._check_mined(batch, head)
        in_flight = store.batches(self.conn, store.SENT)
        if in_flight:
            self._handle_in_flight(in_flight[0])
            return
        pending = store.batches(self.conn, store.PENDING)
        if pending:
            self._send_new(pending[0])

    def _check_deployment(self) -> None:
        """Tie the anchoring state to one chain and contract. On a different one (a new
        embedded chain after a restart, a redeployment) every batch is anchored again."""
        ident = f"{self.chain.chain_id}:{self.chain.anchor.address}"
        old = store.get_meta(self.conn, "anchor")
        if old is not None and old != ident:
            log.warning("anchor contract changed (%s -> %s): re-anchoring every batch", old, ident)
            txlog.restart_on(self.conn, ident)
        elif old is None:
            store.set_meta(self.conn, "anchor", ident)
        # What the database believes anchored but the contract does not have (a reorg
        # deeper than `confirmations`, or one while we were down) goes back in flight.
        # Roots are checked for the newest batches only: older ones cannot change.
        for batch in store.batches(self.conn, store.ANCHORED, store.CONFIRMED)[-_RECHECK:]:
            if self._root_on_chain(batch.id) != batch.root:
                self._unanchor(batch, "not in the contract's state at start")
        self._deployment_checked = True

    def _check_mined(self, batch: store.Batch, head: int) -> None:
        tx = txlog.mined_tx(self.conn, batch.id)
        receipt = self._receipt(tx[1]) if tx else None
        canonical = (
            receipt is not None
            and bytes(receipt["blockHash"]) == batch.block_hash
            and self._block_hash(batch.block_number) == batch.block_hash
        )
        if tx is None or not canonical:
            if tx is not None and receipt is not None and receipt["status"] == 1:
                self._mark_mined(batch, tx[0], receipt)  # re-mined in another block
            else:
                self._unanchor(batch, f"block {batch.block_number} is no longer canonical")
            return
        if head - batch.block_number + 1 >= self.config.confirmations:
            txlog.set_batch_status(self.conn, batch.id, store.CONFIRMED)
            log.info("batch %d confirmed (block %d)", batch.id, batch.block_number)

    def _unanchor(self, batch: store.Batch, why: str) -> None:
        log.warning("reorg: batch %d's anchor is gone (%s); re-anchoring", batch.id, why)
        txlog.unanchor(self.conn, batch.id, self.clock())

    def _mark_mined(self, batch: store.Batch, tx_id: int, receipt: Any) -> None:
        txlog.mark_mined(self.conn, batch.id, tx_id, receipt, self.clock())
        log.info(
            "batch %d anchored in block %d (tx 0x%s, %d gas)",
            batch.id,
            receipt["blockNumber"],
            bytes(receipt["transactionHash"]).hex(),
            receipt["gasUsed"],
        )
        fresh = store.get_batch(self.conn, batch.id)
        if fresh is not None:
            self._check_mined(fresh, self.chain.w3.eth.block_number)

    def _handle_in_flight(self, batch: store.Batch) -> None:
        attempts = txlog.attempts(self.conn, batch.id)
        root = self._root_on_chain(batch.id)
        if root == batch.root:  # one of our attempts (maybe an older one) got in
            for attempt in reversed(attempts):
                receipt = self._receipt(attempt.tx_hash)
                if receipt is not None and receipt["status"] == 1:
                    self._mark_mined(batch, attempt.id, receipt)
                    return
            self._adopt(batch)
            return
        if root != bytes(32):
            raise _foreign_root(batch, root)
        if not attempts:  # every attempt abandoned: start over
            txlog.set_batch_status(self.conn, batch.id, store.PENDING)
            return
        current = attempts[-1]
        latest_nonce = self.chain.w3.eth.get_transaction_count(self.chain.address, "latest")
        if latest_nonce > current.nonce:
            self._nonce_used(batch, attempts)
        elif current.status == store.SIGNED:  # recorded, maybe never broadcast
            self._broadcast(current.id, current.raw)
        elif not self._in_mempool(current.tx_hash):
            log.warning(
                "batch %d: tx 0x%s dropped from the mempool", batch.id, current.tx_hash.hex()
            )
            self._replace(batch, current)
        elif self.clock() - (current.sent_at or 0) > self.config.stuck_after:
            log.warning("batch %d: tx 0x%s stuck; raising fees", batch.id, current.tx_hash.hex())
            self._replace(batch, current)

    def _nonce_used(self, batch: store.Batch, attempts: list[txlog.Attempt]) -> None:
        """Our nonce is spent, yet the root is not on chain: a revert, or a foreign tx."""
        for attempt in attempts:
            receipt = self._receipt(attempt.tx_hash)
            if receipt is not None and receipt["status"] == 0:
                txlog.mark_failed(self.conn, batch.id, attempt.id)
                held = self._root_on_chain(batch.id)
                raise ChainError(
                    f"anchoring batch {batch.id} reverted (the contract holds root "
                    f"0x{held.hex()} for this gateway's batch {batch.id})"
                )
        log.warning(
            "batch %d: nonce %d used by another transaction; resending",
            batch.id,
            attempts[-1].nonce,
        )
        txlog.abandon(self.conn, batch.id)

    def _adopt(self, batch: store.Batch) -> None:
        """Record the anchoring transaction found in the contract's Anchored events (our
        root, but none of our recorded transactions: e.g. a database restored from a
        backup older than the anchor)."""
        events = self.chain.anchor.events.Anchored().get_logs(
            from_block=0, argument_filters={"batchId": batch.id, "gateway": self.chain.address}
        )
        mine = [e for e in events if bytes(e["args"]["root"]) == batch.root]
        if not mine:
            raise ChainError(f"batch {batch.id}'s root is on chain but no Anchored event shows it")
        tx_hash = bytes(mine[-1]["transactionHash"])
        receipt = self.chain.w3.eth.get_transaction_receipt(tx_hash)
        log.warning("batch %d: adopting anchor tx 0x%s found on chain", batch.id, tx_hash.hex())
        tx_id = txlog.find_tx(self.conn, tx_hash)
        if tx_id is None:
            tx = self.chain.w3.eth.get_transaction(tx_hash)
            tx_id = txlog.record(
                self.conn,
                batch_id=batch.id,
                chain_id=self.chain.chain_id,
                contract=self.chain.anchor.address,
                sender=tx["from"],
                nonce=tx["nonce"],
                tx_hash=tx_hash,
                raw=b"",
                max_fee=tx.get("maxFeePerGas", 0),
                priority_fee=tx.get("maxPriorityFeePerGas", 0),
                now=self.clock(),
                status=store.TX_SENT,
            )
        self._mark_mined(batch, tx_id, receipt)

    def _send_new(self, batch: store.Batch) -> None:
        root = self._root_on_chain(batch.id)
        if root != bytes(32):
            if root != batch.root:
                raise _foreign_root(batch, root)
            self._adopt(batch)  # anchored by a transaction this database does not know
            return
        nonce = self.chain.w3.eth.get_transaction_count(self.chain.address, "pending")
        max_fee, priority = fees(self.chain.w3, self.config)
        self._sign_record_send(batch, nonce, max_fee, priority)

    def _replace(self, batch: store.Batch, current: txlog.Attempt) -> None:
        market_max, market_priority = fees(self.chain.w3, self.config)
        priority = max(math.ceil(current.priority_fee * self.config.fee_bump), market_priority)
        max_fee = max(math.ceil(current.max_fee * self.config.fee_bump), market_max, priority)
        if max_fee > int(self.config.max_fee_gwei * GWEI):
            log.warning(
                "batch %d: a replacement would offer %d wei/gas, over max_fee_gwei; waiting",
                batch.id,
                max_fee,
            )
            return
        self._sign_record_send(batch, current.nonce, max_fee, priority, replaces=current.id)

    def _sign_record_send(
        self,
        batch: store.Batch,
        nonce: int,
        max_fee: int,
        priority: int,
        replaces: int | None = None,
    ) -> None:
        chain = self.chain
        call = chain.anchor.functions.anchor(batch.id, batch.root, batch.count)
        tx = {
            "type": 2,
            "chainId": chain.chain_id,
            "nonce": nonce,
            "to": chain.anchor.address,
            "value": 0,
            "data": call._encode_transaction_data(),
            "gas": self.config.gas_limit,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": priority,
        }
        signed = chain.account.sign_transaction(tx)
        raw, tx_hash = bytes(signed.raw_transaction), bytes(signed.hash)
        tx_id = txlog.record(  # committed (synchronous=FULL) before it leaves
            self.conn,
            batch_id=batch.id,
            chain_id=chain.chain_id,
            contract=chain.anchor.address,
            sender=chain.address,
            nonce=nonce,
            tx_hash=tx_hash,
            raw=raw,
            max_fee=max_fee,
            priority_fee=priority,
            now=self.clock(),
            replaces=replaces,
        )
        log.info(
            "batch %d: %s tx 0x%s nonce %d max fee %d priority %d",
            batch.id,
            "replacement" if replaces is not None else "anchor",
            tx_hash.hex(),
            nonce,
            max_fee,
            priority,
        )
        self._broadcast(tx_id, raw)

    def _broadcast(self, tx_id: int, raw: bytes) -> None:
        try:
            self.chain.w3.eth.send_raw_transaction(raw)
        except Web3RPCError as exc:
            message = str(exc).lower()
            if "already" not in message and "known" not in message:
                # nonce too low / underpriced: the next step reads the chain and decides.
                log.warning("broadcast refused: %s", exc)
                if "insufficient funds" in message:
                    raise ChainError(
                        f"the gateway account {self.chain.address} cannot pay for gas",
                        hint="fund it; the signed transaction is kept and sent again",
                    ) from None
                if "underpriced" in message:
                    txlog.mark_sent(self.conn, tx_id, 0)  # replace at the next step
                return
        txlog.mark_sent(self.conn, tx_id, self.clock())

    def status(self) -> dict[str, object]:
        """For /api/status: where we anchor and how far the batches are."""
        counts = dict(self.conn.execute("SELECT status, COUNT(*) FROM batches GROUP BY status"))
        last = self.conn.execute(
            "SELECT id, block_number FROM batches WHERE status IN (?, ?) ORDER BY id DESC LIMIT 1",
            (store.ANCHORED, store.CONFIRMED),
        ).fetchone()
        return {
            "network": self.config.network,
            "chain_id": self.chain.chain_id,
            "contract": self.chain.anchor.address,
            "gateway": self.chain.address,
            "batches": counts,
            "last_anchored": None if last is None else {"batch": last[0], "block": last[1]},
            "error": self.last_error,
            "node": "reachable"
            if self.unreachable_at is None
            else unreachable_since(self.unreachable_at),
        }

    # -- drivers -------------------------------------------------------------------
    def anchor_pending(
        self, *, until: str = store.ANCHORED, timeout: float = 60.0
    ) -> list[store.Batch]:
        """Step until every closed batch is `until` (anchored or confirmed); for tests and
        the demo. Mines empty blocks on the embedded chain to reach the confirmations."""
        wanted = {store.ANCHORED, store.CONFIRMED} if until == store.ANCHORED else {store.CONFIRMED}
        deadline = time.monotonic() + timeout
        left: list[store.Batch] = []
        while True:
            try:
                self.step()
                left = [b for b in store.batches(self.conn) if b.status not in wanted]
                if not left:
                    return store.batches(self.conn)
                if self.chain.tester is not None and not store.batches(
                    self.conn, store.PENDING, store.SENT
                ):
                    self.chain.tester.mine_blocks(1)
            except TRANSIENT as exc:
                log.warning("chain unreachable: %s", exc)
            if time.monotonic() > deadline:
                raise ChainError(
                    f"{len(left)} batch(es) not {until} after {timeout:.0f} s",
                    hint="is the node mining? see the anchorer log",
                )
            time.sleep(0 if self.chain.tester is not None else min(0.2, self.config.poll_seconds))

    def run(self, shutdown: threading.Event) -> None:
        """Stage loop: step every poll interval. Expected conditions are waited out
        without a limit, and `status()` says so: the node unreachable (capped,
        jittered backoff) and a ChainError the operator must fix (every minute).
        Any other error is retried `self.retry.attempts` times (each step acts on
        what the chain and the database say, so repeating one is safe), then
        GaveUp ends run() and with it the gateway."""
        low, high = self.backoff
        delay = low
        failures = Failures("anchor step", self.retry, log)
        unreachable = 0
        while not shutdown.is_set():
            try:
                self.step()
                delay = low
                wait = self.config.poll_seconds
                unreachable = 0
                self.unreachable_at = None
                failures.succeeded()
                self.last_error = None
            except TRANSIENT as exc:
                unreachable += 1
                if self.unreachable_at is None:
                    self.unreachable_at = self.clock()
                wait = delay * random.uniform(0.5, 1.0)
                self.last_error = (
                    f"chain unreachable: {exc} (attempt {unreachable}, retrying without limit)"
                )
                log.warning("chain unreachable (%s); retrying in %.1f s", exc, wait)
                delay = min(delay * 2, high)
            except ChainError as exc:
                self.last_error = f"{exc} (retrying every {high:.0f} s without limit)"
                wait = high
                log.error("anchoring stopped: %s", exc)
            except Exception as exc:  # a bug, or a node answer nobody planned for
                self.last_error = failures.describe(exc)
                wait = failures.unexpected(exc, low)  # GaveUp after the last attempt
            shutdown.wait(wait)
