"""The end state every scenario asserts, and the rows of the summary table.

For each board: every reading it signed (its console says `stored seq N` once
the envelope is in its flash outbox) is in the gateway's `readings` table
exactly once, with an envelope that verifies for the board's key (checked here
with cbor2 + coincurve, independently of the gateway), and in a batch that is
anchored on chain; no sequence number was signed twice; the board's outbox is
empty and not corrupt at the end. Readings the board dropped by its documented
outbox-full policy are the only allowed losses, and they must be the oldest.

The board's `dropped` counter counts outbox entries, not lost readings: acks are
not written to flash (firmware/outbox.py), so a boot counts the entries of a
segment that survived the last boot as pending again, those the gateway had
already stored included, and the full policy counts them when it deletes that
segment. So the board may count more drops than readings are missing, but only
as many more as it held stored readings at the boots in which it dropped
(`carried_stored`, from each boot's outbox report).
"""

from __future__ import annotations

import itertools
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import coincurve

from terrapin.gateway.pgsql import PgConnection, is_url
from terrapin.gateway.protocol.envelope import PROTECTED, digest
from terrapin.gateway.protocol.reasons import Flag
from terrapin.gateway.protocol.signature import address

ANCHORED = ("anchored", "confirmed")

# Every boot reports its outbox after the recovery scan (firmware/app.py, _boot).
BOOT_REPORT = re.compile(
    r"^\[info\] outbox: (\d+) pending, (\d+) dropped so far; next seq (\d+)", re.M
)


def seq_ranges(seqs) -> str:
    """[1, 2, 3, 7] -> '1-3, 7' (failure messages name the sequence numbers)."""
    out: list[list[int]] = []
    for s in sorted(set(seqs)):
        if out and out[-1][1] + 1 == s:
            out[-1][1] = s
        else:
            out.append([s, s])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in out)


@dataclass
class Result:
    scenario: str
    target: str
    boards: int = 0
    sent: int = 0
    stored: int = 0
    duplicates: int = 0
    lost: int = 0
    dropped: int = 0  # readings the outbox-full policy cost: signed, never stored, the oldest
    board_dropped: int = 0  # the boards' own `dropped` counters (outbox entries, see above)
    unanchored: int = 0
    redelivered: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def row(self) -> dict:
        return {
            "scenario": self.scenario,
            "target": self.target,
            "boards": self.boards,
            "sent": self.sent,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "lost": self.lost,
            "dropped": self.dropped,
            "board_dropped": self.board_dropped,
            "unanchored": self.unanchored,
            "redelivered": self.redelivered,
            "seconds": round(self.seconds, 1),
            "ok": self.ok,
            "problems": self.problems,
        }


def _verify(
    envelope: bytes, device: bytes, seq: int, stored_digest: bytes, pub: bytes
) -> str | None:
    """None if the stored envelope is the board's signed reading (seq, digest) else why not.
    Digest and address come from the protocol core; the signature is checked with
    coincurve directly, not through the gateway's Verifier."""
    try:
        tag = cbor2.loads(envelope)
        protected, unprotected, payload, sig = tag.value
        body = cbor2.loads(payload)
    except Exception as exc:  # reported with the seq
        return f"undecodable ({exc!r})"
    if tag.tag != 18 or unprotected.get(4) != device or address(pub) != device:
        return "not a COSE_Sign1 with this board's kid"
    if protected != PROTECTED:
        return f"protected header {protected.hex()} is not {{1: -47}}"
    if body.get(1) != seq:
        return f"payload seq {body.get(1)} != stored seq"
    want = digest(payload)
    if want != stored_digest:
        return "stored digest is not the SHA-256 of its Sig_structure"
    der = coincurve.ecdsa.cdata_to_der(coincurve.ecdsa.deserialize_compact(sig))
    if not coincurve.PublicKey(pub).verify(der, want, hasher=None):
        return "signature does not verify for the board's key"
    return None


def _connect(db: Path | str) -> Any:
    """The gateway's database read-only: its SQLite file, or its PostgreSQL URL."""
    if is_url(db):
        return PgConnection(str(db))
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)


def _has_table(con: Any, name: str) -> bool:
    if isinstance(con, sqlite3.Connection):
        return con.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone()
    return con.execute("SELECT to_regclass(?) IS NOT NULL", (name,)).fetchone()[0]


def _rows(db: Path, device: bytes) -> list[tuple]:
    con = _connect(db)
    try:
        has_chain = _has_table(con, "batch_leaves")
        if has_chain:
            sql = (
                "SELECT r.id, r.seq, r.digest, r.envelope, r.time, r.flags, b.status "
                "FROM readings r LEFT JOIN batch_leaves l ON l.reading_id = r.id "
                "LEFT JOIN batches b ON b.id = l.batch_id WHERE r.device = ? ORDER BY r.id"
            )
        else:
            sql = (
                "SELECT id, seq, digest, envelope, time, flags, NULL FROM readings "
                "WHERE device = ? ORDER BY id"
            )
        return con.execute(sql, (device,)).fetchall()
    finally:
        con.close()


def wait_anchored(db: Path, boards, timeout: float) -> None:
    """Until every stored reading of these boards is in an anchored batch (or timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = 0
        for b in boards:
            pending += sum(1 for r in _rows(db, bytes.fromhex(b.address)) if r[6] not in ANCHORED)
        if not pending:
            return
        time.sleep(0.25)


def check(result: Result, boards, db: Path, gateway_status: dict | None = None) -> Result:
    """Fill `result` from the boards' consoles and the gateway's database."""
    result.boards = len(boards)
    for b in boards:
        who = f"{result.scenario}/{result.target} board {b.name} ({b.address[:10]}…)"
        device, pub = bytes.fromhex(b.address), bytes.fromhex(b.pubkey)
        signed = b.signed()
        reused = sorted({s for s in signed if signed.count(s) > 1})
        if reused:
            result.duplicates += len(reused)
            result.problems.append(f"{who}: seq signed twice: {seq_ranges(reused)}")
        backwards = [(a, c) for a, c in itertools.pairwise(signed) if c <= a]
        if backwards:
            result.problems.append(f"{who}: seq went backwards: {backwards[:5]}")
        rows = _rows(db, device)
        stored: dict[int, int] = {}
        for _id, seq, stored_digest, envelope, _t, _flags, status in rows:
            stored[seq] = stored.get(seq, 0) + 1
            why = _verify(bytes(envelope), device, seq, bytes(stored_digest), pub)
            if why:
                result.problems.append(f"{who}: stored seq {seq}: {why}")
            if status not in ANCHORED:
                result.unanchored += 1
        twice = sorted(s for s, n in stored.items() if n > 1)
        if twice:
            result.duplicates += len(twice)
            result.problems.append(f"{who}: stored twice: {seq_ranges(twice)}")
        not_anchored = sorted(r[1] for r in rows if r[6] not in ANCHORED)
        if not_anchored:
            result.problems.append(f"{who}: stored but not anchored: {seq_ranges(not_anchored)}")
        # A power cut between the outbox write and the console line leaves a
        # signed reading the console never named: it counts as sent.
        sent = set(signed) | set(stored)
        lost = sorted(set(signed) - set(stored))
        result.sent += len(sent)
        result.stored += len(stored)
        stats = _last_stats(b)
        dropped = stats.get("dropped", 0) if stats else 0
        result.board_dropped += dropped
        # The lost seqs are the policy's drops when the board counted them (and at
        # most the stored readings it held at a boot besides) and they are the oldest.
        carried = carried_stored(b.console(), stored, dropped)
        explained = len(lost) <= dropped <= len(lost) + carried
        later = [s for s in stored if lost and lost[0] < s < lost[-1]]
        if lost and explained and not later:
            result.dropped += len(lost)
        elif lost:
            result.lost += len(lost)
            if explained:
                why = (
                    f"the outbox-full policy dropped {seq_ranges(lost)}, not the oldest"
                    f" (stored in between: {seq_ranges(later)})"
                )
            else:
                why = f"signed but never stored: {seq_ranges(lost)}"
                if dropped:
                    why += (
                        f" (board dropped {dropped} by policy, of which at most {carried}"
                        " readings stored before a boot)"
                    )
            result.problems.append(f"{who}: {why}")
        elif dropped > carried:
            result.problems.append(
                f"{who}: the board counted {dropped} dropped by policy, but no signed reading"
                f" is missing and at most {carried} stored ones were in its outbox at a boot"
            )
        if stats is None:
            result.problems.append(f"{who}: no final TP-STATS (did it drain and exit?)")
        elif stats["pending"] or stats["corrupt"]:
            result.problems.append(
                f"{who}: outbox at the end: {stats['pending']} pending, {stats['corrupt']} corrupt"
            )
        if b.exit_codes and b.exit_codes[-1] != 0:
            result.problems.append(f"{who}: last boot exited with {b.exit_codes[-1]}")
    if gateway_status is not None:
        counts = gateway_status.get("counts", {})
        result.redelivered = counts.get("duplicate", 0)
        equiv = counts.get("rejected", {}).get("EQUIVOCATION", 0)
        if equiv:
            result.duplicates += equiv
            result.problems.append(f"gateway counted {equiv} EQUIVOCATION rejections")
    return result


def carried_stored(console: str, stored, dropped: int) -> int:
    """At most how many readings the gateway had stored can be in the board's final
    `dropped` count (acks are not kept across a boot): only entries a boot held from
    before it, and only in a boot that dropped. A boot reporting `P pending, D dropped
    so far; next seq N` held at most P of the stored seqs below N, and dropped what
    the next boot's D (or the final count) adds to its D."""
    reports = [tuple(map(int, r)) for r in BOOT_REPORT.findall(console)]
    held = 0
    for k, (pending, so_far, next_seq) in enumerate(reports):
        after = reports[k + 1][1] if k + 1 < len(reports) else dropped
        below = sum(1 for s in stored if s < next_seq)
        held += max(0, min(pending, below, after - so_far))
    return held


def _last_stats(board) -> dict | None:
    try:
        return board.stats()
    except AssertionError:
        return None


def stored_seqs(db: Path, board) -> list[int]:
    """The seqs the gateway stored from this board, in the order it stored them."""
    return [r[1] for r in _rows(db, bytes.fromhex(board.address))]


def unsynced_times(db: Path, board) -> tuple[list[int], list[int]]:
    """(seqs stored with time 0 and the TIME_UNSYNCED flag, seqs with a real time)."""
    zero, real = [], []
    for _id, seq, _d, _e, t, flags, _s in _rows(db, bytes.fromhex(board.address)):
        if t == 0 and flags & Flag.TIME_UNSYNCED:
            zero.append(seq)
        elif t > 1_600_000_000:
            real.append(seq)
    return zero, real


def batch_problems(db: Path | str, anchor: Any = None, gateway: str | None = None) -> list[str]:
    """The ledger after a hand-over: batch ids 0..n-1 with no gap, each reading in at
    most one batch and every batch's readings a contiguous id range after the last
    one's, one mined anchoring transaction per anchored batch, and (given the anchor
    contract and the gateway address) each anchored root on chain and nothing beyond."""
    con = _connect(db)
    problems: list[str] = []
    try:
        if not _has_table(con, "batches"):
            return []
        rows = con.execute(
            "SELECT id, root, count, first_reading, last_reading, status FROM batches ORDER BY id"
        ).fetchall()
        ids = [r[0] for r in rows]
        if ids != list(range(len(ids))):
            problems.append(f"batch ids not contiguous from 0: {seq_ranges(ids)}")
        last = 0
        for bid, _root, count, first, end, _status in rows:
            inside = con.execute(
                "SELECT COUNT(*), MIN(reading_id), MAX(reading_id) FROM batch_leaves"
                " WHERE batch_id = ?",
                (bid,),
            ).fetchone()
            if tuple(inside) != (count, first, end) or first <= last:
                problems.append(
                    f"batch {bid}: leaves {tuple(inside)} vs (count, first, last)"
                    f" {(count, first, end)} after reading {last}"
                )
            last = end
        for bid, mined in con.execute(
            "SELECT batch_id, COUNT(*) FROM chain_txs WHERE status = 'mined' GROUP BY batch_id"
        ).fetchall():
            if mined != 1:
                problems.append(f"batch {bid}: {mined} mined anchoring transactions")
        if anchor is not None and gateway is not None:
            for bid, root, *_rest, status in rows:
                if status in ANCHORED and bytes(
                    anchor.functions.rootOf(gateway, bid).call()
                ) != bytes(root):
                    problems.append(f"batch {bid}: the contract holds another root")
            beyond = bytes(anchor.functions.rootOf(gateway, len(rows)).call())
            if beyond != bytes(32):
                problems.append(f"batch {len(rows)} is anchored on chain but not in the database")
    finally:
        con.close()
    return problems
