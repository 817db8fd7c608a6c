"""The bench's TP1 pacing against a board whose console input is MicroPython's on
the ESP32: a 260-byte stdin ring filled by the UART interrupt, whose overflow is
dropped, and nobody reading it while the board boots. The board here is the
firmware's own Console (on CPython) behind a TCP serial socket, as QEMU exposes
UART0; only the ESP32 port's ring and a slow boot are modelled, since that ring
is C inside MicroPython's esp32 port and cannot run on this machine.

Before the fix the bench polled `info` every second during a boot: the polls filled
the ring, the overflow was dropped (with pieces of lines), and the first request
after the console came up waited behind a backlog of stale `info` answers, so on
the emulated board `config-begin` was never answered (docs/HIL.md, QEMU)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from terrapin.firmware.console import Console
from terrapin.hil.serialboard import SerialBoard

RING = 260  # MicroPython esp32 port: stdin_ringbuf_array[260] (mphalport.c)


class RingBoard:
    """A TCP serial line into a Console through a ring that drops what overflows."""

    def __init__(self, root: Path, boot_s: float, answer_s: float, held: bytes = b""):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.boot_s = boot_s
        self.answer_s = answer_s
        self.ring = bytearray(held)  # what an earlier overflow left: a piece of a line
        self.dropped = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.root = root
        self.conn: socket.socket | None = None
        threading.Thread(target=self._run, daemon=True).start()

    def _write(self, data: bytes) -> None:
        time.sleep(self.answer_s)  # the emulated board reads its flash for each answer
        assert self.conn is not None
        self.conn.sendall(data)

    def _uart_interrupt(self, conn: socket.socket) -> None:
        # Drains the socket (the UART FIFO) into the ring whether or not anyone reads.
        while not self.stop.is_set():
            try:
                data = conn.recv(64)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                room = RING - len(self.ring)
                self.ring.extend(data[:room])
                self.dropped += max(0, len(data) - room)

    def _run(self) -> None:
        self.conn, _ = self.server.accept()
        threading.Thread(target=self._uart_interrupt, args=(self.conn,), daemon=True).start()
        time.sleep(self.boot_s)  # booting: the app does not read its console yet
        pub, addr = b"\x04" + bytes(64), bytes(range(20))
        console = Console(str(self.root), self._write, provisioning=True, identity=(pub, addr))
        while not self.stop.is_set():
            with self.lock:
                data, self.ring[:] = bytes(self.ring[:1]), self.ring[1:]
            if data:
                console.feed(data)
            else:
                time.sleep(0.005)

    def close(self) -> None:
        self.stop.set()
        self.server.close()
        if self.conn is not None:
            self.conn.close()


def test_polls_during_a_slow_boot_never_overflow_the_ring_or_delay_the_next_request(
    tmp_path: Path,
) -> None:
    root = tmp_path / "flash"
    root.mkdir()
    model = RingBoard(root, boot_s=3.0, answer_s=0.3)
    board = SerialBoard(
        "b0", tmp_path / "boards", ("127.0.0.1", 1), port=f"socket://127.0.0.1:{model.port}"
    )
    board.console_poll_s = 0.05  # scaled down from the qemu target's 5 s .. 60 s
    board.console_poll_max_s = 0.8
    board.drain_s = 2.0
    board.request_timeout_s = 3.0
    try:
        info = board.wait_console(timeout=20)
        assert info["addr"] == bytes(range(20)).hex()
        begun = time.monotonic()
        assert board.request("config-begin", timeout=3.0) == {}
        assert time.monotonic() - begun < 1.5, "config-begin waited behind stale answers"
        assert model.dropped == 0, f"{model.dropped} console bytes overflowed the board's ring"
    finally:
        board.stop()
        model.close()


def test_a_request_after_a_piece_of_a_line_left_by_an_overflow_is_answered(
    tmp_path: Path,
) -> None:
    root = tmp_path / "flash"
    root.mkdir()
    model = RingBoard(root, boot_s=0.0, answer_s=0.0, held=b"TP1 #old7 in")
    port = f"socket://127.0.0.1:{model.port}"
    board = SerialBoard("b0", tmp_path / "boards", ("127.0.0.1", 1), port=port)
    try:
        assert board.request("config-begin", timeout=3.0) == {}
    finally:
        board.stop()
        model.close()
