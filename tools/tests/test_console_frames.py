"""A board whose serial uplink shares its console's UART (firmware/sharedline.py)
writes `TPX ...` frames between console lines: the host's console reader skips
them, so a TP1 answer after a frame is still the next line it reads."""

from __future__ import annotations

import serial

from terrapin.tools.board.serialconsole import Link, parse_line


def test_read_line_skips_uplink_frames() -> None:
    ser = serial.serial_for_url("loop://", timeout=0.05)
    link = Link(ser)
    ser.write(b"TPX D AAEC\nTPX A 11\n[info] hello\nTPX W 128\nTP1 EV {}\n")
    assert link.read_line(1) == b"[info] hello\n"
    assert parse_line(link.read_line(1).rstrip()) == (b"EV", None, b"{}")
