# The REPL UART (UART0) shared by the TP1 console and the serial uplink, for a
# board whose other UARTs do not reach the host (config serial_uplink.uart 0;
# an emulator build whose UART1 output is lost, issue 18). One reader takes
# the line apart: a line that starts `TPX ` is the link's, every other byte the
# console's. On the way out every write is one whole line and the firmware is
# single-threaded, so console lines and link frames never mix.
#
# Flow control, host -> board: MicroPython's esp32 port keeps UART0 input in a
# 260-byte ring (mphalport.c) and drops what does not fit while the app is
# busy. So the host may have at most WINDOW bytes of TPX lines unread:
#
#   board -> host   TPX W <n>   the window: n bytes of TPX lines, none unread
#                               (sent once, when this reader starts at boot)
#                   TPX A <n>   n more bytes of TPX lines were taken
#
# A TPX line is granted when the link takes it, or when it is dropped (no link
# reads it: an older uplink's), so the host's credit is exact; the link's queue
# never holds more than the window. The rest of the ring is the console's: a
# host sends one TP1 request at a time, each under 260 - WINDOW bytes.
# Pure logic: the streams are given (the board's sys.stdin/sys.stdout).

import io
import select

from .compat import const

WINDOW = const(128)  # room for one console request beside it in 260 bytes
_CONSOLE_MAX = const(160)  # console bytes taken off the ring, not read yet
_POLL = const(3)  # MP_STREAM_POLL
_POLLIN = const(1)
_POLLOUT = const(4)
_PREFIX = b"TPX "
_DAMAGED = b"TPX D !\n"  # for a line past the window: not base64, the link drops


class LineShare:
    def __init__(self, rx, tx, window=WINDOW):
        # rx: the line's input (poll-able, readinto); tx: its output.
        self.rx = rx
        self.tx = tx
        self.window = window
        self.poller = select.poll()
        self.poller.register(rx, select.POLLIN)
        self.one = bytearray(1)
        self.line = bytearray(window)  # the TPX line being read
        self.n = 0  # its length so far (past the window: counted, not kept)
        self.hn = 0  # how much of `TPX ` a line's start has matched
        self.at = 0  # 0: a line's start; 1: a console line; 2: a TPX line
        self.con = bytearray()  # console bytes not read yet
        self.q = bytearray()  # whole TPX lines the link has not taken
        self.lens = []  # their lengths
        self.broken = False  # a line longer than the window came
        self.attached = False  # a link reads TPX lines (else they are dropped)
        self.eof = False
        self.console = ConsoleSide(self)
        self.uplink = LinkSide(self)
        tx.write(("TPX W %d\n" % window).encode())

    def pump(self):
        # Take what waits on the line a byte at a time: on the ESP32 a read of
        # more than is there blocks until it comes.
        while len(self.con) < _CONSOLE_MAX and not self.eof and self.poller.poll(0):
            if not self.rx.readinto(self.one):
                self.eof = True
                return
            self._take(self.one[0])

    def _take(self, b):
        if self.at == 1:
            self.con.append(b)
            if b == 10:
                self.at = 0
        elif self.at == 2:
            if self.n < self.window:
                self.line[self.n] = b
            self.n += 1
            if b == 10:
                self.at = 0
                self._line_end()
        elif b == _PREFIX[self.hn]:
            self.hn += 1
            if self.hn == 4:
                self.at = 2
                self.line[:4] = _PREFIX
                self.n = 4
                self.hn = 0
        else:
            self.con.extend(_PREFIX[: self.hn])
            self.con.append(b)
            self.hn = 0
            self.at = 0 if b == 10 else 1

    def _line_end(self):
        n = self.n
        if not self.attached or n > self.window:
            self.broken = self.attached  # the link drops: it lost a frame
            self.grant(n)
            return
        self.q.extend(memoryview(self.line)[:n])
        self.lens.append(n)

    def grant(self, n):
        if n > 0:
            self.tx.write(("TPX A %d\n" % n).encode())

    def link_line(self):
        # One whole TPX line for the link, granted as it is taken; None if none.
        self.pump()
        if self.broken:
            self.broken = False
            return _DAMAGED
        if not self.lens:
            return b"" if self.eof else None
        n = self.lens.pop(0)
        line = bytes(self.q[:n])
        self.q[:n] = b""
        self.grant(n)
        return line

    def attach(self, on):
        # A new link (on) or none (off): what an older link left is dropped.
        self.grant(len(self.q))
        self.q = bytearray()
        self.lens = []
        self.broken = False
        self.attached = on


class _Side(io.IOBase):
    def __init__(self, share):
        self.share = share

    def write(self, data):
        self.share.tx.write(data)
        return len(data)

    def flush(self):
        pass

    def ioctl(self, req, arg):
        if req != _POLL:
            return -1
        self.share.pump()
        return (arg & _POLLOUT) | (arg & _POLLIN if self.ready() else 0)


class ConsoleSide(_Side):
    # The console's stdin and stdout (consoleport.ConsolePort).
    def ready(self):
        return self.share.con or self.share.eof

    def read(self, n=1):
        share = self.share
        share.pump()
        out = bytes(share.con[:n])
        share.con[:n] = b""  # (MicroPython has no del on a slice)
        return out


class LinkSide(_Side):
    # The serial link's rx and tx (seriallink.SerialLink).
    def ready(self):
        s = self.share
        return s.eof or s.broken or s.lens

    def readline(self):
        return self.share.link_line()

    def attach(self, on=True):
        self.share.attach(on)
