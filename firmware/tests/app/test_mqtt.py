"""The firmware's MQTT client on CPython: against a real Mosquitto, and against a
socketpair for the bytes on the wire and the typed errors."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import paho.mqtt.client as paho
import pytest

from terrapin.firmware.mqtt import MQTTClient, MQTTConnectError, MQTTError, MQTTTimeout
from terrapin.tools.devkit.broker import Mosquitto


def connected(broker, client_id="fw-test", **kw) -> MQTTClient:  # type: ignore[no-untyped-def]
    got: list[tuple[bytes, bytes]] = []
    acks: list[int] = []
    c = MQTTClient(
        client_id,
        on_message=lambda t, p: got.append((bytes(t), bytes(p))),
        on_puback=acks.append,
        **kw,
    )
    c.got, c.acks = got, acks  # type: ignore[attr-defined]
    c.connect(socket.create_connection((broker.host, broker.port)))
    return c


def pump(c: MQTTClient, until, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while not until() and time.time() < deadline:
        c.poll(50)
    assert until()


@pytest.mark.mosquitto
def test_publish_subscribe_puback_and_last_will(mosquitto) -> None:
    watcher_got: list[tuple[str, bytes, bool]] = []
    watcher = paho.Client(paho.CallbackAPIVersion.VERSION2)
    watcher.on_message = lambda c, u, m: watcher_got.append((m.topic, m.payload, m.retain))
    watcher.connect(mosquitto.host, mosquitto.port)
    watcher.subscribe("will/#", qos=1)
    watcher.loop_start()
    try:
        c = connected(mosquitto, keepalive=30)
        c.will = (b"will/status", b"offline", True)
        c.close()
        c.connect(socket.create_connection((mosquitto.host, mosquitto.port)))
        c.subscribe(b"echo/+")
        pump(c, lambda: c.n == 0 and c.pid == 1)  # SUBACK read
        pid = c.publish(b"echo/1", b"hello", 1)
        pump(c, lambda: c.got and pid in c.acks)
        assert c.got == [(b"echo/1", b"hello")]
        big = bytes(range(256)) + bytes(200)  # the receive buffer takes 512 bytes (ACKs)
        pid2 = c.publish(b"echo/2", big, 1)
        pump(c, lambda: len(c.got) == 2 and pid2 in c.acks)
        assert c.got[1] == (b"echo/2", big)
        # dropped without DISCONNECT: the broker publishes the last will, retained
        c.sock.close()
        deadline = time.time() + 5
        while not watcher_got and time.time() < deadline:
            time.sleep(0.05)
        assert watcher_got == [("will/status", b"offline", False)]
        # a clean close (DISCONNECT) does not trigger the will
        watcher_got.clear()
        c.connect(socket.create_connection((mosquitto.host, mosquitto.port)))
        c.close(goodbye=True)
        time.sleep(0.5)
        assert watcher_got == []
    finally:
        watcher.loop_stop()
        watcher.disconnect()


@pytest.mark.mosquitto
@pytest.mark.skipif(not shutil.which("mosquitto_passwd"), reason="mosquitto_passwd missing")
def test_bad_password_is_a_typed_error(mosquitto_exe, tmp_path) -> None:
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "board", "right"], check=True)
    # (As root, tools/devkit/broker.py itself keeps mosquitto from dropping to its own user.)
    broker = Mosquitto(tmp_path / "mq", password_file=pw).start()
    try:
        with pytest.raises(MQTTConnectError) as err:
            connected(broker, user="board", password="wrong")
        assert err.value.args[1] in (4, 5)
        ok = connected(broker, user="board", password="right")
        ok.close(goodbye=True)
    finally:
        broker.stop()


class Pair:
    """A socketpair: the client's end, and ours to play the broker."""

    def __init__(self) -> None:
        self.client_sock, self.broker = socket.socketpair()
        self.broker.settimeout(2)

    def connect(self, c: MQTTClient) -> None:
        self.broker.sendall(b"\x20\x02\x00\x00")  # CONNACK accepted, sent ahead
        c.connect(self.client_sock)
        self.read()

    def read(self) -> bytes:
        return self.broker.recv(4096)


def test_resend_sets_dup_and_keeps_the_packet_id() -> None:
    p = Pair()
    c = MQTTClient("dup-test", keepalive=0)
    p.connect(c)
    pid = c.publish(b"t", b"payload", 1)
    first = p.read()
    c.publish(b"t", b"payload", 1, False, pid)
    again = p.read()
    assert first[0] == 0x32 and again[0] == 0x3A, "QoS 1, then QoS 1 + DUP"
    assert first[1:] == again[1:], "same packet id and bytes"


def test_connack_refused_and_bad_packets_are_typed_errors() -> None:
    p = Pair()
    p.broker.sendall(b"\x20\x02\x00\x05")
    with pytest.raises(MQTTConnectError):
        MQTTClient("x").connect(p.client_sock)
    p = Pair()
    c = MQTTClient("x", keepalive=0)
    p.connect(c)
    p.broker.sendall(b"\xf0\x00")  # reserved packet type
    with pytest.raises(MQTTError, match="unexpected packet"):
        c.poll(200)
    p = Pair()
    c = MQTTClient("x", keepalive=0)
    p.connect(c)
    p.broker.sendall(b"\x30\xff\xff\xff\x7f")  # 256 MB publish
    with pytest.raises(MQTTError, match="too large"):
        c.poll(200)
    p = Pair()
    c = MQTTClient("x", keepalive=0)
    p.connect(c)
    p.broker.close()
    with pytest.raises(MQTTError, match="closed"):
        c.poll(200)


def test_no_connack_and_no_pingresp_time_out() -> None:
    p = Pair()
    with pytest.raises(MQTTTimeout):
        MQTTClient("x").connect(p.client_sock, timeout_ms=300)
    p = Pair()
    c = MQTTClient("x", keepalive=1)
    p.connect(c)
    deadline = time.time() + 3
    with pytest.raises(MQTTTimeout, match="PINGRESP"):
        while time.time() < deadline:
            c.poll(100)
    assert b"\xc0\x00" in p.broker.recv(64), "PINGREQ was sent"


def test_incoming_qos1_publish_is_acked_and_split_reads_reassemble() -> None:
    p = Pair()
    got: list[tuple[bytes, bytes]] = []
    c = MQTTClient("x", keepalive=0, on_message=lambda t, m: got.append((bytes(t), bytes(m))))
    p.connect(c)
    packet = b"\x32\x0c\x00\x03a/b\x00\x07hello"
    for i in range(len(packet)):  # one byte at a time
        p.broker.sendall(packet[i : i + 1])
        c.poll(20)
    assert got == [(b"a/b", b"hello")]
    assert p.read() == b"\x40\x02\x00\x07"


def test_oversized_packet_is_dropped_and_the_next_one_handled() -> None:
    p = Pair()
    got: list[tuple[bytes, bytes]] = []
    c = MQTTClient("x", keepalive=0, on_message=lambda t, m: got.append((bytes(t), bytes(m))))
    p.connect(c)
    body = b"\x00\x03a/b" + bytes(1500)  # QoS 0, three times the receive buffer
    big = b"\x30" + bytes([len(body) & 0x7F | 0x80, len(body) >> 7]) + body
    p.broker.sendall(big + b"\x30\x08\x00\x03a/bhey")
    deadline = time.time() + 3
    while not got and time.time() < deadline:
        c.poll(20)
    assert got == [(b"a/b", b"hey")] and c.oversize == 1


class TakesFew:
    """A socket that takes at most `n` bytes per write and is then full again
    until `room()` (a small send buffer, a TLS socket still shaking hands)."""

    def __init__(self, sock: socket.socket, n: int):
        self.sock, self.n, self.full = sock, n, True

    def room(self) -> None:
        self.full = False

    def send(self, data) -> int:  # type: ignore[no-untyped-def]
        if self.full:
            raise BlockingIOError(11, "would block")
        self.full = True
        return self.sock.send(bytes(data[: self.n]))

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.sock, name)


def test_the_session_starts_in_steps_that_never_wait() -> None:
    # start() sends nothing and waits for nothing; connack() writes what the
    # socket takes and says False until the whole CONNACK is in.
    p = Pair()
    sock = TakesFew(p.client_sock, 5)
    c = MQTTClient("stepped", keepalive=0)
    c.start(sock)
    t0 = time.monotonic()
    assert c.connack() is False and c.connack() is False, "nothing written yet"
    steps = 0
    while c.out:
        sock.room()
        assert c.connack() is False
        steps += 1
    connect = p.read()
    assert steps == 5 and connect[0] == 0x10 and b"stepped" in connect, (steps, connect)
    p.broker.sendall(b"\x20")  # half a CONNACK
    assert c.connack() is False and not c.connected
    p.broker.sendall(b"\x02\x00\x00")
    for _ in range(50):
        if c.connack():
            break
        time.sleep(0.01)
    assert c.connected
    assert time.monotonic() - t0 < 1.0, "no step waited"


def test_a_refusal_and_a_closed_socket_end_the_steps_with_typed_errors() -> None:
    p = Pair()
    c = MQTTClient("x")
    c.start(p.client_sock)
    p.broker.sendall(b"\x20\x02\x00\x05")
    deadline = time.time() + 2
    with pytest.raises(MQTTConnectError):
        while time.time() < deadline:
            c.connack()
    p = Pair()
    c = MQTTClient("x")
    c.start(p.client_sock)
    p.broker.close()
    with pytest.raises(MQTTError):
        while time.time() < deadline + 2:
            c.connack()


def test_subacks_are_counted_until_the_broker_answers() -> None:
    p = Pair()
    c = MQTTClient("x", keepalive=0)
    p.connect(c)
    c.subscribe(b"a")
    c.subscribe(b"b")
    assert c.subacks == 2
    p.read()
    p.broker.sendall(b"\x90\x03\x00\x01\x01")  # SUBACK, granted QoS 1
    deadline = time.time() + 2
    while c.subacks == 2 and time.time() < deadline:
        c.poll(20)
    assert c.subacks == 1
    p.broker.sendall(b"\x90\x03\x00\x02\x80")  # refused (a broker ACL)
    with pytest.raises(MQTTError, match="refused"):
        while time.time() < deadline + 2:
            c.poll(20)
    assert c.subacks == 0
