"""Fair ingest under a flood, against a real Mosquitto and the real gateway.

A hostile board (valid broker credentials, its own topic) floods the gateway
with envelopes that carry distinct seqs and a bad signature. Another board
must keep its readings stored and acked quickly; the flood must be dropped
before decode and cost the database a bounded number of bytes; the ACKs to
the flooding board must stay below the broker's max_packet_size so the
gateway is never disconnected. And the admission defaults must not hurt an
honest board that sends a whole outbox at once.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from terrapin.firmware import ack as fw_ack
from terrapin.gateway.protocol.ack import MAX_ACK_BYTES
from terrapin.gateway.protocol.envelope import assemble, encode_payload
from terrapin.gateway.protocol.topics import ack_topic
from terrapin.gateway.store import AUDIT_BURST, MAX_REJECTED_BYTES
from terrapin.tools.devkit.gatewayhome import start_broker
from terrapin.tools.devkit.simboard import SimBoard, board_address

RECORDS = [(f"r{i}", "Cel", 20.0 + i) for i in range(16)]  # a ~700-byte envelope


def forged(address: bytes, seq: int) -> bytes:
    """A well-formed envelope for `address` whose signature does not verify."""
    return assemble(address, encode_payload(seq, int(time.time()), RECORDS), b"\x01" * 64)


class Flooder:
    """A board with real credentials that publishes as fast as paho lets it."""

    def __init__(self, home, key: bytes, password: str):
        self.address = board_address(key)
        self.acks: list[bytes] = []
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="flood-" + self.address.hex())
        c.username_pw_set(self.address.hex(), password)
        c.max_inflight_messages_set(1000)
        c.on_message = lambda cl, u, m: self.acks.append(m.payload)
        c.connect("127.0.0.1", home.mqtt_port)
        c.subscribe(ack_topic(self.address), qos=1)
        c.loop_start()
        self.client = c
        self.topic = f"terrapin/v1/{self.address.hex()}/reading"

    def flood(self, seqs) -> None:
        envs = [forged(self.address, s) for s in seqs]
        for env in envs:
            self.client.publish(self.topic, env, qos=1)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _board(home, broker, reload_broker) -> SimBoard:
    key, pw = home.add_sim_board()
    reload_broker(broker)
    return SimBoard("127.0.0.1", home.mqtt_port, key, password=pw).start()


def _rejection_bytes(db_path) -> tuple[int, int]:
    db = sqlite3.connect(db_path)
    try:
        rows, size = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(length(envelope) + length(detail) + length(topic)), 0)"
            " FROM rejections"
        ).fetchone()
    finally:
        db.close()
    return rows, size


def test_a_flood_of_bad_signatures_does_not_starve_another_board(
    gw_home, gw_broker, gw_board, gw_tools
):
    key, pw = gw_home.add_sim_board()
    gw_tools.reload_broker(gw_broker)
    flooder = Flooder(gw_home, key, pw)
    victim = gw_board
    cfg = gw_home.config
    cfg.mqtt.quarantine_drops = 0  # admission alone (the broker quarantine: test_quarantine_e2e)
    running = gw_tools.GatewayThread(cfg, workers=2).start()
    flood_n = 20_000
    try:
        t = threading.Thread(target=flooder.flood, args=(range(1, flood_n + 1),))
        t.start()
        seqs = list(range(1, 31))
        for s in seqs:  # 10 readings/s while the flood runs
            victim.publish(victim.envelope(s), s)
            time.sleep(0.1)
        t.join(60)
        settled = victim.wait_settled(seqs, 30)
        late = {s: round(victim.ack_latency.get(s, -1), 3) for s in seqs}
        assert settled, f"victim readings not acked: {sorted(set(seqs) - victim.acked)}"
        worst = max(victim.ack_latency[s] for s in seqs)
        assert worst < 2.0, f"victim ACK latency (s) under the flood: {late}"
        # The gateway has handled every flood message by now (dropped or rejected).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            snap = running.gateway.snapshot()
            c = snap["counts"]
            if c["dropped_early"] + c["rejected"]["BAD_SIGNATURE"] >= flood_n:
                break
            time.sleep(0.2)
        assert c["dropped_early"] + c["rejected"]["BAD_SIGNATURE"] == flood_n, c
        assert c["dropped_early"] > flood_n // 2, f"the flood was not dropped before decode: {c}"
        assert c["stored"] == len(seqs)
        assert snap["admission"]["dropped"][flooder.address.hex()] == c["dropped_early"]
    finally:
        running.stop()
        flooder.stop()
    # Flood rejections cost the database a bounded number of bytes: a sample of
    # audit rows, the rest only counted.
    rows, size = _rejection_bytes(gw_home.db_path)
    assert rows <= AUDIT_BURST + 2, f"{rows} rejection rows for one flooding board"
    assert size <= rows * (MAX_REJECTED_BYTES + 400)
    db = sqlite3.connect(gw_home.db_path)
    try:
        counted = db.execute(
            "SELECT count FROM rejection_counts WHERE device=? AND reason=7", (flooder.address,)
        ).fetchone()[0]
    finally:
        db.close()
    assert counted == c["rejected"]["BAD_SIGNATURE"]


def test_many_rejections_never_make_an_ack_the_broker_refuses(gw_home, mosquitto_exe, gw_tools):
    broker = start_broker(gw_home, "max_inflight_messages 1000\nmax_packet_size 4096")
    flooder = victim = running = None
    try:
        key, pw = gw_home.add_sim_board()
        gw_tools.reload_broker(broker)
        victim = _board(gw_home, broker, gw_tools.reload_broker)
        flooder = Flooder(gw_home, key, pw)
        running = gw_tools.GatewayThread(gw_home.config).start()
        # 1,500 rejections with 9-byte seqs: an ACK listing them all is ~16 KB.
        flooder.flood(range(2**40, 2**40 + 1500))
        deadline = time.monotonic() + 30
        while running.counts["rejected"]["BAD_SIGNATURE"] < 1500 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert running.counts["rejected"]["BAD_SIGNATURE"] == 1500, running.counts
        for s in range(1, 21):
            victim.publish(victim.envelope(s), s)
        assert victim.wait_settled(range(1, 21), 15), "the other board's readings stopped"
        assert running.gateway.ingest.connects == 1, "the broker disconnected the gateway"
        assert running.gateway.ingest.connected.is_set()
        time.sleep(0.5)
        assert flooder.acks, "the flooding board got no ACK"
        for payload in flooder.acks:
            assert len(payload) <= MAX_ACK_BYTES
            _ranges, rejections = fw_ack.decode(payload)  # the board reads every one
            assert rejections and all(r == 7 for _, r in rejections)
        log = (broker.log_path.read_text(errors="replace")) if broker.log_path.exists() else ""
        assert "oversize" not in log.lower(), log[-2000:]
    finally:
        if running is not None:
            running.stop()
        for c in (flooder, victim):
            if c is not None:
                c.stop()
        broker.stop()


def test_an_honest_board_sending_its_whole_outbox_at_once_is_stored_exactly_once(
    gw_home, gw_broker, gw_board, gw_tools
):
    board = gw_board
    # The broker keeps the gateway's session; the board publishes while it is away...
    gw_tools.GatewayThread(gw_home.config).start().stop()
    envs = {s: board.envelope(s) for s in range(1, 1201)}
    first = range(1, 601)
    for s in first:
        board.publish(envs[s], s)
    time.sleep(0.5)
    running = gw_tools.GatewayThread(gw_home.config, workers=2).start()
    try:
        # ...then the gateway comes back to a burst; then the board reconnects with a
        # full outbox and sends all of it at once, plus every earlier one again.
        assert board.wait_settled(first, 30), sorted(set(first) - board.acked)[:10]
        second = range(601, 1201)
        for s in second:
            board.publish(envs[s], s)
        for s in first:
            board.client.publish(board.topic, envs[s], qos=1)
        assert board.wait_settled(second, 30), sorted(set(second) - board.acked)[:10]
        deadline = time.monotonic() + 30
        while running.counts["duplicate"] < 600 and time.monotonic() < deadline:
            time.sleep(0.1)
        snap = running.gateway.snapshot()
    finally:
        running.stop()
    gw_tools.check_exactly_once(gw_home.db_path, [board], {board.address: set(envs)})
    c = snap["counts"]
    assert (c["dropped_early"], c["stored"], c["duplicate"], c["rejected_total"]) == (
        0,
        1200,
        600,
        0,
    ), c
