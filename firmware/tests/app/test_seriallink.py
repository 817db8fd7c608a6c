"""The serial uplink (firmware/seriallink.py) on CPython: the framing byte for byte,
then the firmware's MQTT client over it, through the HIL bench's host bridge
(pyserial + TCP) to a real Mosquitto. The same module runs on MicroPython in
the HIL socket target (hil_tests/mp_serial_board.py), polled as on the ESP32."""

from __future__ import annotations

import base64
import io
import os
import socket
import threading
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from terrapin.firmware.mqtt import MQTTClient
from terrapin.firmware.seriallink import SerialLink
from terrapin.hil.serialbridge import SerialBridge
from terrapin.tools.devkit.broker import Mosquitto
from terrapin.tools.micropython import ESP32_HEAP

POLLIN, POLLOUT, MP_STREAM_POLL = 1, 4, 3


class Uart:
    """The board's end of a serial line, read like MicroPython's UART: readline
    returns what has arrived, up to a newline, without waiting for the rest."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    def fileno(self) -> int:
        return self.fd

    def readline(self) -> bytes | None:
        got = b""
        while not got.endswith(b"\n"):
            try:
                byte = os.read(self.fd, 1)
            except BlockingIOError:
                break
            if not byte:
                break  # end of input
            got += byte
        return got


class Line:
    """A serial line in one process: the host writes into a pipe the board reads."""

    def __init__(self) -> None:
        r, self.w = os.pipe()
        self.rx = Uart(r)
        self.tx = io.BytesIO()

    def host(self, data: bytes) -> None:
        os.write(self.w, data)

    def close(self) -> None:
        os.close(self.rx.fd)
        os.close(self.w)


@pytest.fixture
def line():
    ln = Line()
    yield ln
    ln.close()


def opened(line: Line, answer: bytes = b"TPX K 1764500000\n") -> SerialLink:
    line.host(answer)
    return SerialLink(line.rx, line.tx, "gw.local", 1883, open_ms=1000)


def test_open_sends_the_broker_and_takes_the_host_clock(line) -> None:
    link = opened(line)
    assert line.tx.getvalue() == b"TPX O gw.local 1883\n"
    assert link.up and link.host_time == 1764500000


def test_open_skips_what_an_older_uplink_left_on_the_line(line) -> None:
    link = opened(line, b"TPX D AAAA\nTPX C\nTPX K\n")
    assert link.up and link.host_time == 0 and link.rx == b""


def test_open_refused_and_open_timeout_are_oserrors(line) -> None:
    with pytest.raises(OSError) as refused:
        opened(line, b"TPX E 111\n")
    assert refused.value.args[0] == 111
    t0 = time.monotonic()
    with pytest.raises(OSError) as timeout:
        SerialLink(line.rx, line.tx, "gw.local", 1883, open_ms=300)
    assert timeout.value.args[0] == 110 and 0.25 < time.monotonic() - t0 < 2
    assert line.tx.getvalue().endswith(b"TPX C\n")  # a late answer must not open it


def test_open_feeds_the_watchdog(line) -> None:
    fed = []
    with pytest.raises(OSError):
        SerialLink(line.rx, line.tx, "gw.local", 1883, open_ms=300, feed=lambda: fed.append(1))
    assert len(fed) >= 2


def test_blocking_reads_wait_for_data_then_give_up(line) -> None:
    # Until the MQTT client makes it non-blocking (a TLS handshake reads first).
    link = opened(line)
    link.read_ms = 300
    threading.Timer(0.15, line.host, (b"TPX D AQID\n",)).start()
    buf = bytearray(8)
    assert link.readinto(buf) == 3 and bytes(buf[:3]) == b"\x01\x02\x03"
    t0 = time.monotonic()
    with pytest.raises(OSError) as timeout:
        link.readinto(buf)  # the host went quiet: no hanging forever
    assert timeout.value.args[0] == 110 and 0.25 < time.monotonic() - t0 < 2


def test_frames_in_and_out(line) -> None:
    link = opened(line)
    link.setblocking(False)  # as the MQTT client sets it
    payload = bytes(range(200))
    frame = b"TPX D " + base64.b64encode(payload) + b"\n"
    buf = bytearray(64)
    line.host(frame[:50])  # a UART read timeout cuts a line: it is kept, not used
    assert link.readinto(buf) is None and link.up
    line.host(frame[50:])
    got = b""
    while len(got) < len(payload):
        n = link.readinto(buf)
        assert n
        got += bytes(buf[:n])
    assert got == payload
    assert link.write(b"\x10\x02ab") == 4
    assert line.tx.getvalue().endswith(b"TPX D EAJhYg==\n")


def test_poll_readiness_for_an_object_with_no_file_descriptor(line) -> None:
    # On the ESP32 select.poll asks the link itself (ioctl MP_STREAM_POLL).
    link = opened(line)
    assert link.ioctl(10, 0) == -1  # no fd: polled through ioctl
    assert link.ioctl(MP_STREAM_POLL, POLLIN | POLLOUT) == POLLOUT
    line.host(b"TPX D AQID\n")
    assert link.ioctl(MP_STREAM_POLL, POLLIN | POLLOUT) == POLLIN | POLLOUT
    link.readinto(bytearray(8))
    line.host(b"TPX C\n")  # the broker went away: readable, and reads the end
    assert link.ioctl(MP_STREAM_POLL, POLLIN) == POLLIN
    assert link.readinto(bytearray(8)) == 0
    with pytest.raises(OSError):
        link.write(b"x")


@pytest.mark.parametrize(
    "frame",
    [
        b"TPX D AAA\n",  # bad padding: bytes were lost on the wire
        b"TPX D QUJDTPX D QUJD\n",  # a lost newline merged two frames
        b"TPX D QU!D\n",  # a corrupted character
    ],
)
def test_a_damaged_frame_drops_the_uplink(line, frame) -> None:
    link = opened(line)
    line.host(frame)
    assert link.readinto(bytearray(8)) == 0 and not link.up


def test_close_through_ioctl_as_ssl_does(line) -> None:
    # ssl closes the stream it wraps with ioctl(MP_STREAM_CLOSE), not close().
    link = opened(line)
    assert link.ioctl(4, 0) == 0
    assert line.tx.getvalue().endswith(b"TPX C\n") and not link.up


def test_close_says_so_once(line) -> None:
    link = opened(line)
    link.close()
    link.close()
    assert line.tx.getvalue().count(b"TPX C\n") == 1


def test_end_of_input_is_the_end_of_the_uplink(line) -> None:
    link = opened(line)
    os.close(line.w)
    line.w = os.open(os.devnull, os.O_WRONLY)  # for close()
    assert link.readinto(bytearray(8)) == 0


# -- end to end: the firmware's MQTT client over the link, bridge, Mosquitto ----------


class SocketTx:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def write(self, data: bytes) -> int:
        self.sock.sendall(data)
        return len(data)


def test_mqtt_over_the_serial_link_through_the_bridge(tmp_path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []
    t = threading.Thread(target=lambda: accepted.append(server.accept()[0]))
    t.start()
    bridge = SerialBridge(f"socket://127.0.0.1:{port}", tmp_path / "console.log").start()
    t.join(5)
    board = accepted[0]
    rx = board.makefile("rb", buffering=0)
    watcher = paho.Client(CallbackAPIVersion.VERSION2, client_id="watcher")
    seen: list[bytes] = []
    watcher.on_message = lambda c, u, m: seen.append(m.payload)
    try:
        watcher.connect(broker.host, broker.port)
        watcher.subscribe("t/up", qos=1)
        watcher.loop_start()
        board.sendall(b"hello console\n")  # the console shares the line
        got: list[tuple[bytes, bytes]] = []
        acks: list[int] = []
        client = MQTTClient(
            "serial-board",
            on_message=lambda tp, p: got.append((bytes(tp), bytes(p))),
            on_puback=acks.append,
        )
        link = SerialLink(rx, SocketTx(board), broker.host, broker.port, fd=rx.fileno())
        assert abs(link.host_time - time.time()) < 5
        client.connect(link)
        client.subscribe(b"t/down")
        time.sleep(0.2)
        pid = client.publish(b"t/up", b"reading", 1)
        watcher.publish("t/down", b"ack", qos=1)
        deadline = time.monotonic() + 10
        while (pid not in acks or not got or not seen) and time.monotonic() < deadline:
            client.poll(50)
        assert pid in acks  # the PUBACK came from the broker, through the bridge
        assert got == [(b"t/down", b"ack")] and seen == [b"reading"]
        client.close(True)
        assert bridge.uplinks == 1
        bridge.flush()
        assert b"hello console" in (tmp_path / "console.log").read_bytes()
    finally:
        watcher.loop_stop()
        watcher.disconnect()
        bridge.stop()
        board.close()
        server.close()
        broker.stop()


def test_ssl_over_the_link_closes_it_on_micropython(micropython_exe) -> None:
    """MicroPython's ssl closes the wrapped stream with ioctl(MP_STREAM_CLOSE): the
    host must still see TPX C (else the bridge keeps the broker connection)."""
    import subprocess
    from pathlib import Path

    code = (
        "import sys, ssl\n"
        "sys.path.insert(0, '.')\n"
        "from firmware.seriallink import SerialLink\n"
        "link = SerialLink(sys.stdin.buffer, sys.stdout, 'gw.local', 8883)\n"
        "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n"
        "ctx.verify_mode = ssl.CERT_NONE\n"
        "s = ctx.wrap_socket(link, server_hostname='gw.local', do_handshake_on_connect=False)\n"
        "s.close()\n"
        "print('up', link.up)\n"
    )
    out = subprocess.run(
        [micropython_exe, "-X", f"heapsize={ESP32_HEAP}", "-c", code],
        input=b"TPX K 1800000000\n",
        cwd=Path(__file__).resolve().parents[3],
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().splitlines() == ["TPX O gw.local 8883", "TPX C", "up False"]
