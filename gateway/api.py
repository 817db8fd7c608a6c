"""Status API on 127.0.0.1: /api/status (JSON) and /metrics (Prometheus text).

The server reads a snapshot from a callable; it never touches the database,
so a slow client cannot stall ingest.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
    metric("commits_total", "counter", "Store transactions committed.", [({}, c["commits"])])
    metric("acks_total", "counter", "ACK messages published to boards.", [({}, c["acks"])])
    metric("queue_depth", "gauge", "Readings waiting for verification.", [({}, s["queue_depth"])])
    metric("store_bytes", "gauge", "Size of the SQLite file and WAL.", [({}, s["store_bytes"])])
    metric("boards_seen", "gauge", "Boards seen since start.", [({}, len(s["boards"]))])
    metric("broker_connected", "gauge", "1 when connected.", [({}, int(s["connected"]))])
    return "\n".join(out) + "\n"


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
        else:
            self.send_error(404, "try /api/status or /metrics")
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        log.debug("api %s", format % args)


class Api:
    def __init__(self, host: str, port: int, snapshot):
        self.httpd = ThreadingHTTPServer((host, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.snapshot = snapshot  # type: ignore[attr-defined]
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
