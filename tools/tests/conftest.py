"""Virtual boards for the tool tests: the real firmware on the MicroPython unix
port behind a pty and a TCP serial socket, opened with pyserial."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from terrapin.tools.serialconsole import BoardConsole, Link, open_port
from terrapin.tools.virtualboard import VirtualBoard


class Board:
    """A started virtual board and the port string a host tool would be given."""

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


def start_board(tmp_path: Path, kind: str, *args: str, name: str = "flash") -> VirtualBoard:
    return VirtualBoard(tmp_path / name, args=args, tcp_port=0 if kind == "tcp" else None).start()


@pytest.fixture(params=["pty", "tcp"])
def board(request, micropython_exe: str, tmp_path: Path) -> Iterator[Board]:
    """A provisioning-mode virtual board, once behind a pty and once behind TCP."""
    vb = start_board(tmp_path, request.param)
    try:
        yield Board(vb, request.param)
    finally:
        vb.stop()
