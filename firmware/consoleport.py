"""The REPL UART as the TP1 console's line, for the firmware app's main loop.

Costs almost nothing until a host speaks: firmware/console.py (and the key
store it may need) is imported only when the first line starting with
`TP1 ` arrives. Never blocks. Ctrl-C still reaches MicroPython
(KeyboardInterrupt), so the raw REPL that `terrapin device deploy` uses keeps
working while the app runs.

    port = ConsolePort(lambda write: Console(root, write, ...))
    ...
    port.poll()              # every turn of the main loop
    port.event(status_json)  # whenever the app publishes its status
"""

_PREFIX = b"TP1 "


class ConsolePort:
    def __init__(self, make_console, stdin=None, stdout=None):
        import select
        import sys

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
                self.console.feed(b)
            else:
                self._sniff(b)
        return n

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
            self.console = self._make(self.write)
            self.console.feed(bytes(self._head))
            self._head = bytearray()
