# A board whose serial uplink shares UART0 with its TP1 console (config
# serial_uplink.uart 0), as board/esp32.py sets it up, on the unix port:
#
#     micropython -X heapsize=222k hil_tests/mp_uart0_board.py REPO main.py-options...
#
# stdin/stdout play UART0, read through a model of the ESP32 port's input: a
# 260-byte ring the UART interrupt fills whether or not the app reads it,
# dropping what does not fit (mphalport.c, stdin_ringbuf_array[260]). Here the
# interrupt is the moment the app looks: what waits in the OS pipe arrived
# while it did not, so it goes into the ring now and the overflow is dropped
# (said on the console as `[ring] dropped N bytes`). The pipe delivers at once
# what a UART would trickle in, so this is harsher than the chip, never kinder.

import io
import select
import sys

sys.path.insert(0, sys.argv[1] + "/.cache/mpy-%d" % sys.implementation._mpy)  # noqa: UP031
del sys.argv[1]

from firmware import app  # noqa: E402
from firmware.board import unix  # noqa: E402
from firmware.seriallink import SerialLink  # noqa: E402
from firmware.sharedline import LineShare  # noqa: E402

_RING = 260


class Ring(io.IOBase):
    def __init__(self, src):
        self.src = src
        self.poller = select.poll()
        self.poller.register(src, select.POLLIN)
        self.ring = bytearray()
        self.one = bytearray(1)
        self.dropped = 0

    def _interrupt(self):
        lost = 0
        while self.poller.poll(0):
            if not self.src.readinto(self.one):
                break  # end of input
            if len(self.ring) < _RING:
                self.ring.append(self.one[0])
            else:
                lost += 1
        if lost:
            self.dropped += lost
            print("[ring] dropped %d bytes (%d in all)" % (lost, self.dropped))  # noqa: UP031

    def readinto(self, buf):
        self._interrupt()
        n = min(len(buf), len(self.ring))
        buf[:n] = self.ring[:n]
        self.ring[:n] = b""
        return n

    def ioctl(self, req, arg):
        if req != 3:  # MP_STREAM_POLL
            return -1
        self._interrupt()
        return arg & 1 if self.ring else 0


class Uart0Board(unix.Board):
    uart = None

    def configure(self, cfg):
        # As board/esp32.py: the REPL UART's streams, not a machine.UART(0).
        serial = cfg.get("serial_uplink")
        if serial and serial["uart"] == 0:
            share = LineShare(Ring(sys.stdin.buffer), sys.stdout.buffer)
            self.uart = share.uplink
            self.console_stream = share.console

    def open_socket(self, host, port, tls=False, ca_file=None):
        return SerialLink(self.uart, self.uart, host, port, wait=tls)


def main():
    opts = unix.parse_args(sys.argv[1:])
    return app.main(Uart0Board(opts), opts.get("--max-readings", -1), "--exit-when-drained" in opts)


code = main()
if code:
    sys.exit(code)
