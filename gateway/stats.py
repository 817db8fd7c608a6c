"""Counters and per-board state for the status API (updated by the server thread)."""

from __future__ import annotations

import threading
import time
from collections import Counter

from terrapin.gateway.boardstatus import KeptStatus, with_last_known
from terrapin.gateway.protocol.reasons import Reason


class Stats:
    def __init__(self):
        self.started = time.time()
        self._lock = threading.Lock()
        self.received = 0
        self.stored = 0
        self.duplicate = 0
        self.commits = 0
        self.acks = 0
        self.rejected: Counter[str] = Counter({r.name: 0 for r in Reason})
        self.first_received_at: float | None = None
        self.last_commit_at: float | None = None
        self.boards: dict[str, dict] = {}
        self.board_status: dict[str, dict] = {}
        self.kept_status: KeptStatus | None = None  # the server's: kept across restarts

    def status(self, address: bytes, status: dict, now: float) -> None:
        with self._lock:
            key = address.hex()
            previous = self.board_status.get(key)
            self.board_status[key] = with_last_known(previous, status, now, self.kept_status, key)

    def apply(self, result, received: int, first_at: float) -> None:
        """Add one committed batch (a pipeline.BatchResult)."""
        with self._lock:
            self.received += received
            if self.first_received_at is None:
                self.first_received_at = first_at
            self.commits += 1
            self.acks += len(result.acks)
            self.last_commit_at = time.time()
            self.stored += result.stored
            self.duplicate += result.duplicate
            for name, n in result.rejected.items():
                self.rejected[name] += n
            for addr, (n, seq, t, flags, at) in result.boards.items():
                b = self.boards.setdefault(addr, {"stored": 0, "last_seq": -1})
                b["stored"] += n
                if seq >= b["last_seq"]:
                    b.update(last_seq=seq, last_time=t, last_flags=flags)
                b["last_received_at"] = round(at, 3)

    def snapshot(self) -> dict:
        now = time.time()
        with self._lock:
            return {
                "uptime_s": round(now - self.started, 3),
                "counts": {
                    "received": self.received,
                    "stored": self.stored,
                    "duplicate": self.duplicate,
                    "rejected": dict(self.rejected),
                    "rejected_total": sum(self.rejected.values()),
                    "commits": self.commits,
                    "acks": self.acks,
                },
                "first_received_at": self.first_received_at,
                "last_commit_at": self.last_commit_at,
                "boards": {k: dict(v) for k, v in self.boards.items()},
                "board_status": {k: dict(v) for k, v in self.board_status.items()},
            }
