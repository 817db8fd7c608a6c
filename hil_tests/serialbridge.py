"""Host side of a serial uplink: pyserial on the board's serial line, uplink to the broker.

The board has no network: its MQTT client writes `TPX D <base64>` lines on a
serial line (firmware/seriallink.py: the socket target's console, a QEMU
board's UART1, or a real ESP32's UART wired to a USB adapter). This bridge
opens that line with pyserial (`socket://127.0.0.1:PORT`, the way QEMU exposes
a UART, or /dev/ttyUSB0), keeps every other line as the console log, and
carries the MQTT byte stream to the broker over TCP, one uplink at a time. It
answers an open with its clock (`TPX K <unix time>`): a board with no NTP sets
its clock from it.

The stream is forwarded, not re-published: the board's own MQTT session runs
end to end (its CONNECT, last will, QoS 1 PUBACKs come from the real broker),
so a lost serial or broker link looks to the broker exactly like a board whose
WiFi dropped. A bridge that terminated MQTT and re-published with paho-mqtt
would answer PUBACKs itself and hide the board's session from the broker.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
import time
from pathlib import Path

import serial


class SerialBridge:
    def __init__(self, url: str, console_path: Path, baudrate: int = 115200):
        self.url = url
        self.ser = serial.serial_for_url(url, baudrate=baudrate, timeout=0.05)
        self.console = open(console_path, "ab")  # noqa: SIM115 - closed in stop()
        self.tcp: socket.socket | None = None
        self.uplinks = 0
        self._wlock = threading.Lock()
        self._clock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_serial, daemon=True, name="serialbridge")

    def start(self) -> SerialBridge:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._close_tcp()
        with contextlib.suppress(Exception):
            self.ser.close()
        with self._clock:
            self.console.close()

    def flush(self) -> None:
        with self._clock:
            if not self.console.closed:
                self.console.flush()

    # -- serial -> console / broker -------------------------------------------------
    def _send(self, line: bytes) -> None:
        with self._wlock, contextlib.suppress(Exception):
            self.ser.write(line)

    def _read_serial(self) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                data = self.ser.read(4096)
            except Exception:  # the board's serial socket went away
                break
            if not data:
                continue
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                self._line(line.rstrip(b"\r"))

    def _line(self, line: bytes) -> None:
        if line.startswith(b"TPX D "):
            tcp = self.tcp
            if tcp is None:
                return
            try:
                tcp.sendall(base64.b64decode(line[6:]))
            except (OSError, ValueError):
                self._close_tcp(tell_board=True)
        elif line.startswith(b"TPX O "):
            self._open(line)
        elif line.startswith(b"TPX C"):
            self._close_tcp()
        else:
            with self._clock:
                if not self.console.closed:
                    self.console.write(line + b"\n")

    def _open(self, line: bytes) -> None:
        self._close_tcp()
        try:
            _, _, host, port = line.decode().split()
            tcp = socket.create_connection((host, int(port)), timeout=5)
        except (OSError, ValueError) as exc:
            self._send(b"TPX E %d\n" % (getattr(exc, "errno", None) or 111))
            return
        tcp.settimeout(None)
        tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tcp = tcp
        self.uplinks += 1
        self._send(b"TPX K %d\n" % int(time.time()))  # the board may set its clock from it
        threading.Thread(target=self._read_tcp, args=(tcp,), daemon=True).start()

    def _close_tcp(self, tell_board: bool = False) -> None:
        tcp, self.tcp = self.tcp, None
        if tcp is not None:
            with contextlib.suppress(OSError):
                tcp.shutdown(socket.SHUT_RDWR)
            tcp.close()
            if tell_board:
                self._send(b"TPX C\n")

    # -- broker -> serial -------------------------------------------------------------
    def _read_tcp(self, tcp: socket.socket) -> None:
        while True:
            try:
                data = tcp.recv(768)
            except OSError:
                data = b""
            if self.tcp is not tcp:
                return  # replaced or closed by the board
            if not data:
                self._close_tcp(tell_board=True)
                return
            self._send(b"TPX D " + base64.b64encode(data) + b"\n")
