"""Status API on 127.0.0.1: /api/status (JSON), /metrics (Prometheus text), and the
rewards view /api/rewards and /api/rewards/<owner> (JSON).

/api/status and /metrics read a snapshot from a callable; they never touch the
database, so a slow client cannot stall ingest. The rewards view reads the rewards
tables with its own short-lived connection (SQLite WAL: readers never block the
writer) and, when the process holds a chain (the rewards stage), asks the
contract what each owner has claimed and can claim.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from terrapin.gateway.errors import TerrapinError

log = logging.getLogger("terrapin.gateway.api")


def prometheus(status: dict) -> str:
    """Render the counters of a status snapshot in Prometheus text format 0.0.4."""
    out: list[str] = []

    def metric(name, kind, help_, samples):
        out.append(f"# HELP terrapin_gateway_{name} {help_}")
        out.append(f"# TYPE terrapin_gateway_{name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{v}"' for k, v in labels.items())
            head = f"terrapin_gateway_{name}{{{lab}}}" if lab else f"terrapin_gateway_{name}"
            out.append(f"{head} {value}")

    c = status["counts"]
    s = status
    metric("uptime_seconds", "gauge", "Seconds since the gateway started.", [({}, s["uptime_s"])])
    metric("received_total", "counter", "Reading envelopes received.", [({}, c["received"])])
    metric("stored_total", "counter", "Readings stored.", [({}, c["stored"])])
    metric("duplicates_total", "counter", "Duplicate readings acked again.", [({}, c["duplicate"])])
    metric(
        "rejected_total",
        "counter",
        "Rejected envelopes by reason.",
        [({"reason": name}, n) for name, n in sorted(c["rejected"].items())],
    )
    metric(
        "dropped_early_total",
        "counter",
        "Readings dropped before decode: board over its admission rate and share.",
        [({}, c.get("dropped_early", 0))],
    )
    q = s.get("quarantine") or {}  # the broker quarantine (gateway/quarantine.py)
    metric(
        "quarantined_total",
        "counter",
        "Boards quarantined at the broker (flooding).",
        [({}, q.get("quarantined_total", 0))],
    )
    metric(
        "quarantined_boards", "gauge", "Boards quarantined now.", [({}, len(q.get("active", {})))]
    )
    metric("commits_total", "counter", "Store transactions committed.", [({}, c["commits"])])
    metric("acks_total", "counter", "ACK messages published to boards.", [({}, c["acks"])])
    metric("queue_depth", "gauge", "Readings waiting for verification.", [({}, s["queue_depth"])])
    metric("store_bytes", "gauge", "Size of the SQLite file and WAL.", [({}, s["store_bytes"])])
    metric("boards_seen", "gauge", "Boards seen since start.", [({}, len(s["boards"]))])
    metric("broker_connected", "gauge", "1 when connected.", [({}, int(s["connected"]))])
    return "\n".join(out) + "\n"


class RewardsUnavailable(TerrapinError, LookupError):
    """This gateway has no rewards data to show (no database, no rewards stage)."""


class UnknownOwner(TerrapinError, LookupError):
    """No board is bound to this owner and it has earned nothing."""


RewardsView = Callable[[str | None], dict[str, Any]]


def db_rewards_view(db_path: str | Path, chain_view: RewardsView | None = None) -> RewardsView:
    """view(owner=None) from the gateway database alone (rewards_store.overview/status).

    `chain_view` (the rewards stage's view: the same plus claimed/claimable from the
    contract) is used instead when given. Raises ValueError for a malformed owner
    address and UnknownOwner for an owner the rewards data does not know."""

    def view(owner: str | None = None) -> dict[str, Any]:
        from terrapin.gateway.rewards import tables as rewards_store
        from terrapin.gateway.rewards.rule import RewardsError, normalise_address

        if owner is not None:
            try:
                owner = normalise_address(owner)
            except RewardsError as exc:
                raise ValueError(str(exc)) from None
        if chain_view is not None:
            result = chain_view(owner)
        else:
            if not Path(db_path).exists():
                raise RewardsUnavailable(f"no database at {db_path}")
            conn = sqlite3.connect(f"file:{Path(db_path)}?mode=ro", uri=True, timeout=10)
            try:
                names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
                if "rewards_epochs" not in names:
                    raise RewardsUnavailable("no reward epoch computed yet")
                if owner is None:
                    result = rewards_store.overview(conn)
                else:
                    result = rewards_store.status(conn, owner)
            finally:
                conn.close()
            result["chain"] = False  # claimed/claimable need the rewards stage's chain
        if owner is not None and not rewards_store.known_owner(result):
            raise UnknownOwner(f"no board is bound to {owner} and it has earned nothing")
        return result

    return view


def gateway_rewards_view(gateway: Any) -> RewardsView | None:
    """The rewards view of a running Gateway: its rewards stage's (with the chain) if it
    has one, else the database's."""
    stage_view = next(
        (s.view for s in getattr(gateway, "stages", []) if callable(getattr(s, "view", None))),
        None,
    )
    cfg = getattr(gateway, "cfg", None)
    if cfg is None:
        return None
    return db_rewards_view(cfg.store.path, stage_view)


class _Handler(BaseHTTPRequestHandler):
    server_version = "terrapin-gateway"

    def do_GET(self):
        snapshot = self.server.snapshot  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        if path == "/api/status":
            body = json.dumps(snapshot(), sort_keys=True).encode()
            ctype = "application/json"
        elif path == "/metrics":
            body = prometheus(snapshot()).encode()
            ctype = "text/plain; version=0.0.4"
        elif path == "/api/rewards" or path.startswith("/api/rewards/"):
            owner = path.removeprefix("/api/rewards").strip("/") or None
            self._rewards(owner)
            return
        else:
            self.send_error(404, "try /api/status, /api/rewards or /metrics")
            return
        self._send(200, body, ctype)

    def _rewards(self, owner: str | None) -> None:
        view = self.server.rewards()  # type: ignore[attr-defined]
        try:
            if view is None:
                raise RewardsUnavailable("this gateway has no rewards data")
            code, obj = 200, view(owner)
        except ValueError as exc:
            code, obj = 400, {"error": "bad_address", "detail": str(exc)}
        except UnknownOwner as exc:
            code, obj = 404, {"error": "unknown_owner", "owner": owner, "detail": str(exc)}
        except RewardsUnavailable as exc:
            code, obj = 404, {"error": "no_rewards", "detail": str(exc)}
        except Exception as exc:  # a chain or database error: say so, keep serving
            log.warning("api: rewards view failed: %s", exc)
            code, obj = 503, {"error": "unavailable", "detail": f"{type(exc).__name__}: {exc}"}
        self._send(code, json.dumps(obj, sort_keys=True).encode(), "application/json")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        log.debug("api %s", format % args)


class Api:
    def __init__(self, host: str, port: int, snapshot, rewards: RewardsView | None = None):
        """`rewards` is the view behind /api/rewards; by default the one of the Gateway
        whose bound `snapshot` method is given (its rewards stage, else its database)."""
        self.httpd = ThreadingHTTPServer((host, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.snapshot = snapshot  # type: ignore[attr-defined]
        owner = getattr(snapshot, "__self__", None)
        self.httpd.rewards = (  # type: ignore[attr-defined]
            (lambda: rewards) if rewards is not None else (lambda: gateway_rewards_view(owner))
        )
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="api", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self.httpd.server_address[:2]  # type: ignore[return-value]

    def start(self) -> Api:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
