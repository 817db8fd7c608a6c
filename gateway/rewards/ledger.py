"""Epoch manifests from the gateway database: inputs gathered, cut-offs and evidence frozen.

Input: the chain stage's anchored batches (`batches`, `batch_leaves`, `chain_txs`) with
their readings' envelopes, the cached block times and BoardBound events (tables.py), and
the equivocation evidence in `rejections`. Output: a built `manifest.Manifest` per epoch
(recompute.build), chained through the cumulative amounts of every earlier epoch.

rewards_manifests   each written manifest: its cut-off block, chain references, file, hash
rewards_evidence    the equivocation evidence an epoch counted, frozen when its manifest
                    was first written, so a later equivocation never changes that epoch

A batch counts once its anchoring block is known (status anchored or confirmed and a
cached block time): the rewards stage settles an epoch only when all of them are confirmed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

from terrapin.gateway.protocol.reasons import Reason
from terrapin.gateway.rewards import distribution, recompute
from terrapin.gateway.rewards.flags import FlagParams, equivocation_evidence
from terrapin.gateway.rewards.manifest import (
    Batch,
    Binding,
    ChainRef,
    Evidence,
    Leaf,
    Manifest,
    Rule,
    manifest_hash,
    to_bytes,
)
from terrapin.gateway.rewards.rule import RewardsError

SCHEMA = """
CREATE TABLE IF NOT EXISTS rewards_manifests (
    epoch INTEGER PRIMARY KEY,
    cutoff_block INTEGER NOT NULL,
    cutoff_timestamp INTEGER NOT NULL,
    chain TEXT NOT NULL,
    rule TEXT NOT NULL,
    cumulative TEXT NOT NULL,
    path TEXT,
    hash BLOB,
    written_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rewards_evidence (
    epoch INTEGER NOT NULL,
    device BLOB NOT NULL,
    seq INTEGER NOT NULL,
    envelope BLOB NOT NULL,
    PRIMARY KEY (epoch, device, seq, envelope)
);
"""
_NO_CHAIN = ChainRef(0, bytes(20), bytes(20), None, 0, ())


class MissingBlockTime(RewardsError):
    """An anchored batch whose block time is not cached yet (sync with the chain)."""


def ensure(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def anchored_batches(
    conn: sqlite3.Connection, epoch_seconds: int, since: int = 0
) -> dict[int, list[Batch]]:
    """Epoch -> its anchored batches (blocks stamped at or after `since`), each with every
    reading (sorted by board, seq)."""
    if not {"readings", "batches", "batch_leaves", "chain_txs"} <= _tables(conn):
        return {}
    rows = conn.execute(
        "SELECT b.id, b.root, b.count, b.tx_hash, b.block_hash, t.block_number, t.timestamp, "
        "(SELECT sender FROM chain_txs x WHERE x.tx_hash = b.tx_hash) "
        "FROM batches b LEFT JOIN rewards_block_times t ON t.block_hash = b.block_hash "
        "WHERE b.status IN ('anchored', 'confirmed') "
        "AND (t.timestamp IS NULL OR t.timestamp >= ?) ORDER BY b.id",
        (since,),
    ).fetchall()
    out: dict[int, list[Batch]] = {}
    for bid, root, count, tx, _bh, number, timestamp, sender in rows:
        if timestamp is None:
            raise MissingBlockTime(
                f"block time of anchored batch {bid} is not known yet: sync with the chain"
            )
        leaves = conn.execute(
            "SELECT r.device, r.seq, r.digest, r.envelope FROM batch_leaves l "
            "JOIN readings r ON r.id = l.reading_id WHERE l.batch_id = ? ORDER BY r.device, r.seq",
            (bid,),
        ).fetchall()
        gateway = bytes.fromhex(sender[2:]) if sender else bytes(20)
        batch = Batch(
            gateway,
            bid,
            bytes(tx),
            number,
            timestamp,
            bytes(root),
            count,
            [Leaf(bytes(d), s, bytes(g), bytes(e)) for d, s, g, e in leaves],
        )
        out.setdefault(timestamp // epoch_seconds, []).append(batch)
    for batches in out.values():
        batches.sort(key=lambda b: (b.block, b.gateway, b.id))
    return out


def bindings_before(conn: sqlite3.Connection, end: int) -> list[Binding]:
    rows = conn.execute(
        "SELECT block_number, log_index, board, owner, timestamp FROM rewards_bindings "
        "WHERE timestamp < ? ORDER BY block_number, log_index",
        (end,),
    )
    return [Binding(n, i, bytes(b), bytes(o), t) for n, i, b, o, t in rows]


def current_evidence(conn: sqlite3.Connection, batches: list[Batch]) -> list[Evidence]:
    """Valid equivocation evidence in `rejections` for the readings of `batches`."""
    if "rejections" not in _tables(conn):
        return []
    digests = {(r.board, r.seq): r.digest for b in batches for r in b.readings}
    found = set()
    for board, seq, envelope in conn.execute(
        "SELECT device, seq, envelope FROM rejections WHERE reason = ? AND device IS NOT NULL",
        (int(Reason.EQUIVOCATION),),
    ):
        key = (bytes(board), seq)
        if key in digests and equivocation_evidence(*key, digests[key], bytes(envelope)) is None:
            found.add((bytes(board), seq, bytes(envelope)))
    return [Evidence(*e) for e in sorted(found)]


def frozen(conn: sqlite3.Connection, epoch: int) -> tuple[int, int, ChainRef, Rule] | None:
    """(cut-off block, its timestamp, chain references, rule) of an epoch already written."""
    row = conn.execute(
        "SELECT cutoff_block, cutoff_timestamp, chain, rule FROM rewards_manifests WHERE epoch = ?",
        (epoch,),
    ).fetchone()
    if row is None:
        return None
    return row[0], row[1], chain_from_json(row[2]), rule_from_json(row[3])


def rule_from_json(text: str) -> Rule:
    d = json.loads(text)
    return Rule(d["epoch_seconds"], int(d["budget"]), d["cap"], FlagParams.from_json(d["flags"]))


def _evidence(conn: sqlite3.Connection, epoch: int, batches: list[Batch]) -> list[Evidence]:
    if frozen(conn, epoch) is None:
        return current_evidence(conn, batches)
    rows = conn.execute(
        "SELECT device, seq, envelope FROM rewards_evidence WHERE epoch = ? "
        "ORDER BY device, seq, envelope",
        (epoch,),
    )
    return [Evidence(bytes(d), s, bytes(e)) for d, s, e in rows]


def chain_to_json(c: ChainRef) -> str:
    return json.dumps(
        {
            "chain_id": c.chain_id,
            "anchor": c.anchor.hex(),
            "binding": c.binding.hex(),
            "rewards": None if c.rewards is None else c.rewards.hex(),
            "from_block": c.from_block,
            "gateways": [g.hex() for g in c.gateways],
        }
    )


def chain_from_json(text: str) -> ChainRef:
    d = json.loads(text)
    return ChainRef(
        d["chain_id"],
        bytes.fromhex(d["anchor"]),
        bytes.fromhex(d["binding"]),
        None if d["rewards"] is None else bytes.fromhex(d["rewards"]),
        d["from_block"],
        tuple(bytes.fromhex(g) for g in d["gateways"]),
    )


def _last_written_before(conn: sqlite3.Connection, epoch: int) -> tuple[int, dict[bytes, int]]:
    """(epoch, cumulative amounts) of the latest epoch before `epoch` already written, or
    (-1, {}): what it published never changes, so nothing before it is recomputed."""
    row = conn.execute(
        "SELECT epoch, cumulative FROM rewards_manifests WHERE epoch < ? "
        "ORDER BY epoch DESC LIMIT 1",
        (epoch,),
    ).fetchone()
    found = (-1, {}) if row is None else (row[0], json.loads(row[1]))
    # An epoch published before manifests existed (rule 1): its distribution file holds
    # the cumulative amounts the chain has, which a recomputation under rule 2 may not give.
    old = conn.execute(
        "SELECT epoch, path FROM rewards_epochs WHERE epoch < ? AND epoch > ? "
        "AND publish_tx IS NOT NULL AND epoch NOT IN (SELECT epoch FROM rewards_manifests) "
        "ORDER BY epoch DESC LIMIT 1",
        (epoch, found[0]),
    ).fetchone()
    if old is not None:
        claims = distribution.load(Path(old[1])).claims
        found = (old[0], {o[2:]: str(c.amount) for o, c in claims.items()})
    return found[0], {bytes.fromhex(o): int(a) for o, a in found[1].items()}


def epochs_through(conn: sqlite3.Connection, epoch: int, rule: Rule) -> list[Manifest]:
    """A built manifest (no chain references) for every epoch <= `epoch` with anchored
    readings after the last epoch already written before it, in order, each starting from
    the previous one's cumulative amounts (the written epoch's, as recorded)."""
    ensure(conn)
    after, previous = _last_written_before(conn, epoch)
    by_epoch = anchored_batches(conn, rule.epoch_seconds, (after + 1) * rule.epoch_seconds)
    out = []
    for e in sorted(x for x in by_epoch if after < x <= epoch):
        batches = by_epoch[e]
        known = frozen(conn, e)
        this_rule = rule if known is None else known[3]  # a written epoch keeps its rule
        end = (e + 1) * this_rule.epoch_seconds
        m = Manifest(
            e, this_rule, _NO_CHAIN, 0, 0, batches, _evidence(conn, e, batches),
            bindings_before(conn, end), previous=previous,
        )  # fmt: skip
        m = recompute.build(m)
        out.append(m)
        previous = m.cumulative
    return out


def build_manifest(
    conn: sqlite3.Connection,
    epoch: int,
    rule: Rule,
    chain: ChainRef | None = None,
    cutoff: tuple[int, int] | None = None,
) -> Manifest:
    """Epoch `epoch`'s manifest. A written epoch keeps its cut-off, chain references and
    frozen evidence (so rebuilding it gives the same bytes); otherwise `chain` and `cutoff`
    (the block it is settled at: number, timestamp) are required."""
    known = frozen(conn, epoch) if "rewards_manifests" in _tables(conn) else None
    if known is not None:  # rebuilt as written: same rule, chain, cut-off (and evidence)
        cutoff, chain, rule = known[:2], known[2], known[3]
    if chain is None or cutoff is None:
        raise RewardsError(f"epoch {epoch} has no manifest yet: it needs a chain and a cut-off")
    built = epochs_through(conn, epoch, rule)
    previous = next(
        (m.cumulative for m in reversed(built) if m.epoch < epoch),
        _last_written_before(conn, epoch)[1],
    )
    this = next((m for m in built if m.epoch == epoch), None)
    if this is None:  # no anchored reading in the epoch: nothing changes
        end = (epoch + 1) * rule.epoch_seconds
        bound = bindings_before(conn, end)
        this = recompute.build(Manifest(epoch, rule, chain, 0, 0, [], [], bound, previous=previous))
    return replace(this, chain=chain, cutoff_block=cutoff[0], cutoff_timestamp=cutoff[1])


def freeze(conn: sqlite3.Connection, m: Manifest) -> None:
    """Record the epoch's cut-off, chain references and evidence (once: a written epoch
    keeps what it counted)."""
    with conn:
        cur = conn.execute(
            "INSERT OR IGNORE INTO rewards_manifests "
            "(epoch, cutoff_block, cutoff_timestamp, chain, rule, cumulative, written_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                m.epoch,
                m.cutoff_block,
                m.cutoff_timestamp,
                chain_to_json(m.chain),
                json.dumps(m.rule.to_json()),
                json.dumps({o.hex(): str(a) for o, a in sorted(m.cumulative.items())}),
                time.time(),
            ),
        )
        if cur.rowcount:
            conn.executemany(
                "INSERT OR IGNORE INTO rewards_evidence VALUES (?, ?, ?, ?)",
                [(m.epoch, e.board, e.seq, e.envelope) for e in m.equivocations],
            )


def write(conn: sqlite3.Connection, m: Manifest, path: Path) -> bytes:
    """Freeze the epoch, write the manifest file (atomically) and record it; its hash."""
    freeze(conn, m)
    data = to_bytes(m)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    digest = manifest_hash(data)
    with conn:
        conn.execute(
            "UPDATE rewards_manifests SET path = ?, hash = ? WHERE epoch = ?",
            (str(path), digest, m.epoch),
        )
    return digest


def manifest_path(out_dir: Path, epoch: int) -> Path:
    return Path(out_dir) / f"epoch-{epoch}.manifest.json"


def stored(conn: sqlite3.Connection, epoch: int) -> tuple[Path, bytes] | None:
    """(file, hash) of the manifest written for `epoch`, if any."""
    if "rewards_manifests" not in _tables(conn):
        return None
    row = conn.execute(
        "SELECT path, hash FROM rewards_manifests WHERE epoch = ? AND path IS NOT NULL", (epoch,)
    ).fetchone()
    return None if row is None else (Path(row[0]), bytes(row[1]))
