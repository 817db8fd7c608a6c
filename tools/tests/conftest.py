"""Virtual boards for the tool tests: the real firmware on the MicroPython unix
port behind a pty and a TCP serial socket, opened with pyserial."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from terrapin.tools.board.serialconsole import BoardConsole, Link, open_port
from terrapin.tools.devkit.virtualboard import VirtualBoard


class BoardOnPort:
    """A started VirtualBoard and the port a host tool is given (a pty or socket:// URL)."""

    def __init__(self, vb: VirtualBoard, kind: str):
        self.vb = vb
        self.kind = kind
        self.port = vb.pty_path if kind == "pty" else vb.url
        self.flash = vb.flash_dir

    def link(self) -> Link:
        return Link(open_port(self.port))

    def console(self) -> BoardConsole:
        return BoardConsole(self.link())

    def context(self) -> str:
        """What the board printed, for failure messages."""
        return f"\n--- console log {self.vb.log_path} ---\n" + self.vb.console_log()[-3000:]


@pytest.fixture
def start_board(micropython_exe: str, tmp_path: Path) -> Iterator:
    """start_board(kind, *args, name=, deploy=) -> BoardOnPort; all stopped after the test."""
    started: list[VirtualBoard] = []

    def start(kind: str, *args: str, name: str = "flash", deploy: bool = True) -> BoardOnPort:
        vb = VirtualBoard(
            tmp_path / name, args=args, tcp_port=0 if kind == "tcp" else None, deploy=deploy
        )
        started.append(vb.start())
        return BoardOnPort(vb, kind)

    try:
        yield start
    finally:
        for vb in started:
            vb.stop()


@pytest.fixture(params=["pty", "tcp"])
def board(request, start_board) -> BoardOnPort:
    """A provisioning-mode virtual board, once behind a pty and once behind TCP."""
    return start_board(request.param)
