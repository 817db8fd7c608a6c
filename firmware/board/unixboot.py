# The unix board's set-up and plumbing, used by board/unix.py: argument
# parsing, the flash folder and the sensors (boot), and the file playing the
# RTC memory (--deep-sleep-sim). The broker socket is board/tcpopen.py.

import os

_FLAGS = ("--exit-when-drained", "--no-clock", "--stats", "--console", "--deep-sleep-sim")
_VALUES = ("--config", "--flash", "--max-readings", "--period-ms", "--seed")
USAGE = (
    "usage: micropython -X heapsize=222k firmware/main.py --config PATH "
    "[--flash DIR] [--max-readings N] [--exit-when-drained] [--period-ms N] "
    "[--seed N] [--no-clock] [--stats] [--console] [--deep-sleep-sim]"
)


def parse_args(argv):
    # Options as a dict keyed by the option name; raises ValueError.
    opts = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _FLAGS:
            opts[arg] = True
        elif arg in _VALUES and i + 1 < len(argv):
            i += 1
            opts[arg] = argv[i] if arg in ("--config", "--flash") else int(argv[i])
        else:
            raise ValueError("bad argument " + arg)
        i += 1
    if "--config" not in opts:
        raise ValueError("--config PATH is required")
    return opts


class FileRTC:
    # Stands in for the ESP32's RTC memory in --deep-sleep-sim.

    def __init__(self, path):
        self.path = path

    def load(self):
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except OSError:
            return None

    def save(self, data):
        with open(self.path, "wb") as f:
            f.write(data)


def flash_ready(root):
    # Create the folder playing the flash (once there is a config).
    part = ""
    for piece in root.split("/"):
        part += piece + "/"
        if piece:
            try:
                os.mkdir(part)
            except OSError:
                pass


def make_sensor(board, spec):
    if spec["driver"] != "simulated":
        raise OSError("no %s on the unix board (missing sensor)" % spec["driver"])
    from ..sensors.simulated import Simulated  # only when configured

    return Simulated(
        spec.get("seed", board.opts.get("--seed", 1)),
        board.now,
        spec.get("fail_every", 0),
        spec.get("quantities"),
    )
