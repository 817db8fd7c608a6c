"""The TP1 console on the REPL UART: beside the running app, and console mode.

The running app answers three commands itself; the whole console (keys,
config, OTA, bind: firmware/console.py and its parts) would not fit the
ESP32's heap beside it (docs/FIRMWARE.md, "Memory"):

    info      identity, config key names, status ("mode": "app")
    reboot    answered, then the board resets
    console   answered, then the board resets into console mode

Any other command gets `ERR CONSOLE_MODE`: the host sends `console`, waits
for the board to come back in console mode and asks again (docs/PROTOCOL.md
section 11c). Never blocks; Ctrl-C still reaches MicroPython, so the raw REPL
that `terrapin device deploy` uses keeps working while the app runs.

Console mode (console.main) is a boot without the app, in which
firmware/console.py answers every command. A board boots into it once after
`console` (the flag file goes as it starts: the next reset, a power cut
included, runs the app again), and stays in it while its config cannot run
the app (a fresh board). A host quiet for 5 minutes with nothing half sent
leaves it: the board resets into the app.

    port = ConsolePort(info, reset, root)
    port.poll()              # every turn of the main loop
    port.event(status_json)  # whenever the app publishes its status
"""

import json
import sys

from .compat import const

PREFIX = b"TP1 "
_HEAD = const(40)  # what the app keeps of a line: "TP1 #<id> <command>"


def request_id(word):
    # 1-16 ASCII letters or digits (bytes): safe to echo back on the line.
    if not 0 < len(word) <= 16:
        return False
    for c in word:
        if not (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122):
            return False
    return True


class ConsolePort:
    def __init__(self, info, reset, root, stdin=None, stdout=None):
        # info() -> the `info` answer (dict); reset() reboots the board.
        stdin = stdin or sys.stdin
        stdout = stdout or sys.stdout
        import select

        self._poll = select.poll()
        self._poll.register(stdin, select.POLLIN)
        self._in = getattr(stdin, "buffer", stdin)
        self._out = getattr(stdout, "buffer", stdout)
        self.info = info
        self.reset = reset
        self.root = root
        self.buf = bytearray(_HEAD)  # the head of the line being read
        self.size = 0
        self.closed = False

    def write(self, data):
        self._out.write(data)

    def event(self, status):
        """Write `TP1 EV <json>`; `status` is the status payload (JSON bytes or str)."""
        if isinstance(status, str):
            status = status.encode()
        self.write(PREFIX + b"EV " + status + b"\n")

    def poll(self, budget=512):
        """Handle up to `budget` bytes that are waiting; returns how many."""
        n = 0
        while n < budget and not self.closed and self._poll.poll(0):
            b = self._in.read(1)
            if not b:
                self.closed = True  # end of input (stdin is not a terminal)
                break
            n += 1
            c = b[0]
            if c == 10:
                line = bytes(self.buf[: self.size])
                self.size = 0
                if line.startswith(PREFIX):
                    try:
                        answer = self._answer(line)
                    except Exception as exc:  # never let a console line stop the app
                        answer = b"ERR INTERNAL " + type(exc).__name__.encode()
                    self.write(PREFIX + answer + b"\n")
            elif c != 13 and self.size < _HEAD:
                self.buf[self.size] = c
                self.size += 1
        return n

    def _answer(self, line):
        # The answer to one TP1 line, without "TP1 " and the newline.
        words = line.split()
        rid = b""
        if len(words) > 1 and words[1][:1] == b"#":
            if not request_id(words[1][1:]):
                return b"ERR BAD_COMMAND request id must be 1-16 letters or digits"
            rid = b" " + words.pop(1)
        name = words[1] if len(words) > 1 else b""
        if name == b"info":
            return b"OK" + rid + b" " + json.dumps(self.info()).encode()
        if not name:
            return b"ERR" + rid + b" BAD_COMMAND empty command"
        if name not in (b"reboot", b"console"):
            return (
                b"ERR" + rid + b" CONSOLE_MODE " + name + b" is answered in console mode:"
                b" send `console` (the board reboots into it)"
            )
        mode = b"app"
        if name == b"console":
            with open(self.root + "/console_mode", "wb") as f:  # asked() below
                f.write(b"1")
            mode = name
        self.write(PREFIX + b"OK" + rid + b' {"rebooting": true, "mode": "' + mode + b'"}\n')
        self.reset()  # does not return on a board
        return b"ERR" + rid + b" INTERNAL the reset did not happen"


def asked(root):
    """True once after `console`: the flag is removed here, so it holds one boot."""
    import os

    try:
        os.remove(root + "/console_mode")
        return True
    except OSError:
        return False
