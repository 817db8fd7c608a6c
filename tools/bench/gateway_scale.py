"""`terrapin bench gateway --store sqlite|postgresql --instances N`: the store and the
number of gateway instances, side by side in one run.

Each configuration gets its own home (the code of `gateway init` and `gateway
instance add`), its own Mosquitto and the same kind of pre-signed backlog:
  (a) passthrough: a subscriber that only counts drains the backlog (the ceiling);
  (b) the instances (`terrapin gateway run` each) register their sessions, go away,
      the boards publish the backlog, the instances come back and drain it: the
      rate is readings / (last commit - first reading received) over all of them;
      (a) and (b) are run `repeat` times and the best run counts, as in the
      single-gateway bench;
  (c) boards publish at a steady rate: publish -> ACK latency (p50, p99).
Then the database must hold every reading exactly once. With --store postgresql
the run is: SQLite x 1, PostgreSQL x 1, PostgreSQL x N (N > 1), so every figure of
docs/SCALE.md comes from one run on one machine; scaling_efficiency is
throughput(N) / (N x throughput(1)) on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.storebase import open_store
from terrapin.tools.bench.gateway import Counter, presign, publish_all
from terrapin.tools.devkit.broker import Mosquitto
from terrapin.tools.devkit.cluster import Cluster, ClusterHome
from terrapin.tools.devkit.gatewayhome import GatewayHome, start_broker
from terrapin.tools.devkit.gatewayproc import GatewayProcess
from terrapin.tools.devkit.simboard import SimBoard, new_key

DRAIN_TIMEOUT = 300.0


def _configs(store: str, instances: int) -> list[tuple[str, int]]:
    if store == "sqlite":
        if instances != 1:
            raise TerrapinError(
                "several instances share one PostgreSQL store: use --store postgresql",
                hint="terrapin bench gateway --store postgresql --instances 2",
            )
        return [("sqlite", 1)]
    out = [("sqlite", 1), ("postgresql", 1)]
    if instances > 1:
        out.append(("postgresql", instances))
    return out


def run_scale_bench(
    store: str,
    instances: int,
    *,
    boards_n: int,
    readings: int,
    latency_readings: int,
    rate: float,
    workdir: Path,
    repeat: int = 2,
    progress=lambda line: None,
) -> dict[str, Any]:
    """Every configuration of `_configs`, one after the other; a flat dict of figures."""
    configs = _configs(store, instances)
    pg = None
    result: dict[str, Any] = {
        "boards": boards_n,
        "readings": readings,
        "repeat": repeat,
        "exactly_once": True,
    }
    try:
        if any(kind == "postgresql" for kind, _ in configs):
            from terrapin.tools.devkit.postgres import Postgres

            pg = Postgres().start()
        per: dict[tuple[str, int], dict] = {}
        for kind, n in configs:
            progress(f"{kind} x {n}: running")
            url = pg.create_database() if pg is not None and kind == "postgresql" else None
            figures = _one(
                kind, n, url, boards_n, readings, latency_readings, rate, workdir, repeat
            )
            per[(kind, n)] = figures
            progress(f"{kind} x {n}: {figures['gateway_per_s']} readings/s")
            suffix = f"{kind}_x{n}"
            for key, value in figures.items():
                result[f"{key}_{suffix}"] = value
            result["exactly_once"] = result["exactly_once"] and figures["exactly_once"]
        main = per[(store, 1)]
        result["gateway_per_s"] = main["gateway_per_s"]
        result["ratio"] = main["ratio"]
        result["p99_ack_latency_ms"] = main["p99_ack_latency_ms"]
        if instances > 1:
            many = per[(store, instances)]
            result[f"gateway_per_s_x{instances}"] = many["gateway_per_s"]
            result["scaling_efficiency"] = round(
                many["gateway_per_s"] / (instances * main["gateway_per_s"]), 3
            )
    finally:
        if pg is not None:
            pg.remove()
    return result


def _one(
    kind: str,
    n: int,
    url: str | None,
    boards_n: int,
    readings: int,
    latency_readings: int,
    rate: float,
    workdir: Path,
    repeat: int,
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"{kind}-x{n}-", dir=workdir))
    home: GatewayHome = (
        ClusterHome(root / "gw", url, None, instances=n) if url else GatewayHome(root / "gw")
    )
    for path in getattr(home, "instance_configs", [home.config_path]):
        text = path.read_text().replace('level = "info"', 'level = "warning"', 1)
        path.write_text(text)
    per_board = max(1, readings // boards_n)
    total = per_board * boards_n
    creds = [home.add_sim_board(new_key()) for _ in range(boards_n)]
    keys = [k for k, _ in creds]
    t0 = int(time.time())
    backlogs = [presign(keys, per_board, 1 + r * per_board, t0) for r in range(repeat)]
    live = presign(keys, max(1, latency_readings // boards_n), repeat * per_board + 1, t0)
    broker = start_broker(home, extra_config=f"max_queued_messages {4 * total + 1000}")
    procs: list[GatewayProcess] = (
        Cluster(home).procs if isinstance(home, ClusterHome) else [GatewayProcess(home)]
    )
    sims: list[SimBoard] = []
    try:
        sims = [SimBoard("127.0.0.1", home.mqtt_port, k, password=pw).start() for k, pw in creds]
        # Best of `repeat` (other load on the machine only ever slows a run down).
        passthrough = max(
            _passthrough(broker, home, sims, backlogs[0], total) for _ in range(repeat)
        )
        for s in sims:
            s.outbox.clear()
            s.sent_at.clear()
        for p in procs:  # sessions and (shared) subscriptions registered, then away
            p.start()
        rates = []
        for backlog in backlogs:  # fresh seqs each round; counters restart with the processes
            for p in procs:
                p.stop()
            publish_all(sims, backlog)
            for p in procs:
                p.start(wait=False)
            for p in procs:
                p.wait_ready()
            rates.append(_drain_rate(procs, total))
        per_s = max(rates)
        p50, p99 = _latency(sims, live, boards_n, rate)
        for p in procs:
            p.stop()
        expected = repeat * total + sum(len(x) for x in live)
        store = open_store(url or home.db_path)
        try:
            rows = store.count_readings()
        finally:
            store.close()
        return {
            "instances": n,
            "passthrough_per_s": round(passthrough, 1),
            "gateway_per_s": round(per_s, 1),
            "ratio": round(per_s / passthrough, 3),
            "p50_ack_latency_ms": round(p50, 2),
            "p99_ack_latency_ms": round(p99, 2),
            "stored": rows,
            "expected": expected,
            "exactly_once": rows == expected,  # UNIQUE(device, seq): equal means once each
        }
    finally:
        for p in procs:
            p.stop()
        for s in sims:
            s.stop()
        broker.stop()


def _passthrough(broker: Mosquitto, home: GatewayHome, sims, backlog, total: int) -> float:
    """A counting subscriber drains the backlog with the gateway user's session."""
    password = home.gateway_password()
    counter = Counter(broker.port, password, total)
    counter.connect()
    time.sleep(0.3)
    counter.disconnect()
    publish_all(sims, backlog)
    counter.connect()
    if not counter.done.wait(DRAIN_TIMEOUT):
        raise TerrapinError(f"passthrough got {counter.count} of {total}")
    counter.disconnect()
    Counter(broker.port, password, 0, clean=True).forget()
    return total / max(counter.last - counter.first, 1e-9)


def _drain_rate(procs: list[GatewayProcess], total: int) -> float:
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while True:
        states = []
        for p in procs:
            with contextlib.suppress(OSError, ValueError):
                states.append(p.status(timeout=5))
        done = sum(s["counts"]["stored"] + s["counts"]["duplicate"] for s in states)
        if len(states) == len(procs) and done >= total:
            break
        if time.monotonic() > deadline:
            raise TerrapinError(f"the instances stored {done} of {total} in time")
        time.sleep(0.25)
    first = min(s["first_received_at"] for s in states if s["first_received_at"])
    last = max(s["last_commit_at"] for s in states if s["last_commit_at"])
    return total / max(last - first, 1e-9)


def _latency(sims: list[SimBoard], live, boards_n: int, rate: float) -> tuple[float, float]:
    interval = boards_n / rate
    start = time.monotonic()
    for i in range(max(len(x) for x in live)):
        for s, items in zip(sims, live, strict=True):
            if i < len(items):
                seq, env = items[i]
                s.publish(env, seq)
        delay = start + (i + 1) * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    for s, items in zip(sims, live, strict=True):
        s.wait_settled([q for q, _ in items], 30)
    latencies = sorted(
        s.ack_latency[q]
        for s, items in zip(sims, live, strict=True)
        for q, _ in items
        if q in s.ack_latency
    )
    if not latencies:
        return float("nan"), float("nan")
    return latencies[len(latencies) // 2] * 1000, latencies[int(0.99 * (len(latencies) - 1))] * 1000


def scale_command(
    store: str,
    instances: int,
    boards: int,
    readings: int,
    latency_readings: int,
    rate: float,
    as_json: bool,
    keep: bool,
    repeat: int = 2,
) -> None:
    """`terrapin bench gateway --store ... --instances N`: run, print, check."""
    import json
    import shutil

    import click

    if instances < 1:
        raise TerrapinError("--instances must be at least 1")
    workdir = Path(tempfile.mkdtemp(prefix="terrapin-bench-scale-"))
    try:
        result = run_scale_bench(
            store,
            instances,
            boards_n=boards,
            readings=readings,
            latency_readings=latency_readings,
            rate=rate,
            workdir=workdir,
            repeat=max(1, repeat),
            progress=lambda line: click.echo(line, err=True),
        )
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if as_json:
        click.echo(json.dumps(result))
    else:
        for key, value in result.items():
            click.echo(f"{key:>44}: {value}")
        if keep:
            click.echo(f"{'work folder':>44}: {workdir}")
    if not result["exactly_once"]:
        raise TerrapinError("a configuration did not store every reading exactly once", exit_code=3)
