"""`terrapin bench gateway` flood phase: one board's ACK latency while another floods.

A victim board publishes `victim_rate` signed readings/s for `seconds`; at
the same time a flooding board (real broker credentials, its own topic, in
its own process so it does not share this process's GIL with the victim, a
raw MQTT client writing pre-encoded packets so the rate is the attacker's, not
paho's) publishes envelopes with distinct seqs and a bad signature, QoS 1, at
`flood_rate` offered (0: as fast as one client goes), at most
`flood_rate * seconds` of them; `sent` counts what the broker PUBACKed. When
the broker hangs up on it (the gateway's broker quarantine), it reconnects
every RECONNECT_EVERY s, as an attacker would, and counts the refusals.
Everything runs on 127.0.0.1 against a real Mosquitto set up like the
generated mosquitto.conf (max_packet_size 4096, max_inflight_messages 1000)
and `terrapin gateway run` with its default config. The same victim run
without the flood is the baseline.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import socket
import sqlite3
import threading
import time
from pathlib import Path

from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.protocol.envelope import assemble, encode_payload
from terrapin.gateway.protocol.topics import reading_topic
from terrapin.tools.devkit.gatewayhome import GatewayHome, reload_broker, start_broker
from terrapin.tools.devkit.gatewayproc import GatewayProcess
from terrapin.tools.devkit.simboard import SimBoard, board_address

BROKER_CONFIG = "max_packet_size 4096\nmax_inflight_messages 1000\nmax_queued_messages 200000"
RECONNECT_EVERY = 0.5  # s between the quarantined flooder's reconnect attempts
SETTLE_TIMEOUT = 30.0  # s after the run for every victim reading to be acked
FLOOD_RECORDS = (("t", "Cel", 21.5),)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _varint(len(body)) + body


def _connect_packet(client_id: str, user: str, password: str) -> bytes:
    def s(x: str) -> bytes:
        return len(x.encode()).to_bytes(2, "big") + x.encode()

    # MQTT 3.1.1, clean session, user name + password, keepalive 60 s.
    return _packet(
        0x10,
        s("MQTT")
        + bytes([4, 0xC2])
        + (60).to_bytes(2, "big")
        + s(client_id)
        + s(user)
        + s(password),
    )


def _flood(port: int, key: bytes, password: str, rate: float, seconds: float, first: int, out, go):
    """The flooding board (a child process): a raw MQTT 3.1.1 client that writes
    pre-encoded QoS 1 PUBLISH packets (as fast as a client can, with no library
    in the way) and reads the broker's PUBACKs. Puts (PUBACKed, seconds)."""
    addr = board_address(key)
    topic = reading_topic(addr).encode()
    limit = int(rate * seconds) if rate else int(50_000 * seconds)
    t = int(time.time())
    head = len(topic).to_bytes(2, "big") + topic
    packets = [
        _packet(
            0x32,
            head
            + ((i % 65535) + 1).to_bytes(2, "big")
            + assemble(addr, encode_payload(first + i, t, FLOOD_RECORDS), b"\x01" * 64),
        )
        for i in range(limit)
    ]
    acked = [0]
    connect = _connect_packet("bench-flood-" + addr.hex(), addr.hex(), password)
    sock = _flood_connect(port, connect, acked)
    if sock is None:
        raise RuntimeError("the broker refused the flooding board's CONNECT")
    out.put("ready")  # envelopes built, connected: the victim starts now
    go.wait(60)
    sent, start = 0, time.monotonic()
    kicked_at, refused = None, 0
    step = 100  # packets per write
    while sent < limit and time.monotonic() - start < seconds:
        if sock is None:  # hung up on: try again, as an attacker would
            time.sleep(RECONNECT_EVERY)
            sock = _flood_connect(port, connect, acked)
            refused += sock is None
            continue
        try:
            sock.sendall(b"".join(packets[sent : sent + step]))
        except OSError:
            kicked_at = kicked_at or time.monotonic() - start
            sock.close()
            sock = None
            continue
        sent = min(limit, sent + step)
        if rate:
            delay = start + sent / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    elapsed = time.monotonic() - start
    deadline = time.monotonic() + 5.0
    while sock is not None and acked[0] < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.sendall(b"\xe0\x00")  # DISCONNECT
        sock.close()
    out.put((acked[0], elapsed, kicked_at, refused))


def _flood_connect(port: int, connect: bytes, acked: list) -> socket.socket | None:
    """A connected socket whose PUBACKs are counted into acked[0]; None when refused."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.sendall(connect)
        ok = sock.recv(4) == b"\x20\x02\x00\x00"
    except OSError:
        ok = False
    if not ok:
        sock.close()
        return None

    def read_pubacks():
        buf = b""
        with contextlib.suppress(OSError):
            while True:
                got = sock.recv(65536)
                if not got:
                    return
                buf += got
                n = len(buf) // 4  # PUBACK: 40 02 id id
                acked[0] += n
                buf = buf[n * 4 :]

    threading.Thread(target=read_pubacks, daemon=True).start()
    return sock


def _victim_run(victim: SimBoard, first: int, rate: float, seconds: float) -> dict:
    n = max(1, int(rate * seconds))
    seqs = list(range(first, first + n))
    start = time.monotonic()
    for i, s in enumerate(seqs):
        victim.publish(victim.envelope(s), s)
        delay = start + (i + 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    victim.wait_settled(seqs, SETTLE_TIMEOUT)
    lat = sorted(victim.ack_latency[s] for s in seqs if s in victim.ack_latency)
    acked = sum(1 for s in seqs if s in victim.acked)

    def pct(p):
        return round(lat[int(p * (len(lat) - 1))] * 1000, 1) if lat else None

    return {"readings": n, "acked_ratio": round(acked / n, 4), "p50": pct(0.5), "p99": pct(0.99)}


def run_flood_phase(
    home: GatewayHome,
    gw: GatewayProcess,
    victim: SimBoard,
    flood_cred: tuple[bytes, str],
    first_seq: int,
    flood_rate: float,
    victim_rate: float,
    seconds: float,
) -> tuple[dict, dict]:
    """(the victim's figures, the flood's figures) for one flood rate."""
    ctx = multiprocessing.get_context("fork")
    out, go = ctx.Queue(), ctx.Event()
    key, pw = flood_cred
    proc = ctx.Process(
        target=_flood,
        args=(home.mqtt_port, key, pw, flood_rate, seconds, first_seq * 1000, out, go),
    )
    proc.start()
    if out.get(timeout=300) != "ready":
        raise TerrapinError("the flooding board did not start")
    before = gw.status()["counts"]
    cpu0 = gw.cpu_seconds()
    go.set()
    v = _victim_run(victim, first_seq, victim_rate, seconds)
    sent, elapsed, kicked_at, refused = out.get(timeout=seconds + 120)
    proc.join(30)
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:  # until the gateway has handled the whole flood (or the timeout)
        after = gw.status()["counts"]
        handled = after["dropped_early"] - before["dropped_early"]
        handled += after["rejected"]["BAD_SIGNATURE"] - before["rejected"]["BAD_SIGNATURE"]
        if handled >= sent or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    cpu1 = gw.cpu_seconds()
    main_us = None
    if cpu0 and cpu1 and handled:
        main_us = round((cpu1[0] - cpu0[0]) / handled * 1e6, 1)
    flood = {
        "sent": sent,
        "offered_per_s": round(sent / max(elapsed, 1e-9), 1),
        "handled": handled,
        "dropped_early": after["dropped_early"] - before["dropped_early"],
        "verified": after["rejected"]["BAD_SIGNATURE"] - before["rejected"]["BAD_SIGNATURE"],
        "main_cpu_us": main_us,
        "kicked_after_ms": None if kicked_at is None else round(kicked_at * 1000, 1),
        "refused_connects": refused,
        # What the flooder got through while it was connected (None: never quarantined).
        "rate_until_kicked": round(sent / kicked_at, 1) if kicked_at else None,
    }
    return v, flood


def _rejection_bytes(db_path: Path) -> tuple[int, int]:
    db = sqlite3.connect(db_path)
    try:
        return db.execute(
            "SELECT COUNT(*), COALESCE(SUM(length(envelope) + length(detail) + length(topic)), 0)"
            " FROM rejections"
        ).fetchone()
    finally:
        db.close()


def run_flood_bench(
    workdir: Path,
    flood_rate: float,
    victim_rate: float,
    seconds: float,
    unthrottled: bool,
    settings: dict[str, dict[str, object]] | None = None,
) -> dict:
    """`settings`: gateway.toml keys to set, {section: {key: value}} (e.g. the quarantine off)."""
    home = GatewayHome(workdir / "flood")
    if settings:
        _configure(home.config_path, settings)
    broker = start_broker(home, BROKER_CONFIG)
    gw = GatewayProcess(home, log=workdir / "flood-gateway.log")
    victim = None
    try:
        vkey, vpw = home.add_sim_board()
        fcred = home.add_sim_board()
        fcred_max = home.add_sim_board()  # the first flooder is still quarantined for phase 2
        reload_broker(broker)  # re-read the password file
        gw.start()
        victim = SimBoard("127.0.0.1", home.mqtt_port, vkey, password=vpw).start()
        base = _victim_run(victim, 1, victim_rate, seconds)
        v, f = run_flood_phase(home, gw, victim, fcred, 20_000, flood_rate, victim_rate, seconds)
        result = {
            "flood_seconds": seconds,
            "flood_victim_rate_per_s": victim_rate,
            "baseline_victim_p50_ack_ms": base["p50"],
            "baseline_victim_p99_ack_ms": base["p99"],
            "baseline_victim_acked_ratio": base["acked_ratio"],
            "flood_offered_per_s": f["offered_per_s"],
            "flood_sent": f["sent"],
            "flood_dropped_early": f["dropped_early"],
            "flood_verified": f["verified"],
            "flood_gateway_main_cpu_us_per_msg": f["main_cpu_us"],
            "flood_quarantined_after_ms": f["kicked_after_ms"],
            "flood_refused_reconnects": f["refused_connects"],
            "flood_rate_until_quarantined_per_s": f["rate_until_kicked"],
            "flood_victim_p50_ack_ms": v["p50"],
            "flood_victim_p99_ack_ms": v["p99"],
            "flood_victim_acked_ratio": v["acked_ratio"],
        }
        if unthrottled:
            v, f = run_flood_phase(home, gw, victim, fcred_max, 40_000, 0.0, victim_rate, seconds)
            result.update(
                {
                    "flood_max_offered_per_s": f["offered_per_s"],
                    "flood_max_sent": f["sent"],
                    "flood_max_handled_in_time": f["handled"],
                    "flood_max_quarantined_after_ms": f["kicked_after_ms"],
                    "flood_max_rate_until_quarantined_per_s": f["rate_until_kicked"],
                    "flood_max_victim_p50_ack_ms": v["p50"],
                    "flood_max_victim_p99_ack_ms": v["p99"],
                    "flood_max_victim_acked_ratio": v["acked_ratio"],
                }
            )
        gw.stop()
        rows, size = _rejection_bytes(home.db_path)
        result["flood_rejection_rows"] = rows
        result["flood_rejection_bytes"] = size
        return result
    finally:
        gw.stop()
        if victim is not None:
            victim.stop()
        broker.stop()


def _configure(path: Path, settings: dict[str, dict[str, object]]) -> None:
    """Set keys of the gateway.toml `gateway init` wrote (each key is there once)."""
    lines = path.read_text().splitlines()
    section = ""
    for i, line in enumerate(lines):
        if line.startswith("["):
            section = line.strip("[]")
        key = line.split("=", 1)[0].strip()
        if key in settings.get(section, {}) and not line.startswith("#"):
            lines[i] = f"{key} = {json.dumps(settings[section][key])}"
    path.write_text("\n".join(lines) + "\n")
