"""Read-only SQL behind the JSON API and the dashboard (gateway/api.py).

Every function takes a connection opened read-only (`connect`) and returns plain
JSON-ready dicts whose field names are the documented API (docs/GATEWAY.md, "HTTP
API"). The chain and rewards tables may be missing (a gateway without those
stages): then the answer says "stored" / empty instead of failing.

Cost at 100 boards and 1,000,000 readings (`terrapin bench dashboard`): every query
walks an index (readings' UNIQUE(device, seq), batches' and batch_leaves' primary
keys); none scans the readings table, and the per-board counts are kept
incrementally (ReadingCounts).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from terrapin.gateway.boardstatus import last_known
from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.metrics import anchor_state
from terrapin.gateway.protocol.envelope import decode_envelope, decode_payload
from terrapin.gateway.protocol.errors import ProtocolError
from terrapin.gateway.protocol.reasons import Reason, flag_names
from terrapin.gateway.rewards import units

MAX_LIMIT = 1000  # readings or batches in one page
DEFAULT_LIMIT = 100
TOKEN_DECIMALS = units.DECIMALS  # the reward token (an ERC-20 with the default 18)
ANCHORED = ("anchored", "confirmed")


class NotFound(TerrapinError, LookupError):
    """What the request names is not there: `code` is the API's error field."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def connect(db_path: str | Path) -> sqlite3.Connection:
    """A read-only connection to the gateway database (WAL: never blocks the writer)."""
    if not Path(db_path).exists():
        raise NotFound("no_database", f"no gateway database at {db_path}")
    conn = sqlite3.connect(f"file:{Path(db_path)}?mode=ro", uri=True, timeout=10)
    conn.execute("PRAGMA query_only=1")
    return conn


def tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def parse_address(text: str) -> bytes:
    """A board address from 40 hex characters, with or without 0x; NotFound otherwise."""
    t = text.lower().removeprefix("0x")
    if len(t) != 40 or any(c not in "0123456789abcdef" for c in t):
        raise NotFound("bad_address", f"{text[:60]!r} is not a board address (40 hex characters)")
    return bytes.fromhex(t)


def parse_int(text: str | None, name: str, default: int | None = None) -> int | None:
    if text is None or text == "":
        return default
    if not text.isdigit() or len(text) > 19:
        raise NotFound(f"bad_{name}", f"{name} must be a non-negative integer, not {text[:40]!r}")
    return int(text)


def hex0(data: bytes | None) -> str | None:
    return None if data is None else "0x" + bytes(data).hex()


def records(envelope: bytes) -> list[dict[str, Any]]:
    """The decoded SenML records of a stored envelope: name, unit, value."""
    try:
        reading = decode_payload(decode_envelope(bytes(envelope)).payload)
    except ProtocolError:  # stored envelopes were checked; an old format shows as empty
        return []
    return [{"name": n, "unit": u, "value": v} for n, u, v in reading.records]


# -- boards -----------------------------------------------------------------------------


def _owners(conn: sqlite3.Connection, names: set[str]) -> dict[bytes, bytes]:
    """Board -> owner as bound now (latest BoardBound event the rewards stage cached)."""
    if "rewards_bindings" not in names:
        return {}
    owners: dict[bytes, bytes] = {}
    rows = conn.execute(
        "SELECT board, owner FROM rewards_bindings ORDER BY block_number, log_index"
    )
    for board, owner in rows:
        owners[bytes(board)] = bytes(owner)
    return {b: o for b, o in owners.items() if any(o)}


def _rejections(conn: sqlite3.Connection) -> dict[bytes, dict[str, int]]:
    out: dict[bytes, dict[str, int]] = {}
    for device, reason, count in conn.execute("SELECT device, reason, count FROM rejection_counts"):
        try:
            name = Reason(reason).name
        except ValueError:
            name = str(reason)
        out.setdefault(bytes(device or b""), {})[name] = count
    return out


class ReadingCounts:
    """Readings stored per board, kept up to date from the rows added since the last call.

    Counting 1,000,000 index entries on every /api/boards costs ~200 ms; readings are
    never deleted and `readings.id` only grows, so after the first call only the new
    rows are counted (a rowid range). Thread-safe: one per API server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_id = 0
        self._counts: dict[bytes, int] = {}

    def get(self, conn: sqlite3.Connection) -> dict[bytes, int]:
        with self._lock:
            top = conn.execute("SELECT COALESCE(MAX(id), 0) FROM readings").fetchone()[0]
            if top < self._last_id:  # another database file under the same path: recount
                self._last_id, self._counts = 0, {}
            if top > self._last_id:
                for device, n in conn.execute(
                    "SELECT device, COUNT(*) FROM readings WHERE id > ? AND id <= ?"
                    " GROUP BY device",
                    (self._last_id, top),
                ):
                    key = bytes(device)
                    self._counts[key] = self._counts.get(key, 0) + n
                self._last_id = top
            return dict(self._counts)


def _board_row(
    conn: sqlite3.Connection,
    address: bytes,
    label: str,
    equivocations: int,
    counts: dict[bytes, int] | None = None,
) -> dict[str, Any]:
    """The stored part of one board: a walk of the (device, seq) index."""
    if counts is None:
        count = conn.execute(
            "SELECT COUNT(*) FROM readings WHERE device = ?", (address,)
        ).fetchone()[0]
    else:
        count = counts.get(address, 0)
    last = conn.execute(
        "SELECT seq, time, received_at, flags, envelope FROM readings WHERE device = ?"
        " ORDER BY seq DESC LIMIT 1",
        (address,),
    ).fetchone()
    return {
        "address": hex0(address),
        "label": label,
        "readings": count,
        "highest_seq": None if last is None else last[0],
        "last_reading_at": None if last is None else last[2],
        "latest": None
        if last is None
        else {"seq": last[0], "time": last[1], "records": records(last[4])},
        "flags": [] if last is None else flag_names(last[3]),
        "equivocations": equivocations,
    }


def _with_status(board: dict[str, Any], status: dict[str, Any] | None) -> dict[str, Any]:
    """Merge the retained status message (the ingest keeps the last one per board).
    An offline board's firmware, heap and outbox are the last it reported
    (gateway/boardstatus.py), with `values_at` saying when."""
    status = status or {}
    state = status.get("state")
    seen = [t for t in (board["last_reading_at"], status.get("received_at")) if t is not None]
    values = last_known(status) or {}
    return board | {
        "online": None if state is None else state == "online",
        "state": state,
        "last_seen": max(seen) if seen else None,
        "firmware": values.get("fw"),
        "heap_free": values.get("heap_free"),
        "outbox": values.get("outbox"),
        "status_at": status.get("received_at"),
        "values_at": values.get("received_at"),
    }


def boards(
    conn: sqlite3.Connection,
    statuses: dict[str, dict[str, Any]] | None = None,
    counts: ReadingCounts | None = None,
) -> list[dict[str, Any]]:
    """Every allow-listed board, labelled ones first, by label then address.

    `statuses`: hex address (no 0x) -> the board's last status message (/api/status's
    board_status). `counts`: the server's ReadingCounts (else counted now)."""
    statuses = statuses or {}
    per_board = (counts or ReadingCounts()).get(conn)
    names = tables(conn)
    known = {
        bytes(a): (label, eq)
        for a, label, eq in conn.execute("SELECT address, label, equivocations FROM devices")
    }
    owners = _owners(conn, names)
    rejected = _rejections(conn)
    out = []
    for address, (label, eq) in known.items():
        row = _board_row(conn, address, label, eq, per_board)
        row["owner"] = hex0(owners.get(address))
        row["rejections"] = rejected.get(address, {})
        out.append(_with_status(row, statuses.get(address.hex())))
    out.sort(key=lambda b: (b["label"] == "", b["label"], b["address"]))
    return out


def board(
    conn: sqlite3.Connection, address: bytes, status: dict[str, Any] | None = None
) -> dict[str, Any]:
    names = tables(conn)
    dev = conn.execute(
        "SELECT label, equivocations, pubkey, added_at FROM devices WHERE address = ?", (address,)
    ).fetchone()
    label, eq, pubkey, added_at = dev if dev else ("", 0, None, None)
    row = _board_row(conn, address, label, eq)
    if dev is None and row["readings"] == 0:
        raise NotFound("unknown_board", f"board {hex0(address)} is not known to this gateway")
    row["owner"] = hex0(_owners(conn, names).get(address))
    row["rejections"] = _rejections(conn).get(address, {})
    row["allowed"] = dev is not None
    row["pubkey"] = hex0(pubkey)
    row["added_at"] = added_at
    return _with_status(row, status)


# -- readings ---------------------------------------------------------------------------

_READING = (
    "SELECT r.seq, r.time, r.received_at, r.flags, r.envelope, r.digest, {batch} "
    "FROM readings r {join} WHERE r.device = ? "
)
_BATCH_COLS = "l.batch_id, b.status, b.tx_hash, b.block_number, b.root"
_BATCH_JOIN = (
    "LEFT JOIN batch_leaves l ON l.reading_id = r.id LEFT JOIN batches b ON b.id = l.batch_id"
)


def _select(conn: sqlite3.Connection) -> str:
    if {"batch_leaves", "batches"} <= tables(conn):
        return _READING.format(batch=_BATCH_COLS, join=_BATCH_JOIN)
    return _READING.format(batch="NULL, NULL, NULL, NULL, NULL", join="")


def _reading(row: tuple, explorer: str = "", detail: bool = False) -> dict[str, Any]:
    seq, t, received_at, flags, envelope, digest, batch_id, status, tx, block, root = row
    if batch_id is None:
        state = "stored"
    elif status in ANCHORED:
        state = "anchored"
    else:
        state = "batched"
    out: dict[str, Any] = {
        "seq": seq,
        "time": t,
        "received_at": received_at,
        "records": records(envelope),
        "state": state,
        "flags": flag_names(flags),
        "flagged": flags != 0,
        "batch": batch_id,
        "batch_status": status,
        "tx": hex0(tx),
        "block": block,
        "explorer": explorer.replace("{tx}", hex0(tx) or "") if explorer and tx else None,
    }
    if detail:
        out["digest"] = hex0(digest)
        out["root"] = hex0(root)
        out["envelope"] = bytes(envelope).hex()
    return out


def readings(
    conn: sqlite3.Connection,
    address: bytes,
    *,
    since: int | None = None,
    before: int | None = None,
    limit: int = DEFAULT_LIMIT,
    explorer: str = "",
) -> dict[str, Any]:
    """One page of a board's readings, oldest first.

    since=S: the first `limit` readings with seq > S (follow `next_since` to page on);
    before=B: the last `limit` readings with seq < B; neither: the latest `limit`."""
    limit = max(1, min(limit, MAX_LIMIT))
    query = _select(conn)
    if since is not None:
        rows = conn.execute(
            query + "AND r.seq > ? ORDER BY r.seq LIMIT ?", (address, since, limit + 1)
        ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
    else:
        top = before if before is not None else 2**63 - 1
        rows = conn.execute(
            query + "AND r.seq < ? ORDER BY r.seq DESC LIMIT ?", (address, top, limit + 1)
        ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit][::-1]
    page = [_reading(r, explorer) for r in rows]
    return {
        "board": hex0(address),
        "limit": limit,
        "readings": page,
        "more": more,  # since: newer ones follow; else: older ones precede
        "next_since": page[-1]["seq"] if page else since,
        "next_before": page[0]["seq"] if page else before,
    }


def reading(
    conn: sqlite3.Connection, address: bytes, seq: int, explorer: str = ""
) -> dict[str, Any]:
    row = conn.execute(_select(conn) + "AND r.seq = ?", (address, seq)).fetchone()
    if row is None:
        raise NotFound("unknown_reading", f"reading {hex0(address)} #{seq} is not stored")
    return {"board": hex0(address)} | _reading(row, explorer, detail=True)


# -- batches and anchoring health --------------------------------------------------------


def batches(
    conn: sqlite3.Connection,
    *,
    before: int | None = None,
    limit: int = DEFAULT_LIMIT,
    head: int | None = None,
    explorer: str = "",
) -> list[dict[str, Any]]:
    """Newest batch first. `head`: the chain's current block, for confirmations."""
    if "batches" not in tables(conn):
        return []
    limit = max(1, min(limit, MAX_LIMIT))
    top = before if before is not None else 2**63 - 1
    rows = conn.execute(
        "SELECT id, count, root, tx_hash, block_number, status, created_at, anchored_at"
        " FROM batches WHERE id < ? ORDER BY id DESC LIMIT ?",
        (top, limit),
    ).fetchall()
    out = []
    for bid, count, root, tx, block, status, created, anchored in rows:
        confirmations = None
        if block is not None and head is not None:
            confirmations = max(0, head - block + 1)
        elif block is None:
            confirmations = 0
        out.append(
            {
                "id": bid,
                "size": count,
                "root": hex0(root),
                "tx": hex0(tx),
                "block": block,
                "confirmations": confirmations,
                "state": status,
                "created_at": created,
                "anchored_at": anchored,
                "explorer": explorer.replace("{tx}", hex0(tx) or "") if explorer and tx else None,
            }
        )
    return out


def anchoring(conn: sqlite3.Connection, now: float) -> dict[str, Any]:
    """Pending readings (not in an anchored batch), the age of the oldest, batch counts:
    the figures /metrics and `terrapin gateway status` show (metrics.anchor_state), so
    the dashboard never disagrees with them."""
    state = anchor_state(conn)
    if state is None:  # no batcher has run yet: every stored reading is waiting
        total, oldest = conn.execute("SELECT COUNT(*), MIN(received_at) FROM readings").fetchone()
        return {"pending_readings": total, "waiting_readings": total, "batches": {}} | _age(
            oldest, now
        )
    return {
        "pending_readings": state["pending_readings"],
        "waiting_readings": state["waiting"],
        "batches": {k: n for k, n in state["batches"].items() if n},
    } | _age(state["oldest_unanchored_at"], now)


def _age(oldest: float | None, now: float) -> dict[str, Any]:
    return {
        "oldest_unanchored_at": oldest,
        "oldest_unanchored_age_s": None if oldest is None else round(max(0.0, now - oldest), 1),
    }


# -- rewards ----------------------------------------------------------------------------


def tokens(base_units: str | int, decimals: int = TOKEN_DECIMALS) -> str:
    """A base-unit amount as token units, exact: "1500000000000000000" -> "1.5"."""
    return units.tokens(base_units, decimals, grouping=False)


def epochs(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every computed reward epoch, newest first."""
    if "rewards_epochs" not in tables(conn):
        return []
    rows = conn.execute(
        "SELECT epoch, root, total, computed_at, publish_tx, published_at FROM rewards_epochs"
        " ORDER BY epoch DESC"
    ).fetchall()
    return [
        {
            "epoch": e,
            "root": hex0(root),
            "total": total,
            "total_tokens": tokens(total),
            "computed_at": computed,
            "published": tx is not None,
            "publish_tx": hex0(tx),
            "published_at": published,
        }
        for e, root, total, computed, tx, published in rows
    ]


def rewards_in_tokens(view: dict[str, Any], epoch_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The /api/rewards overview with each owner's earned (and claimed) in token units."""
    # Beside "owners" (whose entries keep the base-unit fields /api/rewards always had).
    view["owner_tokens"] = {
        owner: {
            "earned": tokens(entry.get("cumulative", "0")),
            "claimed": tokens(entry["claimed"]) if "claimed" in entry else None,
            "claimable": tokens(entry["claimable"]) if "claimable" in entry else None,
        }
        for owner, entry in view.get("owners", {}).items()
    }
    view["total_tokens"] = tokens(view.get("total", "0"))
    view["decimals"] = TOKEN_DECIMALS
    view["epochs"] = epoch_rows
    return view
