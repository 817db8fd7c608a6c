"""`terrapin device deploy` over a line that stalls: each raw-REPL call waits the
configured time, and a stalled step is resumed (Ctrl-C, raw REPL again, the file
redone) instead of leaving the board half-deployed (issue 18: a QEMU board
stalled at a file close + rename after 97 calls, with a fixed 20 s limit).

The stall is real bytes held back: a TCP relay between the host and the virtual
board's serial socket stops passing the board's output for a while, once."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from terrapin.tools.board import deploy as dep
from terrapin.tools.board.serialconsole import Link, RawRepl, open_port


class StallingRelay:
    """127.0.0.1:port <-> the board's socket; once the host has sent `after` bytes,
    the board's output is held for `hold_s` seconds (once), as a stalled UART would."""

    def __init__(self, board_url: str, after: int, hold_s: float):
        host, port = board_url.removeprefix("socket://").split(":")
        self.board = (host, int(port))
        self.after = after
        self.hold_s = hold_s
        self.stalls = 0
        self.host_sent = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        host, _ = self.server.accept()
        board = socket.create_connection(self.board)
        threading.Thread(target=self._pump, args=(host, board, False), daemon=True).start()
        self._pump(board, host, True)

    def _pump(self, src: socket.socket, dst: socket.socket, from_board: bool) -> None:
        src.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data = src.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            if not from_board:
                self.host_sent += len(data)
            elif self.stalls == 0 and self.host_sent >= self.after:
                self.stalls += 1
                time.sleep(self.hold_s)  # the board's bytes wait in the socket
            with contextlib.suppress(OSError):
                dst.sendall(data)

    def close(self) -> None:
        self.stop.set()
        self.server.close()


def firmware_copy(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(dep.FIRMWARE_DIR, src, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    return src


def deploy_through_relay(tmp_path, start_board, call_timeout: float, retries: int = 2):
    board = start_board("tcp", deploy=False)  # freshly flashed: the REPL only
    relay = StallingRelay(board.vb.url, after=40_000, hold_s=3.0)
    link = Link(open_port(relay.url))
    notes: list[str] = []
    try:
        repl = RawRepl(link)
        repl.enter()
        target = dep.ReplTarget(repl, call_timeout=call_timeout, retries=retries, note=notes.append)
        result = dep.deploy(target, src=firmware_copy(tmp_path))
        return board, relay, target, result, notes
    finally:
        link.close()
        relay.close()


def test_a_stalled_call_is_resumed_and_the_deploy_completes(tmp_path, start_board):
    board, relay, target, result, notes = deploy_through_relay(
        tmp_path, start_board, call_timeout=1.0
    )
    assert relay.stalls == 1
    assert target.recoveries >= 1 and "stalled" in notes[0] and "resuming" in notes[0], notes
    manifest = json.loads((board.flash / dep.MANIFEST).read_text())
    on_flash = {
        p.relative_to(board.flash).as_posix(): dep.digest(p.read_bytes())
        for p in board.flash.rglob("*.mpy")
    }
    assert on_flash == {k: v for k, v in manifest.items() if k.endswith(".mpy")}
    assert not list(board.flash.rglob("*.tmp")), "a half-written file was left behind"
    assert len(result.uploaded) == len(manifest)


def test_a_longer_call_timeout_rides_out_the_same_stall(tmp_path, start_board):
    _, relay, target, result, notes = deploy_through_relay(tmp_path, start_board, call_timeout=10)
    assert relay.stalls == 1 and target.recoveries == 0 and notes == []
    assert result.uploaded


def test_a_board_that_never_comes_back_is_a_clear_error(tmp_path, start_board):
    with pytest.raises(dep.DeployStalled, match=r"stalled at .* 1 times") as err:
        deploy_through_relay(tmp_path, start_board, call_timeout=1.0, retries=0)
    assert "--call-timeout" in str(err.value) and "resumes" in (err.value.hint or "")
