"""The REPL UART as the TP1 console's line, for the firmware app's main loop.

Costs almost nothing until a host speaks: firmware/console.py (and the key
store it may need) is imported only when the first line starting with
`TP1 ` arrives, and unloaded again (with the key store and curve code it
pulled in) once the host has been quiet for `quiet_ms` (20 s) with no
transfer open, or 6 x `quiet_ms` with one left half done: a board whose
console was used once does not carry it beside the app for good. Never
blocks. Ctrl-C still reaches MicroPython
(KeyboardInterrupt), so the raw REPL that `terrapin device deploy` uses keeps
working while the app runs.

    port = ConsolePort(lambda write: Console(root, write, ...))
    ...
    port.poll()              # every turn of the main loop
    port.event(status_json)  # whenever the app publishes its status
"""

import gc
import sys

from .compat import const, ticks_diff, ticks_ms, unload

_PREFIX = b"TP1 "
_QUIET_MS = const(20000)
_PACKAGE = __name__.rsplit(".", 1)[0]
# What a console session may import; released with it unless the app had it.
_SESSION_MODULES = (
    "console",
    "console_ops",
    "console_trust",
    "console_keys",
    "keystore",
    "secp256k1",
    "keccak",
    "bind",
)


class ConsolePort:
    def __init__(self, make_console, stdin=None, stdout=None, quiet_ms=_QUIET_MS):
        import select

        # A serial uplink sharing the REPL UART (sharedline.py) reads the line:
        # the console gets its bytes from it, never from stdin directly.
        shared = sys.modules.get(_PACKAGE + ".sharedline")
        if stdin is None and shared is not None and shared.active is not None:
            stdin = stdout = shared.active.console
        stdin = stdin or sys.stdin
        stdout = stdout or sys.stdout
        self._poll = select.poll()
        self._poll.register(stdin, select.POLLIN)
        self._in = getattr(stdin, "buffer", stdin)
        self._out = getattr(stdout, "buffer", stdout)
        self._make = make_console
        self.console = None
        self._head = bytearray()
        self._skip = False  # rest of a line that is not for the console
        self.closed = False
        self.quiet_ms = quiet_ms
        self._had = ()  # of _SESSION_MODULES, those loaded before the console
        self._heard = 0  # ticks_ms of the last byte the console took

    def write(self, data):
        self._out.write(data)

    def event(self, status):
        """Write `TP1 EV <json>`; `status` is the status payload (JSON bytes or str)."""
        if isinstance(status, str):
            status = status.encode()
        self.write(_PREFIX + b"EV " + status + b"\n")

    def poll(self, budget=512):
        """Handle up to `budget` bytes that are waiting; returns how many."""
        n = 0
        while n < budget and not self.closed and self._poll.poll(0):
            b = self._in.read(1)
            if not b:
                self.closed = True  # end of input (stdin is not a terminal)
                break
            n += 1
            if self.console is not None:
                self._heard = ticks_ms()
                self.console.feed(b)
            else:
                self._sniff(b)
        if not n and self.console is not None:
            quiet = ticks_diff(ticks_ms(), self._heard)
            if quiet > self.quiet_ms and self.console.idle():
                self._release()
            elif quiet > 6 * self.quiet_ms:
                self.console.abandon()  # a host that left mid-transfer
                self._release()
        return n

    def _release(self):
        # The host went quiet: give the console's RAM back to the app.
        self.console = None
        for name in _SESSION_MODULES:
            if name not in self._had:
                unload(_PACKAGE + "." + name)
        self._had = ()
        gc.collect()

    def _sniff(self, b):
        if b == b"\n":
            self._head = bytearray()
            self._skip = False
            return
        if self._skip or b == b"\r":
            return
        self._head.extend(b)
        if not _PREFIX.startswith(bytes(self._head)):
            self._skip = True
            self._head = bytearray()
        elif len(self._head) == len(_PREFIX):
            gc.collect()  # loading the console needs one big block beside the app
            self._had = [m for m in _SESSION_MODULES if _PACKAGE + "." + m in sys.modules]
            self.console = self._make(self.write)
            self._heard = ticks_ms()
            self.console.feed(bytes(self._head))
            self._head = bytearray()
