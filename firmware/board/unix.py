# The virtual board: the firmware on the MicroPython unix port (or CPython).
#
#     micropython -X heapsize=222k firmware/main.py --config PATH [options]
#
#   --config PATH        the board's JSON config (required)
#   --flash DIR          folder playing the board's flash (default: beside the
#                        config file, "<config folder>/flash")
#   --max-readings N     stop sampling after N readings in this run
#   --exit-when-drained  with --max-readings: exit 0 once all are acknowledged
#   --period-ms N        override sample_period_s (fast tests)
#   --seed N             seed of the simulated sensors (default 1)
#   --no-clock           behave like a board whose clock is not set (time 0)
#   --stats              print one `TP-STATS {json}` line at exit
#   --console            answer TP1 console lines on stdin (docs/HOBBYIST.md)
#   --deep-sleep-sim     act like an ESP32 in deep sleep: "sleeping" exits with
#                        code 4 (run it again to wake it); the RTC memory is the
#                        file <flash>.rtc (delete it to simulate a power cut)
#
# Only the simulated driver exists here: a hardware driver (bme280, ...) in
# the config is reported as a missing sensor and the others keep running.

#
# Argument parsing, the flash folder, the sensors and the RTC file are in
# board/unixboot.py; the broker socket is board/tcpopen.py (opened in steps,
# shared with the ESP32). This module is the Board the app talks to.

import gc
import json
import sys
import time

from ..compat import IS_MICROPYTHON
from . import unixboot
from .unixboot import parse_args  # noqa: F401 (unix.parse_args, for the tools)


class Board:
    console_stream = None  # the TP1 console on stdin/stdout
    name = "unix"
    can_deep_sleep = False
    retained = None
    ota_root = None  # a checkout has no OTA slots

    def __init__(self, opts):
        self.opts = opts
        self.config_path = path = opts["--config"]
        self.root = (
            opts.get("--flash") or (path.rsplit("/", 1)[0] if "/" in path else ".") + "/flash"
        )
        self.time_synced = "--no-clock" not in opts
        self.console_port = "--console" in opts
        if "--deep-sleep-sim" in opts:
            self.can_deep_sleep = True
            self.retained = unixboot.FileRTC(self.root + ".rtc")
        self.period_ms = opts.get("--period-ms")
        self.led = None

    def flash_ready(self):
        # Create the folder playing the flash (once there is a config).
        unixboot.flash_ready(self.root)

    def console(self, level, msg):
        print("[%s] %s" % (level, msg))

    def now(self):
        return int(time.time())

    def ticks_us(self):
        return time.ticks_us() if IS_MICROPYTHON else int(time.monotonic() * 1000000)

    def sleep_ms(self, ms):
        time.sleep(ms / 1000)

    def deep_sleep(self, ms):
        # --deep-sleep-sim only: the process ends here; running it again is the wake-up.
        print("[info] deep sleep %d ms" % ms)
        raise SystemExit(4)

    def heap_free(self):
        return gc.mem_free() if IS_MICROPYTHON else 0

    def feed(self, *args):
        pass  # no watchdog here

    configure = feed  # no WiFi, LED or watchdog to set up on the unix port

    def led_state(self, state):
        self.led = state

    def network_up(self):
        # One look at the network (the uplink steps it): always up here.
        return True

    def open_socket(self, host, port, tls=False, ca_file=None):
        # The broker's TCP connection (TLS if asked), opened in steps: the
        # uplink calls its opened() from the main loop (board/tcpopen.py).
        from .tcpopen import TcpOpen

        return TcpOpen(host, port, tls, ca_file)

    def make_sensor(self, spec):
        return unixboot.make_sensor(self, spec)

    def reset(self):
        raise SystemExit(3)  # like console_main.py: the supervisor restarts the process

    def report_stats(self, stats):
        if "--stats" in self.opts:
            print("TP-STATS " + json.dumps(stats))


def main(argv=None):
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print("error: %s\n%s" % (exc, unixboot.USAGE))
        return 2
    board = Board(opts)
    if board.console_port:
        from ..consoleport import asked

        if asked(board.root):  # as on the ESP32 (board/esp32.py)
            from .. import console

            return console.main(board, False)
    from .. import app

    code = app.main(board, opts.get("--max-readings", -1), "--exit-when-drained" in opts)
    if code == 2 and board.console_port:
        from .. import console

        print("[error] stopped: the TP1 console is open in console mode to fix the config")
        return console.main(board, True)
    return code
