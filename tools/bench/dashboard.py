"""`terrapin bench dashboard [--boards 100] [--readings 1000000] [--db PATH] [--json]`:
how fast the dashboard's JSON API and pages answer on a big gateway database.

1. Fill: `--boards` boards with `--readings` readings in all, each a real signed
   envelope (two records, coincurve, one worker process per core), written straight
   into the store's schema (gateway/store.py) in large transactions. The real batcher
   closes batches of BATCH_SIZE readings (their Merkle trees stored); all but the last
   UNANCHORED batches are then marked anchored with a made-up transaction (the bench
   measures reads, not a chain), so the pages show every reading state. A database
   given with --db is filled once and reused by later runs.
2. Measure: the gateway's own API server (gateway/api.py) on 127.0.0.1, with a status
   message for every board; each endpoint is asked REQUESTS times in a row over HTTP
   (a fresh connection each, like a browser's first visit) and the p50/p99/max of the
   wall time from request to last byte are printed. `page:` rows are a whole page in
   headless Chromium (tools/devkit/browser.py): the page's own clock (performance.now()
   when its script has drawn the table or chart, `data-ready-ms`) from the start of
   navigation, i.e. HTML, scripts, API requests and drawing; when Chromium is installed.

The target (issue 15) is under 300 ms for every row at 100 boards and 1,000,000 readings.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import click

from terrapin.gateway.errors import TerrapinError

BATCH_SIZE = 10_000
UNANCHORED = 1  # the newest batch is left pending: the anchoring health has a backlog
REQUESTS = 30
TARGET_MS = 300.0
_T0 = 1_765_000_000  # board time of the first reading; one reading a minute after it


def _board_rows(args: tuple[int, int, int]) -> tuple[bytes, bytes, list[tuple]]:
    """One board's key and `count` signed readings (worker process)."""
    from terrapin.gateway.protocol.envelope import assemble, digest, encode_payload
    from terrapin.gateway.protocol.signature import address, private_key, sign_digest

    index, count, seed = args
    rng = random.Random(seed * 1_000_003 + index)
    key = private_key(rng.randbytes(32))
    pub = key.public_key.format(compressed=False)
    kid = address(pub)
    rows = []
    for seq in range(1, count + 1):
        t = _T0 + seq * 60
        records = [
            ("temperature", "Cel", round(15 + 8 * rng.random(), 2)),
            ("humidity", "%RH", round(40 + 30 * rng.random(), 2)),
        ]
        payload = encode_payload(seq, t, records)
        d = digest(payload)
        rows.append((kid, seq, d, assemble(kid, payload, sign_digest(key, d)), t, t + 0.5))
    return kid, pub, rows


def _progress(done: int, total: int) -> None:
    """One line rewritten on a terminal; in a log (a pipe), a line per tenth."""
    if sys.stderr.isatty():
        click.echo(f"\r  filled {done:,}/{total:,} readings", nl=False, err=True)
    elif done * 10 // total > (done - 1) * 10 // total or done == total:
        click.echo(f"  filled {done:,}/{total:,} readings", err=True)


def database_size(db: Path) -> dict[str, int]:
    """What the figures were measured on: a reused --db may hold other sizes than asked."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        readings = conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
        boards = conn.execute("SELECT COUNT(*) FROM devices").fetchone()[0]
    finally:
        conn.close()
    return {"boards": boards, "readings": readings}


def fill(db: Path, boards: int, readings: int, seed: int = 1) -> None:
    from terrapin.gateway.chain.batcher import Batcher
    from terrapin.gateway.store import Store

    Store(db).close()  # the store's schema and indexes
    conn = sqlite3.connect(str(db), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # a bench fill: speed over durability
    per_board = [readings // boards + (1 if i < readings % boards else 0) for i in range(boards)]
    started = time.monotonic()
    done = 0
    with mp.Pool(os.cpu_count() or 1) as pool:
        jobs = [(i, n, seed) for i, n in enumerate(per_board)]
        for kid, pub, rows in pool.imap_unordered(_board_rows, jobs):
            conn.execute("BEGIN")
            conn.execute(
                "INSERT INTO devices(address, pubkey, added_at, label) VALUES (?,?,?,?)",
                (kid, pub, _T0, f"bench-{kid.hex()[:6]}"),
            )
            conn.executemany(
                "INSERT INTO readings(device, seq, digest, envelope, time, received_at)"
                " VALUES (?,?,?,?,?,?)",
                rows,
            )
            conn.execute("COMMIT")
            done += len(rows)
            _progress(done, readings)
    click.echo(f" ({time.monotonic() - started:.0f} s)", err=True)
    click.echo("  batching (real Merkle trees)...", err=True)
    Batcher(db, batch_size=max(1, min(BATCH_SIZE, readings // 10))).close_due(force=True)
    _anchor_all_but_last(conn)
    conn.close()


def _anchor_all_but_last(conn: sqlite3.Connection) -> None:
    """Mark the batches anchored with made-up transactions (the bench has no chain)."""
    ids = [r[0] for r in conn.execute("SELECT id FROM batches ORDER BY id")]
    conn.execute("BEGIN")
    for n, bid in enumerate(ids[: max(0, len(ids) - UNANCHORED)]):
        tx = bytes([7]) * 16 + bid.to_bytes(16, "big")
        conn.execute(
            "UPDATE batches SET status='confirmed', tx_hash=?, block_number=?, block_hash=?,"
            " anchored_at=created_at WHERE id=?",
            (tx, 100 + n, tx[::-1], bid),
        )
        conn.execute(
            "INSERT INTO chain_txs(batch_id, chain_id, contract, sender, nonce, tx_hash, raw,"
            " max_fee, priority_fee, created_at, status) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (bid, 31337, "0x" + "22" * 20, "0x" + "33" * 20, n, tx, b"", 1, 1, 0.0, "mined"),
        )
    conn.execute("COMMIT")


def _timed(url: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            raise TerrapinError(f"{url} answered {exc.code}: {exc.read()[:200]!r}") from None
        times.append((time.perf_counter() - t) * 1000)
    return times


def _row(name: str, times: list[float]) -> dict:
    times = sorted(times)
    p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
    return {
        "endpoint": name,
        "n": len(times),
        "p50_ms": round(statistics.median(times), 1),
        "p99_ms": round(p99, 1),
        "max_ms": round(times[-1], 1),
    }


def _pages(base: str, board: str, n: int) -> list[dict]:
    from terrapin.tools.devkit.browser import BrowserMissing, chromium

    rows = []
    try:
        with chromium() as browser:
            for name, path, ready in [
                ("page: boards", "", "html[data-ready-ms]"),
                ("page: board (chart + readings)", "boards/" + board, "html[data-ready-ms]"),
                ("page: batches", "batches", "html[data-ready-ms]"),
            ]:
                page = browser.open(base + path)  # warm: the first load compiles the JS
                page.wait_for_selector(ready)
                times = []
                for _ in range(n):
                    page.goto(base + path, wait_until="commit")
                    page.wait_for_selector(ready)
                    # ms from the start of navigation until the page drew its content
                    times.append(float(page.get_attribute("html", "data-ready-ms") or "nan"))
                page.close()
                rows.append(_row(name, times))
            if browser.errors:
                raise TerrapinError(f"console errors: {browser.errors[:3]}")
    except BrowserMissing as exc:
        click.echo(f"  pages not measured: {exc}", err=True)
    return rows


def measure(db: Path, requests: int = REQUESTS) -> list[dict]:
    from terrapin.gateway.api import Api

    conn = sqlite3.connect(str(db))
    boards = [bytes(r[0]).hex() for r in conn.execute("SELECT address FROM devices")]
    board = "0x" + boards[len(boards) // 2]
    high = conn.execute(
        "SELECT MAX(seq) FROM readings WHERE device = ?", (bytes.fromhex(board[2:]),)
    ).fetchone()[0]
    # The proof is of the first reading of the newest anchored batch.
    proved = conn.execute(
        "SELECT device, seq FROM readings WHERE id = (SELECT first_reading FROM batches"
        " WHERE status = 'confirmed' ORDER BY id DESC LIMIT 1)"
    ).fetchone()
    conn.close()
    if proved is None:
        raise TerrapinError(f"{db} has no anchored batch: give a larger --readings")
    proof = f"api/readings/0x{bytes(proved[0]).hex()}/{proved[1]}/proof"
    now = time.time()
    statuses = {
        b: {"state": "online", "fw": "0.1.0", "heap_free": 61_000, "outbox": 0, "received_at": now}
        for b in boards
    }

    def snapshot() -> dict:
        return {"board_status": statuses, "stages": {}}

    api = Api("127.0.0.1", 0, snapshot, db_path=db, token="").start()
    base = api.url
    try:
        endpoints = [
            ("/api/boards", "api/boards"),
            ("/api/boards/<addr>", f"api/boards/{board}"),
            ("/api/boards/<addr>/readings", f"api/boards/{board}/readings"),
            ("/api/boards/<addr>/readings?limit=300", f"api/boards/{board}/readings?limit=300"),
            ("/api/boards/<addr>/readings?since=", f"api/boards/{board}/readings?since={high}"),
            ("/api/readings/<addr>/<seq>", f"api/readings/{board}/{high // 2}"),
            ("/api/readings/<addr>/<seq>/proof", proof),
            ("/api/batches", "api/batches"),
            ("/api/rewards/epochs", "api/rewards/epochs"),
            ("/api/status", "api/status"),
            ("/ (boards page HTML)", ""),
            ("/boards/<addr> (page HTML)", f"boards/{board}"),
        ]
        rows = []
        for name, path in endpoints:
            _timed(base + path, 1)  # warm the page cache once
            rows.append(_row(name, _timed(base + path, requests)))
        rows += _pages(base, board, max(5, requests // 3))
    finally:
        api.stop()
    return rows


@click.command()
@click.option("--boards", default=100, show_default=True, help="Boards in the database.")
@click.option("--readings", default=1_000_000, show_default=True, help="Readings in all.")
@click.option("--db", "db_path", type=click.Path(path_type=Path), help="Fill once, reuse.")
@click.option("--requests", default=REQUESTS, show_default=True, help="Requests per endpoint.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def dashboard(boards: int, readings: int, db_path: Path | None, requests: int, as_json: bool):
    """Dashboard/API latency (p50/p99) on a database of BOARDS boards and READINGS readings."""
    if boards < 1 or readings < boards:
        raise TerrapinError("need at least one board and one reading per board")
    tmp = None
    if db_path is None:
        tmp = tempfile.TemporaryDirectory(prefix="terrapin-bench-dashboard-")
        db_path = Path(tmp.name) / "gateway.db"
    try:
        if not db_path.exists():
            click.echo(f"filling {db_path}: {boards} boards, {readings:,} readings", err=True)
            fill(db_path, boards, readings)
        else:
            click.echo(f"reusing {db_path}", err=True)
        rows = measure(db_path, requests)
        size = database_size(db_path)
    finally:
        if tmp is not None:
            tmp.cleanup()
    worst = max(r["p99_ms"] for r in rows)
    load = [round(x, 1) for x in os.getloadavg()]  # a busy machine slows the pages most
    if as_json:
        click.echo(json.dumps(size | {"load_average": load, "rows": rows}, indent=2))
        return
    click.echo(
        f"database: {size['boards']} boards, {size['readings']:,} readings; "
        f"load average {load[0]} on {os.cpu_count()} cores"
    )
    click.echo(f"{'endpoint':44} {'n':>4} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for r in rows:
        flag = "" if r["p99_ms"] < TARGET_MS else "  over target"
        click.echo(
            f"{r['endpoint']:44} {r['n']:>4} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['max_ms']:>8}"
            + flag
        )
    verdict = "under" if worst < TARGET_MS else "OVER"
    click.echo(f"worst p99 {worst} ms: {verdict} the {TARGET_MS:.0f} ms target")
