"""/metrics: what an operator alerts on, in Prometheus text format (prometheus-client).

Two sources, read once per scrape:
- the status snapshot (gateway/stats.py + server.snapshot): counters since start,
  each board's retained status message, each chain stage's status and last error;
- the gateway's database, read-only (SQLite WAL: a reader never blocks the writer),
  for what must survive a restart: the known boards and when each last sent a
  reading, rejections per board, and the anchoring state (batches, pending readings,
  failed transactions), the rewards epochs published.

Label cardinality is bounded: `board` takes only allow-listed boards (the devices
table), `reason` the fixed reason table, `state`/`kind`/`stage` fixed lists. Every
metric, its labels and meaning are listed in docs/GATEWAY.md ("Metrics").
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from terrapin.gateway.protocol.reasons import reason_name

log = logging.getLogger("terrapin.gateway.metrics")

# generate_latest() writes text format 0.0.4; say so (Prometheus 2.x parses it).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The chain stages as /api/status names them (their class) -> the name in [pipeline] stages.
STAGE_NAMES = {"Batcher": "batch", "Anchorer": "anchor", "RewardsStage": "rewards"}
BATCH_STATES = ("pending", "sent", "anchored", "confirmed")
# chain_txs states that count as a failed anchoring attempt, and the `kind` label they get.
TX_FAILURES = {"failed": "reverted", "abandoned": "abandoned", "reorged": "reorged"}
MAX_ERROR_LABEL = 160  # an error message as a label: its first line, bounded
_RETRY_NOTE = re.compile(r"\s*\([^()]*\)\s*$")  # "(attempt 3, retrying ...)": changes each try


def render(snapshot: dict[str, Any], db_path: str | Path | None = None) -> bytes:
    """The exposition for one scrape: the snapshot's figures plus the database's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot, db_path))
    return generate_latest(registry)


class _Collector:
    def __init__(self, snapshot: dict[str, Any], db_path: str | Path | None):
        self.snapshot = snapshot
        self.db_path = db_path

    def collect(self) -> Iterator[Metric]:
        yield from gateway_metrics(self.snapshot)
        yield from stage_metrics(self.snapshot)
        db = _open(self.db_path)
        yield _gauge("store_readable", "1 when /metrics could read the database.", db is not None)
        if db is None:
            return
        try:
            yield from board_metrics(db, self.snapshot, time.time())
            yield from anchor_metrics(db, time.time())
            yield from rewards_metrics(db, self.snapshot)
        finally:
            db.close()


def _gauge(name: str, help_: str, value: float, prefix: str = "terrapin_gateway_") -> Metric:
    g = GaugeMetricFamily(prefix + name, help_)
    g.add_metric([], float(value))
    return g


def _counter(name: str, help_: str, value: float) -> Metric:
    c = CounterMetricFamily("terrapin_gateway_" + name, help_)
    c.add_metric([], float(value))
    return c


def gateway_metrics(s: dict[str, Any]) -> Iterator[Metric]:
    """The ingest counters since start (the names the hand-written exposition had)."""
    c = s["counts"]
    yield _gauge("uptime_seconds", "Seconds since the gateway started.", s["uptime_s"])
    yield _counter("received", "Reading envelopes received.", c["received"])
    yield _counter("stored", "Readings stored.", c["stored"])
    yield _counter("duplicates", "Duplicate readings acked again.", c["duplicate"])
    rejected = CounterMetricFamily(
        "terrapin_gateway_rejected", "Rejected envelopes by reason.", labels=["reason"]
    )
    for name, n in sorted(c["rejected"].items()):
        rejected.add_metric([name], float(n))
    yield rejected
    yield _counter(
        "dropped_early",
        "Readings dropped before decode: board over its admission rate and share.",
        c.get("dropped_early", 0),
    )
    q = s.get("quarantine") or {}  # the broker quarantine (gateway/quarantine.py)
    yield _counter(
        "quarantined", "Boards quarantined at the broker (flooding).", q.get("quarantined_total", 0)
    )
    yield _gauge("quarantined_boards", "Boards quarantined now.", len(q.get("active", {})))
    yield _counter("commits", "Store transactions committed.", c["commits"])
    yield _counter("acks", "ACK messages published to boards.", c["acks"])
    yield _gauge("queue_depth", "Readings waiting for verification.", s.get("queue_depth", 0))
    yield _gauge("store_bytes", "Size of the SQLite file and WAL.", s.get("store_bytes", 0))
    yield _gauge("boards_seen", "Boards that stored a reading since start.", len(s["boards"]))
    yield _gauge("broker_connected", "1 when connected.", bool(s.get("connected")))


def error_label(text: str) -> str:
    """A stage error as a stable label value: first line, no retry counter, bounded."""
    first = text.strip().splitlines()[0] if text.strip() else "error"
    return _RETRY_NOTE.sub("", first)[:MAX_ERROR_LABEL]


def stage_metrics(s: dict[str, Any]) -> Iterator[Metric]:
    """Each running chain stage, and its last error as a state an alert can see."""
    up = GaugeMetricFamily(
        "terrapin_stage_running", "1 for each chain stage this gateway runs.", labels=["stage"]
    )
    failing = GaugeMetricFamily(
        "terrapin_stage_error",
        "1 while the stage's last step failed (it retries; see terrapin_stage_error_info).",
        labels=["stage"],
    )
    info = GaugeMetricFamily(
        "terrapin_stage_error_info",
        "The failing stage's last error (first line) as a label; absent when healthy.",
        labels=["stage", "error"],
    )
    for cls, status in sorted((s.get("stages") or {}).items()):
        stage = STAGE_NAMES.get(cls, cls.lower())
        up.add_metric([stage], 1.0)
        error = status.get("error") if isinstance(status, dict) else None
        failing.add_metric([stage], 1.0 if error else 0.0)
        if error:
            info.add_metric([stage, error_label(str(error))], 1.0)
    yield up
    yield failing
    yield info


def _open(db_path: str | Path | None) -> sqlite3.Connection | None:
    if db_path is None or not Path(db_path).exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{Path(db_path)}?mode=ro", uri=True, timeout=2.0)
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1")
        return conn
    except sqlite3.Error as exc:
        log.warning("metrics: cannot read %s: %s", db_path, exc)
        return None


def _tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def board_metrics(db: sqlite3.Connection, s: dict[str, Any], now: float) -> Iterator[Metric]:
    """Per allow-listed board: last reading, readings since start, status, rejections."""
    devices = db.execute("SELECT address, label FROM devices ORDER BY address").fetchall()
    info = GaugeMetricFamily(
        "terrapin_board_info", "Each allow-listed board (its label).", labels=["board", "label"]
    )
    age = GaugeMetricFamily(
        "terrapin_board_last_seen_age_seconds",
        "Seconds since the board's latest stored reading was received (absent: never).",
        labels=["board"],
    )
    last = GaugeMetricFamily(
        "terrapin_board_last_seen_timestamp_seconds",
        "Unix time the board's latest stored reading was received.",
        labels=["board"],
    )
    readings = CounterMetricFamily(
        "terrapin_board_readings", "Readings of this board stored since start.", labels=["board"]
    )
    online = GaugeMetricFamily(
        "terrapin_board_online",
        "1 when the board's retained status says online, 0 offline (absent: no status yet).",
        labels=["board"],
    )
    outbox = GaugeMetricFamily(
        "terrapin_board_outbox",
        "Readings waiting in the board's outbox (its last status message).",
        labels=["board"],
    )
    stats = s.get("boards") or {}
    statuses = s.get("board_status") or {}
    known = set()
    for address, label in devices:
        board = bytes(address).hex()
        known.add(bytes(address))
        info.add_metric([board, label or ""], 1.0)
        row = db.execute(
            "SELECT received_at FROM readings WHERE device = ? ORDER BY seq DESC LIMIT 1",
            (bytes(address),),
        ).fetchone()
        # The database survives a restart; the snapshot may be a moment newer.
        times = (row[0] if row else None, stats.get(board, {}).get("last_received_at"))
        seen = max((t for t in times if t), default=None)
        if seen is not None:
            age.add_metric([board], max(0.0, now - seen))
            last.add_metric([board], seen)
        readings.add_metric([board], float(stats.get(board, {}).get("stored", 0)))
        st = statuses.get(board)
        if st and st.get("state") in ("online", "offline"):
            online.add_metric([board], 1.0 if st["state"] == "online" else 0.0)
        if st and isinstance(st.get("outbox"), int | float) and not isinstance(st["outbox"], bool):
            outbox.add_metric([board], float(st["outbox"]))
    yield from (info, age, last, readings, online, outbox)
    rejections = CounterMetricFamily(
        "terrapin_board_rejections",
        "Envelopes of this board rejected, by reason (all time, from the database).",
        labels=["board", "reason"],
    )
    if "rejection_counts" in _tables(db):
        for device, reason, count in db.execute(
            "SELECT device, reason, count FROM rejection_counts ORDER BY device, reason"
        ):
            if device is not None and bytes(device) in known:
                rejections.add_metric([bytes(device).hex(), reason_name(reason)], float(count))
    yield rejections


def anchor_state(db: sqlite3.Connection) -> dict[str, Any] | None:
    """Anchoring from the chain tables (None until a batcher or anchorer made them):
    batches by state, readings not yet anchored and when the oldest arrived, the
    newest anchored batch, failed transactions by kind. Also `terrapin gateway status`."""
    tables = _tables(db)
    if "batches" not in tables:
        return None
    by_state = dict(db.execute("SELECT status, COUNT(*) FROM batches GROUP BY status").fetchall())
    last_batched = db.execute("SELECT COALESCE(MAX(last_reading), 0) FROM batches").fetchone()[0]
    waiting = db.execute("SELECT COUNT(*) FROM readings WHERE id > ?", (last_batched,)).fetchone()
    in_flight, first = db.execute(
        "SELECT COALESCE(SUM(count), 0), MIN(first_reading) FROM batches "
        "WHERE status IN ('pending', 'sent')"
    ).fetchone()
    oldest_id = first if first is not None else (last_batched + 1 if waiting[0] else None)
    oldest = None
    if oldest_id is not None:
        row = db.execute(
            "SELECT received_at FROM readings WHERE id >= ? ORDER BY id LIMIT 1", (oldest_id,)
        ).fetchone()
        oldest = row[0] if row else None
    last = db.execute(
        "SELECT id, block_number, anchored_at FROM batches "
        "WHERE status IN ('anchored', 'confirmed') ORDER BY id DESC LIMIT 1"
    ).fetchone()
    block = db.execute(
        "SELECT MAX(block_number) FROM batches WHERE status IN ('anchored', 'confirmed')"
    ).fetchone()[0]
    counts: dict[str, int] = {}
    if "chain_txs" in tables:
        counts = dict(
            db.execute("SELECT status, COUNT(*) FROM chain_txs GROUP BY status").fetchall()
        )
    return {
        "batches": {state: int(by_state.get(state, 0)) for state in BATCH_STATES},
        "waiting": int(waiting[0]),
        "pending_readings": int(waiting[0] + in_flight),
        "oldest_unanchored_at": oldest,
        "last_block": block,
        "last_batch": None if last is None else last[0],
        "last_batch_block": None if last is None else last[1],
        "last_anchored_at": None if last is None else last[2],
        "failures": {kind: int(counts.get(st, 0)) for st, kind in TX_FAILURES.items()},
    }


def published_epoch(db: sqlite3.Connection) -> int | None:
    """The newest reward epoch whose root was published on chain (None: none yet)."""
    if "rewards_epochs" not in _tables(db):
        return None
    return db.execute(
        "SELECT MAX(epoch) FROM rewards_epochs WHERE publish_tx IS NOT NULL"
    ).fetchone()[0]


def read_state(db_path: str | Path | None) -> dict[str, Any] | None:
    """{"anchoring": anchor_state, "published_epoch": ...} from the database, read-only;
    None when it cannot be read (another machine's gateway, no permission)."""
    db = _open(db_path)
    if db is None:
        return None
    try:
        return {"anchoring": anchor_state(db), "published_epoch": published_epoch(db)}
    except sqlite3.Error:
        return None
    finally:
        db.close()


def anchor_metrics(db: sqlite3.Connection, now: float) -> Iterator[Metric]:
    state = anchor_state(db)
    if state is None:
        return
    batches = GaugeMetricFamily(
        "terrapin_anchor_batches", "Closed batches by anchoring state.", labels=["state"]
    )
    for name, n in state["batches"].items():
        batches.add_metric([name], float(n))
    yield batches
    yield _gauge(
        "pending_readings",
        "Stored readings not yet in an anchored batch (waiting, or in a batch not mined).",
        state["pending_readings"],
        prefix="terrapin_anchor_",
    )
    oldest = state["oldest_unanchored_at"]
    yield _gauge(
        "oldest_unanchored_age_seconds",
        "Age of the oldest stored reading not yet anchored (0 when all are).",
        0.0 if oldest is None else max(0.0, now - oldest),
        prefix="terrapin_anchor_",
    )
    if state["last_block"] is not None:
        yield _gauge(
            "last_block",
            "Block of the newest anchored batch.",
            state["last_block"],
            "terrapin_anchor_",
        )
    if state["last_anchored_at"] is not None:
        yield _gauge(
            "last_anchored_timestamp_seconds",
            "Unix time the newest anchored batch was mined (as the gateway saw it).",
            state["last_anchored_at"],
            "terrapin_anchor_",
        )
    failures = CounterMetricFamily(
        "terrapin_anchor_failures",
        "Anchoring transactions that failed: reverted, abandoned (nonce taken or chain "
        "changed) or reorged out.",
        labels=["kind"],
    )
    for kind, n in state["failures"].items():
        failures.add_metric([kind], float(n))
    yield failures


def rewards_metrics(db: sqlite3.Connection, s: dict[str, Any]) -> Iterator[Metric]:
    """Reward epochs: the current one (from the running rewards stage) and the last
    published (from the database)."""
    stage = (s.get("stages") or {}).get("RewardsStage") or {}
    if isinstance(stage.get("current_epoch"), int):
        yield _gauge(
            "current_epoch", "The reward epoch now.", stage["current_epoch"], "terrapin_rewards_"
        )
    if isinstance(stage.get("last_settled_epoch"), int):
        yield _gauge(
            "last_settled_epoch",
            "The newest epoch the rewards stage settled.",
            stage["last_settled_epoch"],
            "terrapin_rewards_",
        )
    epoch = published_epoch(db)
    if epoch is not None:
        yield _gauge(
            "last_published_epoch",
            "The newest epoch whose distribution root was published on chain.",
            epoch,
            "terrapin_rewards_",
        )


def db_path_of(snapshot: Any) -> Path | None:
    """The database of the Gateway whose bound `snapshot` method the API serves."""
    cfg = getattr(getattr(snapshot, "__self__", None), "cfg", None)
    store = getattr(cfg, "store", None)
    return Path(store.path) if store is not None else None
