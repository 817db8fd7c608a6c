# The socket target's board: the real firmware app, with its MQTT stream carried
# over the serial console instead of a TCP socket (a board without WiFi).
#
#     micropython -X heapsize=100k hil_tests/mp_serial_board.py REPO main.py-options...
#
# Runs on the MicroPython unix port from the checkout's .mpy files (firmware/main.py
# builds them into REPO/.cache/mpy-<abi>/ on its first run). Only the board
# layer's open_socket() changes; the app, the outbox and the MQTT client are the
# firmware's own. Frames are text lines, so they share the UART with the console:
#
#   board -> host   TPX O <host> <port>     open the uplink to the broker
#                   TPX D <base64>          MQTT bytes for the broker
#                   TPX C                   close the uplink
#   host -> board   TPX K | TPX E <errno>   uplink open | failed
#                   TPX D <base64>          MQTT bytes from the broker
#                   TPX C                   the broker closed the uplink
#
# Every other line the board prints is its console, as on a real board.

import io
import select
import sys
from binascii import a2b_base64, b2a_base64

sys.path.insert(0, sys.argv[1] + "/.cache/mpy-%d" % sys.implementation._mpy)  # noqa: UP031
del sys.argv[1]

from firmware import app  # noqa: E402
from firmware.board import unix  # noqa: E402
from firmware.compat import ticks_diff, ticks_ms  # noqa: E402

_IN = sys.stdin.buffer
_OUT = sys.stdout
_GET_FILENO = 10  # MP_STREAM_GET_FILENO: select.poll waits on the UART's fd


class SerialLink(io.IOBase):
    def __init__(self, host, port):
        self.rx = b""
        self.up = False
        self.poller = select.poll()
        self.poller.register(_IN, select.POLLIN)
        _OUT.write("TPX O %s %d\n" % (host, port))  # noqa: UP031
        t0 = ticks_ms()
        while ticks_diff(ticks_ms(), t0) < 5000:
            if self.poller.poll(100):
                line = _IN.readline()
                if line.startswith(b"TPX K"):
                    self.up = True
                    return
                if line.startswith(b"TPX E") or not line:
                    raise OSError(111)
                # anything else belongs to an older uplink
        raise OSError(110)

    def _pump(self):
        while self.up and self.poller.poll(0):
            line = _IN.readline()
            if line.startswith(b"TPX D "):
                self.rx += a2b_base64(line[6:])
            elif line.startswith(b"TPX C") or not line:
                self.up = False

    def readinto(self, buf):
        if not self.rx:
            self._pump()
        if not self.rx:
            return None if self.up else 0
        n = min(len(buf), len(self.rx))
        buf[:n] = self.rx[:n]
        self.rx = self.rx[n:]
        return n

    def write(self, data):
        if not self.up:
            raise OSError(104)
        _OUT.write("TPX D " + b2a_base64(data).decode())
        return len(data)

    def setblocking(self, flag):
        pass

    def ioctl(self, req, arg):
        return 0 if req == _GET_FILENO else -1

    def close(self):
        if self.up:
            _OUT.write("TPX C\n")
        self.up = False


class SerialUplinkBoard(unix.Board):
    def open_socket(self, host, port, tls=False, ca_file=None):
        return SerialLink(host, port)


def main():
    try:
        opts = unix.parse_args(sys.argv[1:])
    except ValueError as exc:
        print("error: %s" % exc)  # noqa: UP031
        return 2
    return app.main(
        SerialUplinkBoard(opts), opts.get("--max-readings", -1), "--exit-when-drained" in opts
    )


code = main()
if code:
    sys.exit(code)
