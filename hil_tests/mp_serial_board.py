# The socket target's board: the real firmware app, with its MQTT stream carried
# over the serial console instead of a TCP socket (a board without WiFi).
#
#     micropython -X heapsize=222k hil_tests/mp_serial_board.py REPO main.py-options...
#
# Runs on the MicroPython unix port from the checkout's .mpy files (firmware/main.py
# builds them into REPO/.cache/mpy-<abi>/ on its first run). Only the board
# layer's open_socket() changes: it returns the firmware's own SerialLink
# (firmware/seriallink.py, the framing an ESP32 uses on its UART) over stdin and
# stdout, and the console shares the line, as on a real board's UART0.
#
# The link is polled the way the ESP32 polls it (no file descriptor: select.poll
# asks its ioctl), so the bench runs the ESP32's code path, not a unix shortcut.

import sys

sys.path.insert(0, sys.argv[1] + "/.cache/mpy-%d" % sys.implementation._mpy)  # noqa: UP031
del sys.argv[1]

from firmware import app  # noqa: E402
from firmware.board import unix  # noqa: E402
from firmware.seriallink import SerialLink  # noqa: E402


class SerialUplinkBoard(unix.Board):
    def open_socket(self, host, port, tls=False, ca_file=None):
        # Not TLS: opened in steps from the main loop (the uplink calls opened()).
        return SerialLink(sys.stdin.buffer, sys.stdout, host, port, wait=tls)


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
