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
    return {"readings", "batches", "batch_leaves"} <= names


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


def anchored_readings(
    conn: sqlite3.Connection, epoch_seconds: int
) -> list[tuple[str, int, int, int]]:
    """(board, seq, flags, epoch) of every reading in an anchored batch."""
    if not _has_chain_tables(conn):
        return []
    placeholders = ",".join("?" * len(ANCHORED))
    rows = conn.execute(
        "SELECT r.device, r.seq, r.flags, b.id, t.timestamp FROM readings r "
        "JOIN batch_leaves l ON l.reading_id = r.id JOIN batches b ON b.id = l.batch_id "
        "LEFT JOIN rewards_block_times t ON t.block_hash = b.block_hash "
        f"WHERE b.status IN ({placeholders})",
        ANCHORED,
    ).fetchall()
    out = []
    for device, seq, flags, batch_id, timestamp in rows:
        if timestamp is None:
            raise MissingChainData(
                f"block time of anchored batch {batch_id} is not known yet: sync with the chain"
            )
        out.append(("0x" + bytes(device).hex(), seq, flags, timestamp // epoch_seconds))
    return out


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


def compute(
    conn: sqlite3.Connection,
    epoch: int,
    params: Params | None = None,
    *,
    chain_id: int | None = None,
    contract: str | None = None,
) -> Computed:
    """The cumulative distribution through `epoch` from the database alone."""
    params = params or Params()
    readings = anchored_readings(conn, params.epoch_seconds)
    bound = bindings(conn)

    def owners_for(e: int) -> dict[str, str]:
        return rewards.owners_at(bound, e, params.epoch_seconds)

    totals, epochs = rewards.cumulative_rewards(
        readings, owners_for, epoch, params.budget, params.cap
    )
    this = next((e for e in epochs if e.epoch == epoch), None)
    if this is None:
        this = EpochRewards(epoch=epoch, budget=params.budget, cap=params.cap)
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
) -> Computed:
    """One call for the gateway or the demo: sync from the chain, compute, write the file,
    record it and (if `publish`) set the root with the oracle's key."""
    from terrapin.gateway.rewards import onchain as rewards_chain

    sync(conn, w3, binding, from_block)
    result = compute(conn, epoch, params, chain_id=w3.eth.chain_id, contract=token.address)
    if result.distribution is None:
        return result
    path = distribution.write(result.distribution, distribution_path(Path(out_dir), epoch))
    record(conn, result.distribution, path)
    if publish:
        receipt = rewards_chain.publish_root(w3, oracle, token, result.distribution)
        record_published(conn, epoch, bytes(receipt["transactionHash"]))
    return result
