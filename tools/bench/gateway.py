"""`terrapin bench gateway`: ingest throughput through a real Mosquitto.

Same run, same broker, same pre-signed readings:
  (a) passthrough: a paho subscriber that only counts (the broker + paho ceiling);
  (b) gateway: `terrapin gateway run` as a subprocess (decode, verify, policy,
      SQLite FULL sync, ACK, PUBACK after commit).
Both drain a backlog the boards published while the subscriber was away (a
persistent session), so the figure is the subscriber's rate, not the
publishers'; each is run `--repeat` times and the best run counts (other
load on the machine only ever slows a run down). Then (c) boards publish at
a steady rate to the running gateway and the publish -> ACK latency is
measured. The bench checks `exactly_once()`: the database holds every
reading once (rows == expected, none twice) and every seq the boards were
acked is stored, none published went unacked or was rejected; it exits
non-zero otherwise.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import click
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from terrapin.gateway import mosquitto_conf, secretfile
from terrapin.gateway.config import load_config, render_config
from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.protocol.envelope import decode_envelope
from terrapin.gateway.protocol.signature import Verifier
from terrapin.gateway.protocol.topics import READING_FILTER
from terrapin.gateway.store import Store, open_db
from terrapin.tools.devkit.broker import Mosquitto, free_port
from terrapin.tools.devkit.gatewayproc import GatewayProcess
from terrapin.tools.devkit.simboard import SimBoard, board_address, new_key, sign_range

GATEWAY_START_TIMEOUT = 30.0  # s until `gateway run` is connected to the broker
SETTLE_TIMEOUT_S = 30.0  # gateway_flood.SETTLE_TIMEOUT
VICTIM_RATE = 10.0  # readings/s of the well-behaved board in the flood phase


def _sign_job(args):
    key, seqs, t0 = args
    return sign_range(key, seqs, t0)


def presign(keys: list[bytes], per_board: int, first_seq: int, t0: int) -> list[list[tuple]]:
    jobs = [(k, range(first_seq, first_seq + per_board), t0) for k in keys]
    procs = min(len(jobs), os.cpu_count() or 1)
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        return pool.map(_sign_job, jobs)


def verify_rate(envelopes: list[bytes], seconds: float = 1.0) -> float:
    """Signature checks per second on one core, board keys cached (the steady state)."""
    v = Verifier("coincurve")
    decoded = [decode_envelope(e) for e in envelopes]
    pairs = [(d, d.digest) for d in decoded]
    for d, dig in pairs:
        v.verify(d, dig)  # learn the keys
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for d, dig in pairs:
            v.verify(d, dig)
        n += len(pairs)
    return n / (time.perf_counter() - start)


def publish_all(boards: list[SimBoard], signed: list[list[tuple]], timeout: float = 300) -> None:
    """Every board publishes its envelopes; returns when the broker has PUBACKed all."""

    def run(board, items):
        infos = [board.publish(env, seq) for seq, env in items]
        for info in infos:
            info.wait_for_publish(timeout)

    threads = [
        threading.Thread(target=run, args=(b, items))
        for b, items in zip(boards, signed, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class Counter:
    """The passthrough subscriber: counts QoS 1 readings, nothing else."""

    def __init__(self, port: int, password: str, expected: int, *, clean: bool = False):
        self.expected = expected
        self.count = 0
        self.first = self.last = 0.0
        self.done = threading.Event()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=mosquitto_conf.GATEWAY_USER,  # the id the broker binds to this user
            clean_session=clean,
            protocol=mqtt.MQTTv311,
        )
        c.username_pw_set(mosquitto_conf.GATEWAY_USER, password)
        c.on_connect = lambda cl, *a: cl.subscribe(READING_FILTER, qos=1)
        c.on_message = self._on_message
        self.client = c
        self.port = port

    def _on_message(self, client, userdata, msg):
        now = time.monotonic()
        if self.count == 0:
            self.first = now
        self.count += 1
        self.last = now
        if self.count >= self.expected:
            self.done.set()

    def connect(self):
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()

    def disconnect(self):
        self.client.disconnect()
        self.client.loop_stop()

    def forget(self):
        """Connect once with a clean session: the broker drops the stored one."""
        self.client.on_connect = None
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        time.sleep(0.2)
        self.disconnect()


def wait_stored(gw: GatewayProcess, expected: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    st = gw.status(timeout=5)
    while time.monotonic() < deadline:
        st = gw.status(timeout=5)
        if st["counts"]["stored"] + st["counts"]["duplicate"] >= expected:
            return st
        time.sleep(0.25)  # the rate comes from the gateway's own timestamps
    raise TerrapinError(f"gateway stored {st['counts']['stored']} of {expected} in time")


def exactly_once(db_path: Path, sims: list[SimBoard], published: dict, expected: int) -> dict:
    """The exactly-once check of a run, from the database and the ACKs the boards got.

    exactly_once holds when the table has `expected` rows, no (board, seq)
    twice, every published seq acked (none rejected), and every seq a board
    was acked is stored for that board (an ACK never runs ahead of a commit)."""
    db = open_db(db_path)
    try:
        stored: dict[bytes, set[int]] = {}
        rows = 0
        for device, seq in db.execute("SELECT device, seq FROM readings"):
            stored.setdefault(bytes(device), set()).add(seq)
            rows += 1
    finally:
        db.close()
    distinct = sum(len(seqs) for seqs in stored.values())
    acked = sum(len(s.acked) for s in sims)
    acked_not_stored = sum(len(s.acked - stored.get(s.address, set())) for s in sims)
    unacked = sum(len(published[s.address] - s.acked) for s in sims)
    rejected = sum(len(s.rejected) for s in sims)
    ok = rows == distinct == expected and not (acked_not_stored or unacked or rejected)
    return {
        "stored": rows,
        "expected": expected,
        "acked": acked,
        "acked_not_stored": acked_not_stored,
        "published_not_acked": unacked,
        "rejected": rejected,
        "exactly_once": ok,
    }


def run_bench(
    boards_n: int,
    readings: int,
    latency_readings: int,
    rate: float,
    workdir: Path,
    workers: int | None = None,
    repeat: int = 2,
) -> dict:
    per_board = max(1, readings // boards_n)
    total = per_board * boards_n
    mqtt_port, api_port = free_port(), free_port()
    home = workdir / "gw"
    (home / "mosquitto").mkdir(parents=True)
    gw_password = mosquitto_conf.random_password()
    secretfile.write_secret(home / "gateway.secret", gw_password + "\n")
    passwd, acl = home / "mosquitto" / "passwd", home / "mosquitto" / "acl"
    mosquitto_conf.write_passwd(passwd, {})
    mosquitto_conf.set_user(passwd, mosquitto_conf.GATEWAY_USER, gw_password)
    acl.write_text(mosquitto_conf.render_acl())
    cfg_path = home / "gateway.toml"
    cfg_path.write_text(
        render_config(
            {
                "mqtt": {"port": mqtt_port, "password_file": "gateway.secret"},
                "broker": {"password_file": "mosquitto/passwd", "acl_file": "mosquitto/acl"},
                "store": {"path": "gateway.db"},
                "api": {"port": api_port},
                "log": {"level": "warning"},
                **({"pipeline": {"workers": workers}} if workers is not None else {}),
            }
        )
    )
    cfg = load_config(cfg_path)
    keys = [new_key() for _ in range(boards_n)]
    board_pw = {}
    store = Store(cfg.store.path)
    users = mosquitto_conf.read_passwd(passwd)
    for k in keys:
        addr = board_address(k)
        store.add_device(addr)
        board_pw[k] = mosquitto_conf.random_password()
        users[addr.hex()] = mosquitto_conf.hash_password(board_pw[k])
    mosquitto_conf.write_passwd(passwd, users)
    store.close()

    t0 = int(time.time())
    t_sign = time.perf_counter()
    backlogs = [presign(keys, per_board, 1 + r * per_board, t0) for r in range(repeat)]
    live = presign(keys, max(1, latency_readings // boards_n), repeat * per_board + 1, t0)
    sign_s = time.perf_counter() - t_sign
    verify_per_s = verify_rate([env for items in backlogs[0] for _, env in items[:50]])

    inflight = os.environ.get("TERRAPIN_BENCH_INFLIGHT", "1000")
    # tools.broker already sets set_tcp_nodelay and, as root, `user root`.
    extra = "\n".join(
        [
            f"max_queued_messages {2 * (total + latency_readings) + 1000}",
            f"max_inflight_messages {inflight}",
        ]
    )
    broker = Mosquitto(
        workdir / "broker",
        port=mqtt_port,
        password_file=passwd,
        acl_file=acl,
        persistence=False,
        extra_config=extra,
    ).start()
    sims: list[SimBoard] = []
    gw = GatewayProcess(cfg_path, log=workdir / "gateway.log", settle=0)
    result: dict = {}
    try:
        sims = [SimBoard("127.0.0.1", mqtt_port, k, password=board_pw[k]).start() for k in keys]
        # (a) passthrough: register its session, go away, let the boards publish,
        # drain; best of `repeat` (other load on the machine only ever slows a run).
        rates = []
        for _ in range(repeat):
            counter = Counter(mqtt_port, gw_password, total)
            counter.connect()
            time.sleep(0.3)
            counter.disconnect()
            publish_all(sims, backlogs[0])
            counter.connect()
            if not counter.done.wait(300):
                raise TerrapinError(f"passthrough got {counter.count} of {total}")
            counter.disconnect()
            rates.append(total / max(counter.last - counter.first, 1e-9))
        passthrough = max(rates)
        Counter(mqtt_port, gw_password, 0, clean=True).forget()

        # (b) the gateway drains each backlog (fresh seqs each time) after a
        # restart of `terrapin gateway run`; best of `repeat` too.
        for s in sims:
            s.outbox.clear()
            s.sent_at.clear()
        gw.start(timeout=GATEWAY_START_TIMEOUT)
        gw.stop()  # its session (and subscription) stays at the broker
        rates, cpu = [], []
        for r, backlog in enumerate(backlogs):
            publish_all(sims, backlog)
            gw.start(timeout=GATEWAY_START_TIMEOUT)
            cpu0 = gw.cpu_seconds()
            st = wait_stored(gw, total, 300)
            cpu1 = gw.cpu_seconds()
            if cpu0 is not None and cpu1 is not None:
                cpu.append(tuple((b - a) / total * 1e6 for a, b in zip(cpu0, cpu1, strict=True)))
            rates.append(total / max(st["last_commit_at"] - st["first_received_at"], 1e-9))
            if r < repeat - 1:
                gw.stop()
        gateway_per_s = max(rates)
        cpu_us = min(cpu, key=sum) if cpu else None
        acked_backlog = all(
            s.wait_settled([q for b in backlogs for q, _ in b[i]], 30) for i, s in enumerate(sims)
        )

        # (c) steady rate: publish -> ACK latency.
        latencies: list[float] = []
        n_live = sum(len(x) for x in live)
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
        acked_live = all(
            s.wait_settled([q for q, _ in items], 30) for s, items in zip(sims, live, strict=True)
        )
        for s, items in zip(sims, live, strict=True):
            latencies += [s.ack_latency[q] for q, _ in items if q in s.ack_latency]
        latencies.sort()
        p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000 if latencies else float("nan")
        p50 = latencies[len(latencies) // 2] * 1000 if latencies else float("nan")
        gw.stop()

        expected = repeat * total + n_live
        published = {
            s.address: {q for b in [*backlogs, live] for q, _ in b[i]} for i, s in enumerate(sims)
        }
        once = exactly_once(cfg.store.path, sims, published, expected)
        result = {
            "boards": boards_n,
            "readings": total,
            "repeat": repeat,
            "latency_readings": n_live,
            "latency_rate_per_s": rate,
            "presign_s": round(sign_s, 2),
            "passthrough_per_s": round(passthrough, 1),
            "gateway_per_s": round(gateway_per_s, 1),
            "ratio": round(gateway_per_s / passthrough, 3),
            "verify_per_s": round(verify_per_s, 1),
            "gateway_cpu_us_per_reading": None if cpu_us is None else round(sum(cpu_us), 1),
            "gateway_cpu_us_main": None if cpu_us is None else round(cpu_us[0], 1),
            "gateway_cpu_us_workers": None if cpu_us is None else round(cpu_us[1], 1),
            "p50_ack_latency_ms": round(p50, 2),
            "p99_ack_latency_ms": round(p99, 2),
            **once,
            "settled_in_time": acked_backlog and acked_live,
            "commits": st["counts"]["commits"],
            "workers": load_config(cfg_path).pipeline.workers,
        }
    finally:
        gw.stop()
        for s in sims:
            s.stop()
        broker.stop()
    return result


@click.command("gateway")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--boards", default=20, show_default=True, help="simulated boards")
@click.option("--readings", default=20000, show_default=True, help="backlog readings in all")
@click.option("--latency-readings", default=2000, show_default=True, help="readings for phase (c)")
@click.option("--rate", default=1000.0, show_default=True, help="readings/s in phase (c)")
@click.option("--workers", type=int, default=None, help="[pipeline] workers (default: config's)")
@click.option("--repeat", default=2, show_default=True, help="runs of (a) and (b); best of each")
@click.option("--keep", is_flag=True, help="keep the work folder (logs, database)")
@click.option("--flood-rate", default=20000.0, show_default=True, help="flood envelopes/s offered")
@click.option("--flood-seconds", default=10.0, show_default=True, help="flood phase; 0 skips it")
@click.option("--flood-max", is_flag=True, help="also flood as fast as one client can")
@click.option("--flood-only", is_flag=True, help="only the flood phase")
@click.option(
    "--store",
    type=click.Choice(["sqlite", "postgresql"]),
    default=None,
    help="compare stores and instances instead (docs/SCALE.md; postgresql runs SQLite too)",
)
@click.option("--instances", default=1, show_default=True, help="gateway instances (with --store)")
def gateway(
    as_json,
    boards,
    readings,
    latency_readings,
    rate,
    workers,
    repeat,
    keep,
    flood_rate,
    flood_seconds,
    flood_max,
    flood_only,
    store,
    instances,
):
    """Gateway ingest vs a counting subscriber through Mosquitto, ACK latency, and one
    board's ACK latency while another floods invalid envelopes."""
    if boards < 1 or readings < boards:
        raise TerrapinError("need --boards >= 1 and --readings >= --boards")
    if store is not None or instances != 1:
        from terrapin.tools.bench.gateway_scale import scale_command

        return scale_command(
            store or "sqlite",
            instances,
            boards,
            readings,
            latency_readings,
            rate,
            as_json,
            keep,
            repeat,
        )
    workdir = Path(tempfile.mkdtemp(prefix="terrapin-bench-gw-"))
    result: dict = {"exactly_once": True}
    try:
        if not flood_only:
            result = run_bench(
                boards, readings, latency_readings, rate, workdir, workers, max(1, repeat)
            )
        if flood_seconds > 0:
            from terrapin.tools.bench.gateway_flood import run_flood_bench

            result.update(
                run_flood_bench(workdir, flood_rate, VICTIM_RATE, flood_seconds, flood_max)
            )
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if as_json:
        click.echo(json.dumps(result))
    else:
        for k, v in result.items():
            base = result.get(k.replace("flood_max_", "baseline_").replace("flood_", "baseline_"))
            beside = f"   (baseline without the flood: {base})" if "victim" in k and base else ""
            click.echo(f"{k:>28}: {v}{beside}")
        if keep:
            click.echo(f"{'work folder':>28}: {workdir}")
    if not result["exactly_once"]:
        raise TerrapinError(
            f"stored {result['stored']} rows of {result['expected']} expected;"
            f" {result['acked_not_stored']} acked but not stored,"
            f" {result['published_not_acked']} published but not acked,"
            f" {result['rejected']} rejected",
            exit_code=3,
        )
    if result.get("flood_victim_acked_ratio", 1.0) < 1.0:
        raise TerrapinError(
            f"under the flood only {result['flood_victim_acked_ratio']:.1%} of the victim's"
            f" readings were acked within {SETTLE_TIMEOUT_S:.0f} s",
            exit_code=3,
        )
