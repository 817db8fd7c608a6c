"""Status API on 127.0.0.1: /api/status (JSON), /metrics (Prometheus text), and the
rewards view /api/rewards and /api/rewards/<owner> (JSON); the JSON API over the
database (/api/boards, /api/readings, /api/batches: gateway/queries.py) and the
dashboard pages (gateway/web/) on the same listener. Routes: the ROUTES table.
Beyond loopback it needs [api] token (bearer, or basic auth with the token as
password) and refuses to start without one.

/api/status reads a snapshot from a callable; /metrics (gateway/metrics.py) adds
read-only queries, like every database route here: SQLite WAL readers never block
the writer, so a slow client cannot stall ingest. The rewards view reads the rewards
tables with its own short-lived connection (SQLite WAL: readers never block the
writer) and, when the process holds a chain (the rewards stage), asks the
contract what each owner has claimed and can claim.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from terrapin.gateway import metrics, queries, web
from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.queries import NotFound
from terrapin.gateway.web.access import api_token, authorised, chain_head, check_access

log = logging.getLogger("terrapin.gateway.api")


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


# The routes, matched in order against the whole path: (pattern, handler method name).
# A JSON handler returns (HTTP code, object); a page handler sends its own response.
# To add a route, add a line here and a `get_<name>` method below.
ROUTES: list[tuple[str, str]] = [
    (r"/api/status", "status"),
    (r"/metrics", "metrics"),
    (r"/api/rewards/epochs", "reward_epochs"),
    (r"/api/rewards/epochs/(?P<epoch>[^/]+)/manifest", "epoch_manifest"),
    (r"/api/rewards(?:/(?P<owner>[^/]+))?", "rewards"),
    (r"/api/boards", "boards"),
    (r"/api/boards/(?P<addr>[^/]+)", "board"),
    (r"/api/boards/(?P<addr>[^/]+)/readings", "board_readings"),
    (r"/api/readings/(?P<addr>[^/]+)/(?P<seq>[^/]+)", "reading"),
    (r"/api/readings/(?P<addr>[^/]+)/(?P<seq>[^/]+)/proof", "proof"),
    (r"/api/batches", "batches"),
    (r"/(?:index\.html)?", "page_boards"),
    (r"/boards/(?P<addr>[^/]+)", "page_board"),
    (r"/batches", "page_batches"),
    (r"/rewards", "page_rewards"),
    (r"/static/(?P<name>(?:vendor/)?[^/]+)", "static"),
]
_COMPILED = [(re.compile(pattern), name) for pattern, name in ROUTES]
# Scripts and styles may be cached briefly (the chart library is 50 KB to parse);
# pages and data never are.
STATIC_MAX_AGE = 300


class _Handler(BaseHTTPRequestHandler):
    server_version = "terrapin-gateway"

    def do_GET(self):
        srv = self.server
        if srv.token and not authorised(self.headers.get("Authorization", ""), srv.token):  # type: ignore[attr-defined]
            body = json.dumps({"error": "unauthorised", "detail": "token required"}).encode()
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="terrapin gateway"')
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        for pattern, name in _COMPILED:
            match = pattern.fullmatch(url.path)
            if match is None:
                continue
            try:
                result = getattr(self, "get_" + name)(**match.groupdict())
            except NotFound as exc:
                result = 404, {"error": exc.code, "detail": str(exc)}
            except sqlite3.Error as exc:  # busy, or not a gateway database: say so, keep serving
                log.warning("api: %s: database error: %s", url.path, exc)
                result = 503, {"error": "database", "detail": str(exc)}
            except Exception as exc:  # a bug: one log line and a JSON 500, keep serving
                log.exception("api: %s failed", url.path)
                result = 500, {"error": "internal", "detail": f"{type(exc).__name__}: {exc}"}
            if result is not None:
                code, obj = result
                body = json.dumps(obj, separators=(",", ":")).encode()  # compact: pages are big
                self._send(code, body, "application/json")
            return
        if url.path.startswith("/api/rewards/"):  # no route took it: a malformed owner, 400
            self._rewards(url.path.removeprefix("/api/rewards/"))
            return
        self._send(
            404,
            json.dumps({"error": "not_found", "detail": f"no route {url.path}; see /"}).encode(),
            "application/json",
        )

    # -- the status API and the rewards view (no database in the handler thread) -------
    def get_status(self):
        return 200, self.server.snapshot()  # type: ignore[attr-defined]

    def get_metrics(self):
        snapshot = self.server.snapshot  # type: ignore[attr-defined]
        body = metrics.render(snapshot(), metrics.db_path_of(snapshot))
        self._send(200, body, metrics.CONTENT_TYPE)

    def get_rewards(self, owner: str | None = None):
        self._rewards(owner)

    # -- the JSON API over the database (gateway/queries.py) ----------------------------
    def get_reward_epochs(self):
        with closing(self._db()) as conn:
            return 200, {"epochs": queries.epochs(conn), "decimals": queries.TOKEN_DECIMALS}

    def get_epoch_manifest(self, epoch: str):
        """The manifest file the rewards stage wrote for the epoch, byte for byte (its
        keccak256 is on chain, docs/REWARDS.md)."""
        from terrapin.gateway.rewards import ledger

        number = queries.parse_int(epoch, "epoch") or 0
        with closing(self._db()) as conn:
            found = ledger.stored(conn, number)
        if found is None or not found[0].exists():
            raise NotFound("no_manifest", f"no manifest was written for epoch {number}")
        self._send(200, found[0].read_bytes(), "application/json")

    def _db(self) -> sqlite3.Connection:
        db_path = self.server.db_path  # type: ignore[attr-defined]
        if db_path is None:
            raise NotFound("no_database", "this API has no gateway database")
        return queries.connect(db_path)

    def _statuses(self) -> dict[str, dict]:
        try:
            return self.server.snapshot().get("board_status", {})  # type: ignore[attr-defined]
        except Exception:  # a snapshot without boards (tests) or a stopping gateway
            return {}

    def get_boards(self):
        with closing(self._db()) as conn:
            counts = self.server.counts  # type: ignore[attr-defined]
            return 200, {"boards": queries.boards(conn, self._statuses(), counts)}

    def get_board(self, addr: str):
        address = queries.parse_address(addr)
        with closing(self._db()) as conn:
            return 200, queries.board(conn, address, self._statuses().get(address.hex()))

    def get_board_readings(self, addr: str):
        address = queries.parse_address(addr)
        q = self.query
        with closing(self._db()) as conn:
            queries.board(conn, address)  # 404 for a board nobody knows
            return 200, queries.readings(
                conn,
                address,
                since=queries.parse_int(q.get("since"), "since"),
                before=queries.parse_int(q.get("before"), "before"),
                limit=queries.parse_int(q.get("limit"), "limit", queries.DEFAULT_LIMIT) or 1,
                explorer=self.server.explorer,  # type: ignore[attr-defined]
            )

    def get_reading(self, addr: str, seq: str):
        address = queries.parse_address(addr)
        number = queries.parse_int(seq, "seq")
        with closing(self._db()) as conn:
            return 200, queries.reading(conn, address, number or 0, self.server.explorer)  # type: ignore[attr-defined]

    def get_proof(self, addr: str, seq: str):
        from terrapin.gateway.chain.proof import make_bundle

        address = queries.parse_address(addr)
        number = queries.parse_int(seq, "seq") or 0
        with closing(self._db()) as conn:
            state = queries.reading(conn, address, number)["state"]
        if state != "anchored":
            raise NotFound("not_anchored", f"reading #{number} is {state}, not anchored yet")
        try:
            body = make_bundle(self.server.db_path, address, number).dumps().encode()  # type: ignore[attr-defined]
        except TerrapinError as exc:
            raise NotFound("no_proof", str(exc)) from None
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        name = f"reading-0x{address.hex()}-{number}.json"
        self.send_header("Content-Disposition", f'attachment; filename="{name}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def get_batches(self):
        srv = self.server
        q = self.query
        with closing(self._db()) as conn:
            rows = queries.batches(
                conn,
                before=queries.parse_int(q.get("before"), "before"),
                limit=queries.parse_int(q.get("limit"), "limit", queries.DEFAULT_LIMIT) or 1,
                head=srv.chain_head(),  # type: ignore[attr-defined]
                explorer=srv.explorer,  # type: ignore[attr-defined]
            )
            health = queries.anchoring(conn, time.time())
        health["last_error"] = _stage_errors(self.server.snapshot)  # type: ignore[attr-defined]
        return 200, {"batches": rows, "anchoring": health}

    # -- dashboard pages and their static files (gateway/web/) ---------------------------
    def _page(self, name: str):
        found = web.asset(name)
        if found is None:
            raise NotFound("not_found", f"dashboard file {name} is missing from the package")
        self._send(200, found[0], found[1])

    def get_page_boards(self):
        self._page("boards.html")

    def get_page_board(self, addr: str):
        queries.parse_address(addr)
        self._page("board.html")

    def get_page_batches(self):
        self._page("batches.html")

    def get_page_rewards(self):
        self._page("rewards.html")

    def get_static(self, name: str):
        found = web.asset(name)
        if found is None or name.endswith(".html"):
            raise NotFound("not_found", f"no static file {name}")
        self._send(200, found[0], found[1], cache=STATIC_MAX_AGE)

    def _rewards(self, owner: str | None) -> None:
        view = self.server.rewards()  # type: ignore[attr-defined]
        try:
            if view is None:
                raise RewardsUnavailable("this gateway has no rewards data")
            code, obj = 200, view(owner)
            if owner is None:
                obj = _with_tokens(obj, self.server.db_path)  # type: ignore[attr-defined]
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

    def _send(self, code: int, body: bytes, ctype: str, cache: int = 0) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", f"max-age={cache}" if cache else "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        log.debug("api %s", format % args)


def _with_tokens(view: dict[str, Any], db_path: str | None) -> dict[str, Any]:
    """The rewards overview plus every epoch, amounts also in token units."""
    epochs: list[dict[str, Any]] = []
    if db_path:
        with contextlib.suppress(NotFound), closing(queries.connect(db_path)) as conn:
            epochs = queries.epochs(conn)
    return queries.rewards_in_tokens(view, epochs)


def _stage_errors(snapshot: Callable[[], dict]) -> str | None:
    """The batcher's or anchorer's last error from the status snapshot, if any."""
    try:
        stages = snapshot().get("stages", {})
    except Exception:
        return None
    errors = [f"{name}: {s['error']}" for name, s in stages.items() if s.get("error")]
    return "; ".join(errors) or None


class Api:
    def __init__(
        self,
        host: str,
        port: int,
        snapshot,
        rewards: RewardsView | None = None,
        *,
        db_path: str | Path | None = None,
        token: str | None = None,
        explorer_tx_url: str | None = None,
    ):
        """`rewards` is the view behind /api/rewards; by default the one of the Gateway
        whose bound `snapshot` method is given (its rewards stage, else its database).
        `db_path`, `token` and `explorer_tx_url` default to that Gateway's config
        ([store] path, [api] token/token_file, [api] explorer_tx_url). Raises ConfigError
        for a non-loopback `host` without a token."""
        owner = getattr(snapshot, "__self__", None)
        cfg = getattr(owner, "cfg", None)
        api_cfg = getattr(cfg, "api", None)
        token = api_token(api_cfg) if token is None else token
        check_access(host, token)
        self.httpd = ThreadingHTTPServer((host, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.snapshot = snapshot  # type: ignore[attr-defined]
        self.httpd.rewards = (  # type: ignore[attr-defined]
            (lambda: rewards) if rewards is not None else (lambda: gateway_rewards_view(owner))
        )
        if db_path is None and cfg is not None:
            db_path = cfg.store.path
        self.httpd.db_path = None if db_path is None else str(db_path)  # type: ignore[attr-defined]
        self.httpd.token = token  # type: ignore[attr-defined]
        if explorer_tx_url is None:
            explorer_tx_url = getattr(api_cfg, "explorer_tx_url", "") or ""
        self.httpd.explorer = explorer_tx_url  # type: ignore[attr-defined]
        self.httpd.chain_head = chain_head(owner)  # type: ignore[attr-defined]
        self.httpd.counts = queries.ReadingCounts()  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="api", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self.httpd.server_address[:2]  # type: ignore[return-value]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"

    def start(self) -> Api:
        self.thread.start()
        threading.Thread(target=self._warm, name="api-warm", daemon=True).start()
        access = "token required ([api] token)" if self.httpd.token else "no token: loopback only"  # type: ignore[attr-defined]
        log.info("dashboard on %s (%s)", self.url, access)
        missing = web.charts_missing()
        if missing:
            log.warning("dashboard charts missing (%s): run `make web`", ", ".join(missing))
        return self

    def _warm(self) -> None:
        """Count the stored readings once at start, so the first /api/boards is fast."""
        db_path = self.httpd.db_path  # type: ignore[attr-defined]
        if db_path is None:
            return
        try:
            with closing(queries.connect(db_path)) as conn:
                self.httpd.counts.get(conn)  # type: ignore[attr-defined]
        except (NotFound, sqlite3.Error) as exc:  # no database yet: counted on first request
            log.debug("api: counting readings at start: %s", exc)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
