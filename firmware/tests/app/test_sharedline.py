"""UART0 shared by the TP1 console and the serial uplink (firmware/sharedline.py) on
CPython: the line taken apart byte for byte, and the window the host is granted.
The same module runs on the unix port in test_uart0_link.py, with the real app."""

from __future__ import annotations

import io
import os

import pytest

from terrapin.firmware.sharedline import WINDOW, LineShare


class Line:
    """The board's UART0: the host writes into a pipe; what the board writes is kept."""

    def __init__(self) -> None:
        r, self.w = os.pipe()
        self.rx = io.FileIO(r, "rb")
        self.tx = io.BytesIO()
        self.share = LineShare(self.rx, self.tx)

    def host(self, data: bytes) -> None:
        os.write(self.w, data)

    def sent(self) -> list[bytes]:
        out = self.tx.getvalue().splitlines()
        self.tx.seek(0)
        self.tx.truncate()
        return out

    def console(self) -> bytes:
        got = b""
        while self.share.console.ioctl(3, 1):
            got += self.share.console.read(1)
        return got

    def link(self) -> list[bytes]:
        lines = []
        while (line := self.share.uplink.readline()) is not None:
            lines.append(line)
        return lines

    def close(self) -> None:
        os.close(self.w)
        self.rx.close()


@pytest.fixture
def line():
    ln = Line()
    yield ln
    ln.close()


def granted(sent: list[bytes]) -> int:
    return sum(int(s[6:]) for s in sent if s.startswith(b"TPX A "))


def test_the_window_is_given_when_the_reader_starts(line) -> None:
    assert line.sent() == [b"TPX W %d" % WINDOW]
    assert WINDOW + 131 <= 260  # one console request fits beside a full window


def test_console_bytes_and_link_lines_are_taken_apart(line) -> None:
    line.share.attach(True)
    console = b"TP1 #a1 info\nTPZ not a frame\n\nTP\nTP1 #a2 info\n"
    line.host(b"TP1 #a1 info\nTPX K 1800000000\nTPZ not a frame\n\nTPX D AAEC\n")
    line.host(b"TP\nTPX C\nTP1 #a2 info\n")
    assert line.console() == console  # every console byte, in order, none of the frames'
    assert line.link() == [b"TPX K 1800000000\n", b"TPX D AAEC\n", b"TPX C\n"]


def test_a_line_is_granted_when_the_link_takes_it(line) -> None:
    line.sent()
    line.share.attach(True)
    line.host(b"TPX D AAEC\nTPX D AAECAwQF\n")
    line.share.pump()
    assert granted(line.sent()) == 0  # still queued: the host may not send more
    assert line.share.uplink.readline() == b"TPX D AAEC\n"
    assert line.sent() == [b"TPX A 11"]
    assert line.share.uplink.readline() == b"TPX D AAECAwQF\n"
    assert line.sent() == [b"TPX A 15"]


def test_lines_for_no_link_are_dropped_and_granted(line) -> None:
    line.sent()
    line.host(b"TPX D AAEC\nTP1 #b info\n")
    assert line.console() == b"TP1 #b info\n"
    assert line.link() == []
    assert granted(line.sent()) == 11


def test_a_new_link_drops_and_grants_what_the_old_one_left(line) -> None:
    line.share.attach(True)
    line.sent()
    line.host(b"TPX D AAEC\nTPX D AAEC\n")
    line.share.pump()
    line.share.attach(True)
    assert granted(line.sent()) == 22
    assert line.link() == []


def test_a_line_past_the_window_drops_the_link_and_is_granted_whole(line) -> None:
    line.share.attach(True)
    line.sent()
    frame = b"TPX D " + b"QUJD" * 40 + b"\n"  # 167 bytes: a host that broke the window
    line.host(frame + b"TP1 #c info\n")
    assert line.console() == b"TP1 #c info\n"
    assert line.link() == [b"TPX D !\n"]  # not base64: SerialLink drops the uplink
    assert granted(line.sent()) == len(frame)


def test_the_console_queue_is_bounded_and_the_rest_waits_on_the_line(line) -> None:
    line.host(b"x" * 1000 + b"\n")
    line.share.pump()
    assert 0 < len(line.share.con) <= 160  # the rest stays in the ring, not in RAM
    assert line.console() == b"x" * 1000 + b"\n"
