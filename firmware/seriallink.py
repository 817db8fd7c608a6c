# MQTT over a serial line, for a board without WiFi: an ESP32 whose UART is
# wired to a host (or a QEMU board's -serial), and the HIL bench's socket
# target. The host end is hil_tests/serialbridge.py (pyserial + one TCP
# connection to the broker per uplink). Frames are text lines, so the line
# may also carry a console (the unix port's stdin/stdout):
#
#   board -> host   TPX O <host> <port>     open the uplink to the broker
#                   TPX D <base64>          MQTT bytes for the broker
#                   TPX C                   close the uplink
#   host -> board   TPX K [<unix time>]     uplink open (and the host's clock)
#                   TPX E <errno>           uplink failed
#                   TPX D <base64>          MQTT bytes from the broker
#                   TPX C                   the broker closed the uplink
#
# On UART0 (serial_uplink.uart 0: a board whose other UARTs do not reach the
# host) the frames share the REPL UART with the TP1 console: sharedline.py
# takes the line apart and adds flow control (`TPX W`, `TPX A`: the host never
# has more unread TPX bytes on the way than the board's input ring holds).
#
# The bytes are forwarded, not re-published: the board's own MQTT session
# (CONNECT, will, QoS 1) runs end to end with the broker. A frame that is not
# clean base64 (a lost newline merges two, a lost byte breaks the padding)
# drops the uplink, like a reset TCP connection; the outbox resends.
#
# SerialLink is a socket-like stream for mqtt.py, and can be wrapped by ssl.
# Pure logic: imports nothing from machine or network.

import io
import select
from binascii import a2b_base64, b2a_base64

from .compat import const, ticks_diff, ticks_ms
from .sockerr import ECONNREFUSED, ECONNRESET, ETIMEDOUT

_POLL = const(3)  # MP_STREAM_POLL
_GET_FILENO = const(10)  # MP_STREAM_GET_FILENO
_POLLIN = const(1)
_POLLOUT = const(4)
_STREAM_CLOSE = const(4)  # MP_STREAM_CLOSE: how ssl closes the stream it wraps
_OPEN_MS = const(8000)  # longer than the bridge's 5 s connect: no stale answers
_READ_MS = const(10000)  # a blocking read (the TLS handshake) gives up after this

_DEFAULTS = {"uart": 1, "baud": 115200, "tx": None, "rx": None, "rxbuf": 4096}


def check_config(given, c, warnings, merge, board="unix"):
    # The config's serial_uplink section with its defaults (config.validate
    # calls this with its checker and merge). uart 0 is the REPL UART, shared
    # with the console (its pins and speed are the REPL's).
    if not isinstance(given, dict):
        c.fail('serial_uplink must be an object like {"uart": 1, "tx": 25, "rx": 26}')
        return given
    s = merge(_DEFAULTS, given, "serial_uplink.", warnings)
    c.int_range(s, "uart", "serial_uplink.uart", 0, 2)
    if s["uart"] == 0:
        for pin in ("tx", "rx"):
            if s[pin] is not None:
                c.fail("serial_uplink.%s must not be set with uart 0 (the REPL UART's pins)" % pin)
        return s
    c.int_range(s, "baud", "serial_uplink.baud", 9600, 2000000)
    c.int_range(s, "rxbuf", "serial_uplink.rxbuf", 256, 32768)
    for pin in ("tx", "rx"):
        if s[pin] is not None:
            c.int_range(s, pin, "serial_uplink." + pin, 0, 48)
        elif board == "esp32":
            # UART1's default pins (9, 10) are the flash on ESP32 modules, and
            # UART2's (16, 17) the PSRAM on WROVER ones: name the wired GPIOs.
            c.fail("serial_uplink.%s must name the GPIO wired to the host (e.g. 25, 26)" % pin)
    return s


class SerialLink(io.IOBase):
    def __init__(
        self, rx, tx, host, port, fd=-1, open_ms=_OPEN_MS, feed=None, wait=True, on_open=None
    ):
        # rx: a readable stream select.poll accepts (a UART, stdin); tx: where
        # frames are written. fd: rx's file descriptor where it has one (the
        # unix port), so a poll on the link sleeps in the OS; -1 makes poll ask
        # ioctl(MP_STREAM_POLL), as every object is polled on the ESP32.
        # feed: called while waiting (the board's watchdog).
        # wait=False: return at once with the open request sent; the caller
        # (the uplink's supervisor) calls opened() from its main loop until it
        # says True, so the board never blocks on a host that does not answer.
        # on_open(link): called when the host has opened the uplink.
        # Blocking (reads wait up to _READ_MS, for a TLS handshake) until
        # setblocking(False), which the MQTT client sets.
        self.rx_stream = rx
        self.tx = tx
        self.fd = fd
        self.feed = feed
        self.blocking = True
        self.read_ms = _READ_MS
        self.part = b""  # a line cut by a UART read timeout
        self.rx = b""  # MQTT bytes from the broker, not read yet
        self.up = False
        self.host_time = 0
        self.poller = select.poll()
        self.poller.register(rx, select.POLLIN)
        self.on_open = on_open
        self.open_ms = open_ms
        self.opening = True
        if hasattr(rx, "attach"):
            rx.attach(True)  # a shared line (sharedline.py): its TPX lines are ours now
        tx.write(("TPX O %s %d\n" % (host, port)).encode())
        self.open_at = ticks_ms()
        while wait and not self.opened():
            if feed is not None:
                feed()
            self.poller.poll(100)

    def opened(self):
        # One non-blocking look at the open request: True once the host
        # answered `TPX K`, False while it may still; OSError(ECONNREFUSED) if
        # it refused, OSError(ETIMEDOUT) after open_ms without an answer.
        if not self.opening:
            return self.up
        while True:
            line = self._next_line(0)
            if line is None:
                break
            if line.startswith(b"TPX K"):
                self.opening = False
                self.up = True
                try:
                    self.host_time = int(line[6:])
                except ValueError:
                    pass  # a host that does not send its clock
                if self.on_open is not None:
                    self.on_open(self)
                return True
            if line.startswith(b"TPX E") or not line:
                self.opening = False
                raise OSError(ECONNREFUSED)
            # anything else belongs to an older uplink
        if ticks_diff(ticks_ms(), self.open_at) >= self.open_ms:
            self.opening = False
            self.tx.write(b"TPX C\n")  # the bridge may still be connecting: let it go
            raise OSError(ETIMEDOUT)
        return False

    def _next_line(self, wait_ms):
        # One whole line from rx (b"" at end of input), or None if none is
        # complete within wait_ms.
        while self.poller.poll(wait_ms):
            wait_ms = 0
            got = self.rx_stream.readline()
            if got is None:
                return None
            if not got:
                return b""
            if got[-1] != 10:  # "\n": the rest is still on the wire
                self.part += got
                continue
            if self.part:
                got = self.part + got
                self.part = b""
            return got
        return None

    def _pump(self):
        # Take in every whole line waiting on rx.
        while self.up:
            line = self._next_line(0)
            if line is None:
                return
            if line.startswith(b"TPX D "):
                frame = line[6:].rstrip()
                try:
                    # a2b_base64 skips what is not base64: check the shape.
                    if len(frame) % 4 or b" " in frame:
                        raise ValueError
                    self.rx += a2b_base64(frame)
                except ValueError:
                    self.up = False  # a damaged frame: drop the uplink
            elif line.startswith(b"TPX C") or not line:
                self.up = False

    def readinto(self, buf):
        if not self.rx:
            self._pump()
            if self.blocking:
                self._wait()
        if not self.rx:
            return None if self.up else 0
        n = min(len(buf), len(self.rx))
        buf[:n] = self.rx[:n]
        self.rx = self.rx[n:]
        return n

    def write(self, data):
        if not self.up:
            raise OSError(ECONNRESET)
        frame = b2a_base64(data)  # first: nothing may fail halfway through a line
        self.tx.write(b"TPX D ")
        self.tx.write(frame)
        return len(data)

    def _wait(self):
        t0 = ticks_ms()
        while not self.rx and self.up:
            if ticks_diff(ticks_ms(), t0) > self.read_ms:
                raise OSError(ETIMEDOUT)
            if self.feed is not None:
                self.feed()
            self.poller.poll(100)
            self._pump()

    def setblocking(self, flag):
        self.blocking = flag

    def ioctl(self, req, arg):
        if req == _POLL:
            ready = arg & _POLLOUT
            if not self.rx and self.up:
                self._pump()
            if self.rx or not self.up:
                ready |= arg & _POLLIN  # data, or the end of the uplink
            return ready
        if req == _GET_FILENO:
            return self.fd
        if req == _STREAM_CLOSE:
            self.close()
            return 0
        return -1

    def fileno(self):
        return self.fd  # CPython's select.poll asks for it (the host tests)

    def close(self):
        if self.up:
            self.tx.write(b"TPX C\n")
        self.up = False
        if hasattr(self.rx_stream, "attach"):
            self.rx_stream.attach(False)  # TPX lines for no link are dropped, granted
