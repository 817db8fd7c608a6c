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

A board whose uplink shares UART0 with its console (firmware/sharedline.py)
says `TPX W <window>` when it starts reading and `TPX A <n>` as it takes TPX
lines: from then on the bridge never has more unread TPX bytes on the way
than that window (its 260-byte input ring drops the rest). With
`console=True` the bridge also serves the console's side of the line on
`console_url` (a local TCP serial socket, one client at a time): every byte
that is not a TPX line goes to the client, and the client's bytes go to the
board between whole TPX lines, never inside one.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import socket
import threading
import time
from pathlib import Path

import serial

_FRAME_MIN = 24  # MQTT bytes: a smaller frame waits for more credit (unless that is all)
_HOLD_S = 0.1  # a console write without its newline goes out after this quiet


def frame_payload(room: int) -> int:
    """MQTT bytes that fit a `TPX D <base64>\\n` line of at most `room` bytes."""
    return max(0, 3 * ((room - 7) // 4))


class SerialBridge:
    def __init__(
        self,
        url: str,
        console_path: Path,
        baudrate: int = 115200,
        console: bool = False,
        paced: bool = True,
    ):
        self.url = url
        self.ser = serial.serial_for_url(url, baudrate=baudrate, timeout=0.05)
        self.console = open(console_path, "ab")  # noqa: SIM115 - closed in stop()
        self.tcp: socket.socket | None = None
        self.uplinks = 0
        # Flow control: None until the board gives a window (a UART1 board never does).
        self.paced = paced  # False only to show what the window prevents (tests)
        self.credit: int | None = None
        self.window = 0
        self.windows = 0  # `TPX W` lines seen: one per boot of a UART0 board
        self._out: collections.deque[tuple[socket.socket | None, bytes, bool]] = collections.deque()
        self._cond = threading.Condition()
        self._wlock = threading.Lock()
        self._clock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._read_serial, daemon=True, name="serialbridge"),
            threading.Thread(target=self._sender, daemon=True, name="serialbridge-tx"),
        ]
        # The console's side (console=True).
        self._client: socket.socket | None = None
        self._open_line = False  # the last console byte sent to the board was not "\n"
        self._server: socket.socket | None = None
        self.console_url = ""
        if console:
            self._server = socket.create_server(("127.0.0.1", 0))
            self.console_url = f"socket://127.0.0.1:{self._server.getsockname()[1]}"
            self._threads.append(
                threading.Thread(target=self._serve_console, daemon=True, name="bridge-console")
            )

    def start(self) -> SerialBridge:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._server is not None:
            self._server.close()
        self._drop_client()
        for t in self._threads:
            t.join(5)
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
    def _send(self, line: bytes, tcp: socket.socket | None = None, data: bool = False) -> None:
        """Queue a TPX line (or, with data, MQTT bytes of uplink `tcp`) for the board."""
        with self._cond:
            self._out.append((tcp, line, data))
            self._cond.notify_all()

    def _read_serial(self) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                data = self.ser.read(4096)
            except Exception:  # the board's serial socket went away
                break
            if not data:
                continue
            buf = self._split(buf + data)

    def _split(self, buf: bytes) -> bytes:
        """Hand whole TPX lines to _line and everything else to the console as it
        comes (a REPL prompt has no newline); returns what must wait for more."""
        while buf:
            if buf.startswith(b"TPX "):
                i = buf.find(b"\n")
                if i < 0:
                    return buf
                self._line(buf[:i].rstrip(b"\r"))
                buf = buf[i + 1 :]
            elif b"TPX ".startswith(buf[:4]):
                return buf  # may be the start of a TPX line
            else:
                i = buf.find(b"\n")
                piece, buf = (buf, b"") if i < 0 else (buf[: i + 1], buf[i + 1 :])
                self._to_console(piece)
        return buf

    def _to_console(self, piece: bytes) -> None:
        with self._clock:
            if not self.console.closed:
                self.console.write(piece.replace(b"\r", b""))
        client = self._client
        if client is not None:
            try:
                client.sendall(piece)
            except OSError:
                self._drop_client()

    def _line(self, line: bytes) -> None:
        if line.startswith(b"TPX D "):
            tcp = self.tcp
            if tcp is None:
                return
            try:
                tcp.sendall(base64.b64decode(line[6:], validate=True))
            except (OSError, ValueError):
                self._close_tcp(tell_board=True)
        elif line.startswith(b"TPX A "):
            with self._cond:
                if self.credit is not None:
                    self.credit += int(line[6:])
                self._cond.notify_all()
        elif line.startswith(b"TPX W "):
            with self._cond:
                self.credit = self.window = int(line[6:])
                self.windows += 1
                self._cond.notify_all()
        elif line.startswith(b"TPX O "):
            self._open(line)
        elif line.startswith(b"TPX C"):
            self._close_tcp()
        else:
            self._to_console(line + b"\n")

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
            self._send(data, tcp, data=True)

    def _next_line(self) -> bytes | None:
        """The next TPX line the credit allows (waits for it); None when stopping."""
        with self._cond:
            while not self._stop.is_set():
                if not self._out:
                    self._cond.wait(0.2)
                    continue
                tcp, item, data = self._out[0]
                if data and tcp is not self.tcp:
                    self._out.popleft()  # an older uplink's bytes
                    continue
                room = self.credit if self.paced and self.credit is not None else None
                if not data:
                    if room is not None and room < len(item):
                        self._cond.wait(0.2)
                        continue
                    self._out.popleft()
                    line = item
                else:
                    n = len(item)
                    if room is not None:
                        n = min(n, frame_payload(room), frame_payload(self.window))
                        if n < min(len(item), _FRAME_MIN):
                            self._cond.wait(0.2)
                            continue
                    if n < len(item):
                        self._out[0] = (tcp, item[n:], True)
                    else:
                        self._out.popleft()
                    line = b"TPX D " + base64.b64encode(item[:n]) + b"\n"
                if self.credit is not None:
                    self.credit -= len(line)
                return line
        return None

    def _sender(self) -> None:
        while (line := self._next_line()) is not None:
            with self._wlock:
                if self._open_line:
                    line = b"\n" + line  # a console write left without its newline ends here
                    self._open_line = False
                with contextlib.suppress(Exception):
                    self.ser.write(line)

    # -- the console's side of a shared line (console=True) ------------------------
    def _serve_console(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._drop_client()
            self._client = conn
            threading.Thread(target=self._from_console, args=(conn,), daemon=True).start()

    def _from_console(self, conn: socket.socket) -> None:
        """The client's bytes to the board, a whole line at a time where it can
        (a TPX line never lands inside one); a REPL control byte after _HOLD_S."""
        held = b""
        conn.settimeout(_HOLD_S)
        while not self._stop.is_set():
            try:
                data = conn.recv(4096)
                if not data:
                    break
            except TimeoutError:
                data = b""
            except OSError:
                break
            held += data
            cut = held.rfind(b"\n") + 1 if data else len(held)
            if cut:
                with self._wlock:
                    with contextlib.suppress(Exception):
                        self.ser.write(held[:cut])
                    self._open_line = not held[:cut].endswith(b"\n")
                held = held[cut:]
        if self._client is conn:
            self._drop_client()

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(OSError):
                client.close()
