"""Broker quarantine, against a real Mosquitto (with the dynamic security plugin the
generated mosquitto.conf loads) and the real gateway.

A board that floods is disconnected by the broker and refused until its cooldown
ends, then let in again; the other board's readings are all stored and acked;
a board cannot get another board quarantined (the ACL keeps it off other
boards' topics); the operator can lift a quarantine; a restarted gateway picks
up a quarantine that is still running.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
import urllib.request

from click.testing import CliRunner

from terrapin.gateway.protocol.envelope import assemble, encode_payload
from terrapin.gateway.protocol.topics import reading_topic
from terrapin.tools.bench.gateway_flood import _connect_packet, _packet
from terrapin.tools.cli.gateway import gateway as gateway_cli
from terrapin.tools.devkit.simboard import board_address

COOLDOWN = 4.0  # s: the test's first cooldown (the default is 60)
GRACE = 1.0  # s: the test's drop window, and the grace after each connect (default 10)
CONNACK_REFUSED = 5  # MQTT 3.1.1 "not authorised"


def connack(port: int, user: str, password: str) -> int:
    """The CONNACK return code a fresh MQTT 3.1.1 connection with these credentials gets."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(_connect_packet("probe", user, password))
        got = b""
        with contextlib.suppress(OSError):
            while len(got) < 4:
                more = s.recv(4 - len(got))
                if not more:
                    break
                got += more
    if len(got) == 4 and got[0] == 0x20:
        return got[3]
    raise AssertionError(f"no CONNACK from the broker: {got!r}")


class RawFlooder:
    """A board (real credentials) writing pre-encoded QoS 1 PUBLISH packets as fast as
    one socket goes; `closed` is set when the broker drops the connection."""

    def __init__(self, port: int, key: bytes, password: str):
        self.address = board_address(key)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(_connect_packet("flood", self.address.hex(), password))
        if self.sock.recv(4) != b"\x20\x02\x00\x00":
            raise AssertionError("the broker refused the flooding board")
        self.closed = threading.Event()
        self.sent = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with contextlib.suppress(OSError):
            while self.sock.recv(65536):
                pass
        self.closed.set()

    def flood(self, topic_address: bytes, seqs) -> None:
        """Forged envelopes (bad signature, distinct seqs) on `topic_address`'s topic."""
        topic = reading_topic(topic_address).encode()
        head = len(topic).to_bytes(2, "big") + topic
        t = int(time.time())
        packets = [
            _packet(
                0x32,
                head
                + (i % 65535 + 1).to_bytes(2, "big")
                + assemble(self.address, encode_payload(s, t, (("t", "Cel", 1.0),)), b"\1" * 64),
            )
            for i, s in enumerate(seqs)
        ]
        with contextlib.suppress(OSError):  # the broker hung up: quarantined
            for i in range(0, len(packets), 100):
                self.sock.sendall(b"".join(packets[i : i + 100]))
                self.sent = i + 100

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _gateway(gw_home, gw_tools):
    cfg = gw_home.config
    cfg.mqtt.quarantine_seconds = COOLDOWN
    cfg.mqtt.quarantine_window = GRACE  # also the grace after a connect
    return gw_tools.GatewayThread(cfg, workers=2).start()


def test_a_flooding_board_is_shut_out_at_the_broker_and_let_in_after_its_cooldown(
    gw_home, gw_broker, gw_board, gw_tools
):
    key, pw = gw_home.add_sim_board()
    gw_tools.reload_broker(gw_broker)
    victim = gw_board
    running = _gateway(gw_home, gw_tools)
    flooder = RawFlooder(gw_home.mqtt_port, key, pw)
    time.sleep(GRACE)
    try:
        # A board cannot get another board quarantined: on the victim's topic the
        # broker ACL drops its publishes, so the gateway never counts them.
        flooder.flood(victim.address, range(1, 5001))
        time.sleep(1.0)
        assert not flooder.closed.is_set(), "the flooder was disconnected for another's topic"
        assert running.gateway.snapshot()["quarantine"]["active"] == {}
        # Now its own topic, while the victim sends 10 readings/s.
        t = threading.Thread(target=flooder.flood, args=(flooder.address, range(1, 60_001)))
        t.start()
        seqs = list(range(1, 31))
        for s in seqs:
            victim.publish(victim.envelope(s), s)
            time.sleep(0.1)
        t.join(60)
        assert flooder.closed.wait(10), "the broker never disconnected the flooding board"
        assert flooder.sent < 60_000, "the whole flood got through"
        q = running.gateway.snapshot()["quarantine"]
        assert q["broker_support"] is True, q
        assert list(q["active"]) == [flooder.address.hex()], q
        assert q["active"][flooder.address.hex()]["offence"] == 1
        # Refused while the cooldown runs; the victim is not.
        assert connack(gw_home.mqtt_port, flooder.address.hex(), pw) == CONNACK_REFUSED
        status = CliRunner().invoke(gateway_cli, ["status", "--config", str(gw_home.config_path)])
        assert f"QUARANTINED at the broker: {flooder.address.hex()}" in status.output, status.output
        url = f"http://127.0.0.1:{gw_home.api_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            metrics = resp.read().decode()
        assert re.search(r"^terrapin_gateway_quarantined_boards 1(\.0)?$", metrics, re.M), metrics
        assert re.search(r"^terrapin_gateway_quarantined_total 1(\.0)?$", metrics, re.M)
        assert victim.wait_settled(seqs, 30), sorted(set(seqs) - victim.acked)
        assert victim.client.is_connected(), "the victim was disconnected"
        # After the cooldown the board is let in again.
        deadline = time.monotonic() + COOLDOWN + 5
        while running.gateway.snapshot()["quarantine"]["active"] and time.monotonic() < deadline:
            time.sleep(0.2)
        q = running.gateway.snapshot()["quarantine"]
        assert q["active"] == {} and q["released_total"] == 1, q
        time.sleep(0.3)  # the broker handles the deleteClient
        assert connack(gw_home.mqtt_port, flooder.address.hex(), pw) == 0
        snap = running.gateway.snapshot()
    finally:
        flooder.close()
        running.stop()
    assert snap["counts"]["stored"] == len(seqs)
    gw_tools.check_exactly_once(gw_home.db_path, [victim], {victim.address: set(seqs)})
    log = gw_broker.log_path.read_text(errors="replace")
    assert "disconnected, not authorised" in log


def test_the_operator_lifts_a_quarantine_and_a_restarted_gateway_keeps_one(
    gw_home, gw_broker, gw_tools
):
    key, pw = gw_home.add_sim_board()
    key2, pw2 = gw_home.add_sim_board()
    gw_tools.reload_broker(gw_broker)
    running = _gateway(gw_home, gw_tools)
    a, b = RawFlooder(gw_home.mqtt_port, key, pw), RawFlooder(gw_home.mqtt_port, key2, pw2)
    time.sleep(GRACE)
    try:
        for f in (a, b):
            f.flood(f.address, range(1, 20_001))
            assert f.closed.wait(10), "the broker never disconnected the flooding board"
        # `terrapin gateway device release` (the CLI, as an operator runs it).
        args = ["device", "release", a.address.hex(), "--config", str(gw_home.config_path)]
        out = CliRunner().invoke(gateway_cli, args)
        assert out.exit_code == 0, out.output
        deadline = time.monotonic() + 5
        while a.address.hex() in running.gateway.snapshot()["quarantine"]["active"]:
            assert time.monotonic() < deadline, "the operator's release was not done"
            time.sleep(0.1)
        assert running.gateway.ingest.quarantine.release(a.address) is False  # not any more
        time.sleep(0.3)
        assert connack(gw_home.mqtt_port, a.address.hex(), pw) == 0
        assert connack(gw_home.mqtt_port, b.address.hex(), pw2) == CONNACK_REFUSED
    finally:
        a.close()
        b.close()
        running.stop()
    # A new gateway process finds b's quarantine at the broker and ends it on time.
    running = _gateway(gw_home, gw_tools)
    try:
        deadline = time.monotonic() + 5
        while not running.gateway.snapshot()["quarantine"]["active"]:
            assert time.monotonic() < deadline, "the restarted gateway lost the quarantine"
            time.sleep(0.1)
        assert list(running.gateway.snapshot()["quarantine"]["active"]) == [b.address.hex()]
        assert connack(gw_home.mqtt_port, b.address.hex(), pw2) == CONNACK_REFUSED
        deadline = time.monotonic() + COOLDOWN + 5
        while running.gateway.snapshot()["quarantine"]["active"]:
            assert time.monotonic() < deadline, "the quarantine never ended"
            time.sleep(0.2)
        time.sleep(0.3)
        assert connack(gw_home.mqtt_port, b.address.hex(), pw2) == 0
    finally:
        running.stop()


def test_without_the_plugin_the_gateway_says_so_once_and_admission_alone_applies(
    gw_home, mosquitto_exe, gw_tools, caplog
):
    from terrapin.tools.devkit.broker import Mosquitto

    mq = gw_home.dir / "mosquitto"  # an older mosquitto.conf: same files, no plugin line
    broker = Mosquitto(
        mq / "old", port=gw_home.mqtt_port, password_file=mq / "passwd", acl_file=mq / "acl"
    )
    key, pw = gw_home.add_sim_board()
    broker.start()
    running = None
    try:
        running = _gateway(gw_home, gw_tools)
        flooder = RawFlooder(gw_home.mqtt_port, key, pw)
        time.sleep(GRACE)
        flooder.flood(flooder.address, range(1, 5001))
        deadline = time.monotonic() + 10
        while running.gateway.snapshot()["quarantine"]["broker_support"] is not False:
            assert time.monotonic() < deadline, "the gateway never noticed the missing plugin"
            time.sleep(0.2)
        assert not flooder.closed.is_set()  # nobody can shut it out at this broker
        assert running.gateway.ingest.connected.is_set()
        flooder.close()
    finally:
        if running is not None:
            running.stop()
        broker.stop()
    said = [r for r in caplog.records if "does not answer" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
