"""The rewards stage's tables and its computation from the gateway database.

Input: the gateway's `readings` (device, seq, flags) joined with the chain
stage's `batch_leaves` and `batches` (anchored ones only), plus two caches of
chain data filled by `sync` while a chain is connected:

rewards_block_times  block hash -> timestamp of every block that anchors a batch
rewards_bindings     every BoardBound event of the registry, in chain order
rewards_epochs       each computed epoch: root, total, distribution file, publishing tx

With the caches filled, `compute` needs no chain, so `terrapin rewards compute
--db PATH` works offline and on a copy of the database.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from terrapin.gateway.pgsql import PgConnection, is_url
from terrapin.gateway.rewards import distribution
from terrapin.gateway.rewards import rule as rewards
from terrapin.gateway.rewards.distribution import Distribution
from terrapin.gateway.rewards.rule import (
    DEFAULT_BUDGET,
    DEFAULT_CAP,
    EPOCH_SECONDS,
    EpochRewards,
    RewardsError,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS rewards_block_times (
    block_hash BLOB PRIMARY KEY,
    block_number INTEGER NOT NULL,
    timestamp INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rewards_bindings (
    block_number INTEGER NOT NULL,
    log_index INTEGER NOT NULL,
    board BLOB NOT NULL,
    owner BLOB NOT NULL,
    timestamp INTEGER NOT NULL,
    PRIMARY KEY (block_number, log_index)
);
CREATE TABLE IF NOT EXISTS rewards_epochs (
    epoch INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    total TEXT NOT NULL,
    path TEXT NOT NULL,
    computed_at REAL NOT NULL,
    publish_tx BLOB,
    published_at REAL
);
"""

ANCHORED = ("anchored", "confirmed")


@dataclass(frozen=True)
class Params:
    """The rule's parameters (the [rewards] config section)."""

    epoch_seconds: int = EPOCH_SECONDS
    budget: int = DEFAULT_BUDGET
    cap: int = DEFAULT_CAP

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None) -> Params:
        data = data or {}

        def integer(key: str, default: int) -> int:
            value = data.get(key, default)
            if isinstance(value, str) and value.isdigit():
                return int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise RewardsError(f"{key} must be an integer or a decimal string, not {value!r}")
            return value

        params = cls(
            epoch_seconds=integer("epoch_seconds", EPOCH_SECONDS),
            budget=integer("budget", DEFAULT_BUDGET),
            cap=integer("cap", DEFAULT_CAP),
        )
        if params.epoch_seconds <= 0 or params.budget < 0 or params.cap < 1:
            raise RewardsError("[rewards] needs epoch_seconds > 0, budget >= 0, cap >= 1")
        return params

    def to_json(self) -> dict[str, Any]:
        return {"epoch_seconds": self.epoch_seconds, "budget": str(self.budget), "cap": self.cap}

    def rule(self) -> Any:
        """The manifest's rule: these parameters, the flag parameters, the rule version."""
        from terrapin.gateway.rewards.manifest import Rule

        return Rule(self.epoch_seconds, self.budget, self.cap)


class MissingChainData(RewardsError):
    """An anchored batch whose block time is not cached yet (run sync with a chain)."""


def connect(db_path: str | Path) -> sqlite3.Connection:
    if is_url(db_path):  # PostgreSQL ([store] url): sqlite3's default transaction mode
        pg = PgConnection(str(db_path), autocommit=False)
        pg.executescript(SCHEMA)
        pg.commit()
        return pg  # type: ignore[return-value]
    conn = sqlite3.connect(str(db_path), timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    return conn


def _has_chain_tables(conn: sqlite3.Connection) -> bool:
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    return {"readings", "batches", "batch_leaves", "chain_txs"} <= names


def sync(
    conn: sqlite3.Connection, w3: Any, registry: Any | None, from_block: int = 0
) -> dict[str, int]:
    """Cache block times of anchored batches and the BoardBound events of `registry`
    from `from_block` (its deployment block: public RPCs refuse huge log ranges)."""
    from terrapin.gateway.rewards import onchain as rewards_chain

    fetched = 0
    if _has_chain_tables(conn):
        placeholders = ",".join("?" * len(ANCHORED))
        rows = conn.execute(
            f"SELECT DISTINCT b.block_hash FROM batches b LEFT JOIN rewards_block_times t "
            f"ON t.block_hash = b.block_hash WHERE b.status IN ({placeholders}) "
            "AND b.block_hash IS NOT NULL AND t.block_hash IS NULL",
            ANCHORED,
        ).fetchall()
        for (block_hash,) in rows:
            block = w3.eth.get_block(bytes(block_hash))
            conn.execute(
                "INSERT OR REPLACE INTO rewards_block_times VALUES (?, ?, ?)",
                (bytes(block_hash), int(block["number"]), int(block["timestamp"])),
            )
            fetched += 1
    conn.commit()
    if registry is None:  # no binding contract known: keep what is cached
        return {"block_times": fetched, "bindings": len(bindings(conn))}
    events = rewards_chain.binding_events(w3, registry, from_block)
    with conn:
        # Re-read from the deployment block on: a reorg may have moved or dropped events.
        conn.execute("DELETE FROM rewards_bindings WHERE block_number >= ?", (from_block,))
        conn.executemany("INSERT INTO rewards_bindings VALUES (?, ?, ?, ?, ?)", events)
    return {"block_times": fetched, "bindings": len(events)}


def bindings(conn: sqlite3.Connection) -> list[tuple[str, str, int]]:
    rows = conn.execute(
        "SELECT board, owner, timestamp FROM rewards_bindings ORDER BY block_number, log_index"
    )
    return [("0x" + bytes(b).hex(), "0x" + bytes(o).hex(), t) for b, o, t in rows]


@dataclass
class Computed:
    distribution: Distribution | None  # None when nobody has earned anything yet
    epochs: list[EpochRewards]
    this_epoch: EpochRewards
    manifest: Path | None = None  # the epoch manifest written by settle_epoch
    manifest_hash: bytes | None = None


def _epoch_rewards(m: Any, params: Params) -> EpochRewards:
    """The rule's figures of one built manifest, as the commands print them."""
    result = EpochRewards(epoch=m.epoch, budget=params.budget, cap=params.cap)
    for board, f in sorted(m.boards.items()):
        key = "0x" + board.hex()
        if f.counted:
            result.readings[key] = f.counted
            result.weights[key] = f.weight
            result.boards[key] = f.amount
        if f.flagged:
            result.flagged[key] = f.flagged
    result.owners = {"0x" + o.hex(): a for o, a in sorted(m.epoch_amounts.items())}
    result.unowned = m.unowned
    return result


def compute(
    conn: sqlite3.Connection,
    epoch: int,
    params: Params | None = None,
    *,
    chain_id: int | None = None,
    contract: str | None = None,
) -> Computed:
    """The cumulative distribution through `epoch` from the database alone: every epoch's
    manifest figures (ledger.epochs_through: flags recomputed from the envelopes and the
    anchoring blocks' times, evidence frozen for epochs already written)."""
    from terrapin.gateway.rewards import ledger

    params = params or Params()
    try:
        built = ledger.epochs_through(conn, epoch, params.rule())
    except ledger.MissingBlockTime as exc:
        raise MissingChainData(str(exc)) from None
    epochs = [_epoch_rewards(m, params) for m in built]
    this = next((e for e in epochs if e.epoch == epoch), None)
    if this is None:
        this = EpochRewards(epoch=epoch, budget=params.budget, cap=params.cap)
    totals = {"0x" + o.hex(): a for o, a in built[-1].cumulative.items()} if built else {}
    dist = None
    if any(totals.values()):
        dist = distribution.build(
            epoch,
            totals,
            epoch_amounts=this.owners,
            rule=params.to_json(),
            chain_id=chain_id,
            contract=contract,
        )
    return Computed(dist, epochs, this)


def record(conn: sqlite3.Connection, dist: Distribution, path: Path) -> None:
    with conn:
        conn.execute(
            "INSERT OR REPLACE INTO rewards_epochs (epoch, root, total, path, computed_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (dist.epoch, dist.root, str(dist.total), str(path), time.time()),
        )


def record_published(conn: sqlite3.Connection, epoch: int, tx_hash: bytes) -> None:
    with conn:
        conn.execute(
            "UPDATE rewards_epochs SET publish_tx = ?, published_at = ? WHERE epoch = ?",
            (tx_hash, time.time(), epoch),
        )


def latest_distribution(
    conn: sqlite3.Connection, published_only: bool = False
) -> Distribution | None:
    where = "WHERE publish_tx IS NOT NULL " if published_only else ""
    row = conn.execute(
        f"SELECT path FROM rewards_epochs {where}ORDER BY epoch DESC LIMIT 1"
    ).fetchone()
    return None if row is None else distribution.load(Path(row[0]))


def distribution_path(out_dir: Path, epoch: int) -> Path:
    return Path(out_dir) / f"epoch-{epoch}.json"


def boards_of(conn: sqlite3.Connection) -> dict[str, str]:
    """Board -> owner as bound now (the latest binding of each board)."""
    now: dict[str, str] = {}
    for board, owner, _t in bindings(conn):
        now[board] = owner
    return {b: o for b, o in now.items() if o != rewards.ZERO_ADDRESS}


def status(conn: sqlite3.Connection, owner: str | None = None) -> dict[str, Any]:
    """The rewards part of the status API, from the database alone (no chain call).

    Without `owner`: the latest computed epoch with every owner's amounts. With
    `owner`: that owner's boards, its amount for the latest epoch, its cumulative
    amount and the proof it claims with. Amounts are decimal strings (base units).
    For what the owner already claimed on chain, see rewards_chain.owner_view.
    """
    row = conn.execute(
        "SELECT epoch, path, publish_tx FROM rewards_epochs ORDER BY epoch DESC LIMIT 1"
    ).fetchone()
    dist = None if row is None else distribution.load(Path(row[1]))
    base: dict[str, Any] = {
        "epoch": None if dist is None else dist.epoch,
        "root": None if dist is None else "0x" + dist.root.hex(),
        "published": bool(row and row[2]),
    }
    owners = boards_of(conn)
    if owner is None:
        claims = {} if dist is None else dist.claims
        return base | {
            "total": "0" if dist is None else str(dist.total),
            "boards": owners,
            "owners": {
                o: {
                    "epoch_amount": str(dist.epoch_amounts.get(o, 0)) if dist else "0",
                    "cumulative": str(c.amount),
                }
                for o, c in claims.items()
            },
        }
    owner = rewards.normalise_address(owner)
    entry = None if dist is None else dist.claims.get(owner)
    return base | {
        "owner": owner,
        "boards": sorted(b for b, o in owners.items() if o == owner),
        "epoch_amount": str(dist.epoch_amounts.get(owner, 0)) if dist else "0",
        "cumulative": "0" if entry is None else str(entry.amount),
        "proof": [] if entry is None else ["0x" + p.hex() for p in entry.proof],
    }


def overview(conn: sqlite3.Connection) -> dict[str, Any]:
    """`status(conn)` for the status API's /api/rewards: every owner, also one whose
    boards have earned nothing yet, each with its boards."""
    base = status(conn)
    by_owner: dict[str, list[str]] = {}
    for board, owner in base["boards"].items():
        by_owner.setdefault(owner, []).append(board)
    for owner in sorted(set(by_owner) | set(base["owners"])):
        entry = base["owners"].setdefault(owner, {"epoch_amount": "0", "cumulative": "0"})
        entry["boards"] = sorted(by_owner.get(owner, []))
    base["owners"] = dict(sorted(base["owners"].items()))
    return base


def known_owner(view: dict[str, Any]) -> bool:
    """Whether `status(conn, owner)` found the owner: a bound board or an amount."""
    return bool(view["boards"]) or view["cumulative"] != "0"


def settle_epoch(
    conn: sqlite3.Connection,
    w3: Any,
    oracle: Any,
    token: Any,
    binding: Any | None,
    epoch: int,
    params: Params | None = None,
    out_dir: Path | str = "rewards",
    *,
    publish: bool = True,
    from_block: int = 0,
    anchor: str | None = None,
) -> Computed:
    """One call for the gateway or the demo: sync from the chain, compute, write the
    distribution and the epoch manifest (cut-off: the chain's latest block now, unless the
    epoch was written before), record them and (if `publish`) set the root with the
    manifest's hash, with the oracle's key."""
    from terrapin.gateway.rewards import ledger
    from terrapin.gateway.rewards import onchain as rewards_chain

    params = params or Params()
    sync(conn, w3, binding, from_block)
    result = compute(conn, epoch, params, chain_id=w3.eth.chain_id, contract=token.address)
    head = w3.eth.get_block("latest")
    chain = ledger.ChainRef(
        int(w3.eth.chain_id),
        address_bytes(anchor) if anchor else _anchor_of(conn),
        address_bytes(binding.address) if binding is not None else bytes(20),
        address_bytes(token.address),
        from_block,
        gateway_keys(conn),
    )
    manifest = ledger.build_manifest(
        conn, epoch, params.rule(), chain, (int(head["number"]), int(head["timestamp"]))
    )
    dist = result.distribution
    if (None if dist is None else dist.root) != manifest.root:
        raise RewardsError(f"epoch {epoch}: the manifest's root is not the distribution's")
    result.manifest = ledger.manifest_path(Path(out_dir), epoch)
    result.manifest_hash = ledger.write(conn, manifest, result.manifest)
    if dist is None:
        return result
    path = distribution.write(dist, distribution_path(Path(out_dir), epoch))
    record(conn, dist, path)
    if publish:
        receipt = rewards_chain.publish_root(w3, oracle, token, dist, result.manifest_hash)
        record_published(conn, epoch, bytes(receipt["transactionHash"]))
    return result


def address_bytes(text: str) -> bytes:
    return bytes.fromhex(rewards.normalise_address(text)[2:])


def _anchor_of(conn: sqlite3.Connection) -> bytes:
    """The anchor contract the batches went to (chain_txs), zero if none yet."""
    if not _has_chain_tables(conn):
        return bytes(20)
    row = conn.execute("SELECT contract FROM chain_txs ORDER BY id DESC LIMIT 1").fetchone()
    return address_bytes(row[0]) if row else bytes(20)


def gateway_keys(conn: sqlite3.Connection) -> tuple[bytes, ...]:
    """Every key this gateway anchored with: whose Anchored events the epoch counts."""
    if not _has_chain_tables(conn):
        return ()
    rows = conn.execute("SELECT DISTINCT sender FROM chain_txs ORDER BY sender").fetchall()
    return tuple(sorted({address_bytes(r[0]) for r in rows}))
