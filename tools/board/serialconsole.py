"""Host side of a board's serial console: opening the port, the TP1 console
protocol (firmware/console.py is the board side) and MicroPython's raw REPL.

Ports are pyserial URLs: a device path (/dev/ttyUSB0, /dev/pts/7) or
`socket://127.0.0.1:PORT` (a QEMU `-serial tcp::PORT,server` board or a
virtual board's TCP bridge). Errors become TerrapinError with a hint a person
can act on.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from collections.abc import Callable

import serial

from terrapin.gateway.errors import TerrapinError

PREFIX = b"TP1 "
LINK_PREFIX = b"TPX "  # the serial uplink's frames (firmware/seriallink.py), not console
DIALOUT_HINT = (
    "add yourself to the dialout group: sudo usermod -aG dialout $USER, then log in again"
)


class PortError(TerrapinError):
    """The serial port could not be opened (missing, busy, no permission)."""


class BoardError(TerrapinError):
    """The board answered `TP1 ERR <code> <text>`."""

    def __init__(self, code: str, text: str):
        super().__init__(f"the board refused: {code} {text}")
        self.code = code
        self.text = text


class NoAnswer(TerrapinError):
    """The board did not answer in time."""


def _errno_of(exc: BaseException) -> int | None:
    code = getattr(exc, "errno", None)
    if code:
        return code
    text = str(exc)
    for name, num in (
        ("Errno 2]", errno.ENOENT),
        ("Errno 13]", errno.EACCES),
        ("Errno 16]", errno.EBUSY),
        ("Errno 11]", errno.EAGAIN),
    ):
        if name in text:
            return num
    return None


def port_error(port: str, exc: BaseException) -> PortError:
    """Turn a pyserial/OS error on `port` into a message a hobbyist can act on."""
    text = str(exc)
    code = _errno_of(exc)
    if "exclusively lock" in text or code in (errno.EBUSY, errno.EAGAIN):
        return PortError(
            f"serial port {port} is busy (another program has it open)",
            hint="close the other program (a serial monitor, mpremote, screen, an IDE) and retry",
        )
    if code == errno.EACCES or "Permission denied" in text:
        return PortError(f"no permission to open serial port {port}", hint=DIALOUT_HINT)
    if code == errno.ENOENT or "No such file" in text:
        return PortError(
            f"serial port {port} does not exist",
            hint="plug the board in and check the port name (ls /dev/ttyUSB* /dev/ttyACM*)",
        )
    if code == errno.ECONNREFUSED or "refused" in text.lower():
        return PortError(f"nothing listens on {port}", hint="start the virtual board or QEMU first")
    return PortError(f"cannot open serial port {port}: {text}")


def _no_delay(fd: int) -> None:
    """TCP_NODELAY on the socket behind `fd` (a dup of it: the option is the socket's)."""
    with socket.socket(fileno=os.dup(fd)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def open_port(port: str, baudrate: int = 115200, timeout: float = 0.2) -> serial.SerialBase:
    """Open a device path or a pyserial URL; raise PortError with a hint."""
    if "://" not in port and not os.path.exists(port):
        raise port_error(port, FileNotFoundError(errno.ENOENT, "No such file", port))
    try:
        if "://" in port:
            ser = serial.serial_for_url(port, baudrate=baudrate, timeout=timeout)
            if port.startswith("socket://"):  # small exchanges: no Nagle delay
                _no_delay(ser.fileno())
        else:
            ser = serial.Serial(baudrate=baudrate, timeout=timeout, exclusive=True)
            ser.port = port
            # ESP32 dev boards wire DTR/RTS to GPIO0/EN (esptool's auto-reset):
            # keep both released so opening the port neither resets the board
            # nor holds it in the bootloader (as mpremote does).
            ser.dtr = False
            ser.rts = False
            ser.open()
    except (serial.SerialException, OSError) as exc:
        raise port_error(port, exc) from exc
    return ser


class Transcript:
    """Everything the host received and sent, for logs and test assertions."""

    def __init__(self, sink: Callable[[bytes], None] | None = None):
        self.received = bytearray()
        self.sent = bytearray()
        self.sink = sink

    def rx(self, data: bytes) -> None:
        self.received += data
        if self.sink is not None and data:
            self.sink(data)

    def tx(self, data: bytes) -> None:
        self.sent += data


class Link:
    """A serial line with a receive buffer and a transcript."""

    def __init__(self, ser: serial.SerialBase, transcript: Transcript | None = None):
        self.ser = ser
        self.buf = bytearray()
        self.transcript = transcript or Transcript()

    def write(self, data: bytes) -> None:
        self.transcript.tx(data)
        self.ser.write(data)
        self.ser.flush()

    def fill(self) -> bool:
        data = self.ser.read(max(1, self.ser.in_waiting or 1))
        if data:
            self.transcript.rx(data)
            self.buf += data
            return True
        return False

    def read_until(self, marker: bytes, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                out = bytes(self.buf[: i + len(marker)])
                del self.buf[: i + len(marker)]
                return out
            if time.monotonic() > deadline:
                raise NoAnswer(
                    f"no {marker!r} from the board within {timeout:.0f} s",
                    hint="last bytes seen: " + bytes(self.buf[-200:]).decode("utf-8", "replace"),
                )
            self.fill()

    def read_exact(self, n: int, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            if time.monotonic() > deadline:
                raise NoAnswer(f"the board sent {len(self.buf)} of {n} expected bytes")
            self.fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def pending(self) -> bool:
        """Bytes from the board are waiting (buffered or in the port)."""
        return bool(self.buf) or bool(self.ser.in_waiting)

    def read_line(self, timeout: float) -> bytes:
        """The next line that is not a serial-uplink frame (`TPX ...`: a board whose
        uplink shares the console's UART, docs/PROTOCOL.md section 11b)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.read_until(b"\n", max(0.0, deadline - time.monotonic()))
            if not line.startswith(LINK_PREFIX):
                return line

    def drain(self, quiet: float = 0.2) -> bytes:
        """Read and drop what arrives until the line is quiet for `quiet` s."""
        end = time.monotonic() + quiet
        while time.monotonic() < end:
            if self.fill():
                end = time.monotonic() + quiet
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def close(self) -> None:
        self.ser.close()


def parse_line(raw: bytes) -> tuple[bytes, str | None, bytes] | None:
    """A TP1 line from the board -> (kind, request id or None, rest); None if not TP1.

    `TP1 OK #7 {...}` -> (b"OK", "7", b"{...}"); `TP1 EV {...}` -> (b"EV", None, b"{...}").
    """
    raw = raw.strip()
    if not raw.startswith(PREFIX):
        return None
    kind, _, rest = raw[len(PREFIX) :].partition(b" ")
    rid = None
    if kind in (b"OK", b"ERR") and rest.startswith(b"#"):
        word, _, rest = rest.partition(b" ")
        rid = word[1:].decode("ascii", "replace")
    return kind, rid, rest


class RequestIds:
    """Request ids for TP1 (`TP1 #<id> <command>`): unique per host session, so an
    answer is matched to its own request and a late one is recognised as stale."""

    def __init__(self) -> None:
        # A per-session prefix keeps ids apart from another host's earlier session.
        self._prefix = os.urandom(3).hex()
        self._n = 0

    def next(self) -> str:
        self._n += 1
        return f"{self._prefix}{self._n}"


def answer_of(rid: str, kind: bytes, got: str | None, rest: bytes, command: str) -> dict | None:
    """The JSON answer if this OK/ERR line answers request `rid`; None for a stale one.

    BoardError for the board's ERR; a firmware too old to echo ids answers our id
    as an unknown command, which becomes an error saying so."""
    if got == rid:
        if kind == b"OK":
            return json.loads(rest or b"{}")
        code, _, text = rest.decode("utf-8", "replace").partition(" ")
        raise BoardError(code, text)
    if (
        got is None
        and kind == b"ERR"
        and rest.startswith(b"BAD_COMMAND unknown command #" + rid.encode())
    ):
        raise BoardError(
            "BAD_COMMAND",
            f"the firmware does not know TP1 request ids (`{command}` was not run): "
            "update it with `terrapin device deploy`",
        )
    return None  # the answer to an earlier request (one that timed out): not ours


class BoardConsole:
    """The TP1 console protocol, one request at a time, each with its own id."""

    def __init__(
        self,
        link: Link,
        on_event: Callable[[dict], None] | None = None,
        reboot_timeout: float = 60.0,
    ):
        self.link = link
        self.on_event = on_event
        self.events: list[dict] = []
        self.ids = RequestIds()
        self.stale = 0  # answers to earlier requests that arrived late and were dropped
        self.reboot_timeout = reboot_timeout  # a reboot into console mode, and back
        self.switched = False  # this session rebooted the running app into console mode

    def request(self, command: str, *args: str, timeout: float = 10.0) -> dict:
        """One request; a command the running app leaves to console mode (ERR
        CONSOLE_MODE) is asked again after the board reboots into it."""
        try:
            return self._request(command, *args, timeout=timeout)
        except BoardError as exc:
            if exc.code != "CONSOLE_MODE" or self.switched:
                raise
        self.enter_console_mode()
        return self._request(command, *args, timeout=timeout)

    def enter_console_mode(self) -> dict:
        """`console`, then `info` polls until the board answers from console mode
        (the answer to `console` itself may be cut off by the reset)."""
        with contextlib.suppress(NoAnswer):
            self._request("console", timeout=5.0)
        self.switched = True
        deadline = time.monotonic() + self.reboot_timeout
        while True:
            info = self.wait_ready(max(1.0, deadline - time.monotonic()))
            if info.get("mode") != "app":
                return info
            if time.monotonic() > deadline:  # an answer from before the reset
                raise NoAnswer(
                    f"the board did not come back in console mode within "
                    f"{self.reboot_timeout:.0f} s",
                    hint="`terrapin device monitor` shows its console",
                )
            time.sleep(0.5)

    def leave_console_mode(self) -> None:
        """Back to the app if this session took the board into console mode: `reboot`
        (the board resets; its answer may not make it out)."""
        if self.switched:
            self.switched = False
            with contextlib.suppress(NoAnswer):
                self._request("reboot", timeout=5.0)

    def _request(self, command: str, *args: str, timeout: float = 10.0) -> dict:
        rid = self.ids.next()
        line = " ".join((f"#{rid}", command, *args))
        self.link.write(PREFIX + line.encode() + b"\n")
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoAnswer(
                    f"the board did not answer `{command}` within {timeout:.0f} s",
                    hint="is the firmware running? `terrapin device monitor` shows its console",
                )
            parsed = parse_line(self.link.read_line(left))
            if parsed is None:
                continue  # log output of the app
            kind, got, rest = parsed
            if kind == b"EV":
                self._event(rest)
            elif kind in (b"OK", b"ERR"):
                answer = answer_of(rid, kind, got, rest, command)
                if answer is not None:
                    return answer
                self.stale += 1

    def _event(self, rest: bytes) -> None:
        try:
            ev = json.loads(rest)
        except ValueError:
            return
        self.events.append(ev)
        if self.on_event is not None:
            self.on_event(ev)

    def wait_ready(self, timeout: float = 10.0) -> dict:
        """Ask `info` until the board answers (it may still be booting)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                left = deadline - time.monotonic()
                return self._request("info", timeout=min(2.0, max(0.1, left)))
            except NoAnswer:
                if time.monotonic() > deadline:
                    raise


class RawReplError(TerrapinError):
    """Code run on the board over the raw REPL raised an exception."""


class RawRepl:
    """MicroPython's raw REPL (Ctrl-A) over a Link: the protocol mpremote uses.

    Code goes in raw-paste mode (the board grants windows of bytes with \\x01,
    so a fast host cannot overrun the UART's receive buffer) when the board
    supports it, else in 256-byte pieces 10 ms apart, as pyboard.py does.
    """

    BANNER = b"raw REPL; CTRL-B to exit\r\n>"
    PACE = 0.01

    def __init__(self, link: Link):
        self.link = link
        self.raw_paste: bool | None = None  # None: not tried yet

    def enter(self, timeout: float = 5.0) -> None:
        self.link.write(b"\r\x03\x03")  # stop the running app
        time.sleep(0.1)
        self.link.drain(0.2)
        self.link.write(b"\r\x01")
        try:
            self.link.read_until(self.BANNER, timeout)
        except NoAnswer as exc:
            raise NoAnswer(
                "the board did not enter the raw REPL",
                hint="is MicroPython running on it? flash it first with `terrapin device flash`",
            ) from exc

    def recover(self, timeout: float = 5.0) -> None:
        """After a call that stalled: Ctrl-D ends a half-sent raw paste (the board
        then reports the cut code's error, or runs an empty buffer), Ctrl-C stops
        code still running, and the raw REPL is entered again."""
        self.link.write(b"\x04")
        time.sleep(0.1)
        self.enter(timeout)

    def exec(self, code: str | bytes, timeout: float = 20.0) -> bytes:
        data = code.encode() if isinstance(code, str) else code
        if self.raw_paste is not False and self._try_paste(data, timeout):
            pass
        else:
            for i in range(0, len(data), 256):
                self.link.write(data[i : i + 256])
                time.sleep(self.PACE)
            self.link.write(b"\x04")
            ok = self.link.read_exact(2, timeout)
            if ok != b"OK":
                raise RawReplError(f"unexpected answer to raw REPL code: {ok!r}")
        out = self.link.read_until(b"\x04", timeout)[:-1]
        err = self.link.read_until(b"\x04", timeout)[:-1]
        self.link.read_until(b">", timeout)
        if err:
            raise RawReplError(
                "code failed on the board: " + err.decode("utf-8", "replace").strip()
            )
        return out

    def _try_paste(self, data: bytes, timeout: float) -> bool:
        self.link.write(b"\x05A\x01")
        answer = self.link.read_exact(2, timeout)
        if answer != b"R\x01":
            if answer != b"R\x00":  # a MicroPython too old to know the request
                self.link.read_until(self.BANNER, timeout)
            self.raw_paste = False
            return False
        self.raw_paste = True
        window = int.from_bytes(self.link.read_exact(2, timeout), "little")
        remain, i = window, 0
        while i < len(data):
            while remain == 0 or self.link.pending():
                flag = self.link.read_exact(1, timeout)
                if flag == b"\x01":
                    remain += window
                elif flag == b"\x04":  # the board ended the paste early
                    self.link.write(b"\x04")
                    return True
                else:
                    raise RawReplError(f"unexpected byte during raw paste: {flag!r}")
            piece = data[i : i + remain]
            self.link.write(piece)
            remain -= len(piece)
            i += len(piece)
        self.link.write(b"\x04")
        self.link.read_until(b"\x04", timeout)
        return True

    def eval(self, expr: str, timeout: float = 20.0) -> str:
        return self.exec(f"print(repr({expr}))", timeout).decode().strip()

    def exit(self) -> None:
        self.link.write(b"\r\x02")

    def soft_reset(self) -> None:
        """Leave the raw REPL and soft-reboot, so main.py runs again."""
        self.link.write(b"\r\x02")
        time.sleep(0.05)
        self.link.write(b"\x04")
