"""Opening the MQTT link never blocks the board's main loop (issue 18).

Before, `MQTTClient.connect` sent CONNECT and waited up to 10 s for CONNACK
inside the main loop, and the unix board's TCP connect blocked up to 5 s: no
sampling, no signing, no console meanwhile. Now the uplink opens in steps
(uplink.py: NET, SOCKET, CONNACK, SUBACK, each with a deadline). Real parts:
the firmware on the unix port, real Mosquitto; the faults are plain sockets
on 127.0.0.1:

- a "broker" that accepts TCP and never answers, later replaced by Mosquitto;
- a relay in front of Mosquitto that holds back the broker's first bytes
  (the CONNACK) for 4 s;
- a TCP connect that never completes: a listener whose accept queue is full
  (Linux drops the SYN, the board's connect stays in progress);
- a broker that accepts the session (CONNACK) and never answers its
  SUBSCRIBEs: without a SUBACK for its ack topic no session is up.

Each test prints the longest gap between two readings the board stored while
its link was down or opening (the sampling period is 50-100 ms): the longest
main-loop pass, as seen from outside.
"""

from __future__ import annotations

import contextlib
import errno
import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from terrapin.tools.board.serialconsole import BoardConsole, Link, open_port
from terrapin.tools.devkit.appboard import poll_info
from terrapin.tools.devkit.broker import Mosquitto
from terrapin.tools.devkit.virtualboard import APP_MAIN, REPO, VirtualBoard
from terrapin.tools.micropython import ESP32_HEAP

pytestmark = [pytest.mark.micropython, pytest.mark.mosquitto]

STORED = re.compile(rb"stored seq (\d+)")


class SilentBroker:
    """Accepts TCP connections on 127.0.0.1, reads what comes, never answers."""

    def __init__(self, port: int = 0):
        self.server = socket.create_server(("127.0.0.1", port))
        self.port = self.server.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.received = 0
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.server.settimeout(0.1)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = self.server.accept()
                conn.settimeout(0.1)
                self.accepted.append(conn)
            for conn in list(self.accepted):
                with contextlib.suppress(TimeoutError, OSError):
                    self.received += len(conn.recv(4096))

    def close(self) -> None:
        self._stop.set()
        time.sleep(0.2)
        for conn in self.accepted:
            conn.close()
        self.server.close()


class ConnackOnlyBroker(SilentBroker):
    """Answers each CONNECT with CONNACK (accepted), then says nothing: no
    SUBACK for the board's subscriptions."""

    def _serve(self) -> None:
        self.server.settimeout(0.1)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = self.server.accept()
                conn.settimeout(0.1)
                self.accepted.append(conn)
                conn.sendall(b"\x20\x02\x00\x00")  # ahead of CONNECT: TCP keeps it
            for conn in list(self.accepted):
                with contextlib.suppress(TimeoutError, OSError):
                    self.received += len(conn.recv(4096))


class SlowConnackRelay:
    """A TCP relay in front of a broker: the board's bytes go through at once,
    the broker's first bytes (its CONNACK) are held back for `hold_s`."""

    def __init__(self, broker_port: int, hold_s: float):
        self.broker_port = broker_port
        self.hold_s = hold_s
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                board, _ = self.server.accept()
            except OSError:
                return
            broker = socket.create_connection(("127.0.0.1", self.broker_port))
            threading.Thread(target=self._pipe, args=(board, broker, 0.0), daemon=True).start()
            threading.Thread(
                target=self._pipe, args=(broker, board, self.hold_s), daemon=True
            ).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, hold_s: float) -> None:
        try:
            first = src.recv(65536)
            time.sleep(hold_s)
            data = first
            while data:
                dst.sendall(data)
                data = src.recv(65536)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.server.close()


def stalled_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A listener on which a new TCP connect never completes: its accept queue
    (backlog 0) is filled by connections nobody accepts, so Linux drops the
    next SYNs and the connecting side stays in SYN_SENT."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers: list[socket.socket] = []
    for _ in range(8):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
        time.sleep(0.2)
        if c.connect_ex(("127.0.0.1", port)) == errno.EALREADY:
            return server, fillers  # this one hangs: so will the board's
    pytest.fail("could not fill a loopback listener's accept queue")


def timed_board(fw, micropython_exe, tmp_path, cfg):  # type: ignore[no-untyped-def]
    """An app board whose console lines are timestamped as they arrive."""
    board = fw.AppBoard(micropython_exe, tmp_path, cfg)
    board.stamps = []  # (monotonic time, seq) of each stored reading
    board.lines = []  # every console line, in order

    def on_line(line: bytes) -> None:
        board.lines.append(line)
        m = STORED.search(line)
        if m:
            board.stamps.append((time.monotonic(), int(m.group(1))))

    board.on_line = on_line
    return board


def longest_gap(stamps: list[tuple[float, int]]) -> float:
    times = [t for t, _ in stamps]
    return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


def stored_before(board, marker: bytes) -> int:  # type: ignore[no-untyped-def]
    """Readings the board stored before the first console line containing `marker`."""
    n = 0
    for line in board.lines:
        if marker in line:
            return n
        n += bool(STORED.search(line))
    raise AssertionError(f"no {marker!r} line:\n{board.console()[-3000:]}")


def sample_until_a_deadline(fw, board, heap: str | None = None) -> None:  # type: ignore[no-untyped-def]
    """Start `board` sampling every 50 ms and stop it once a link deadline fired."""
    kw = {"heap": heap} if heap else {}
    board.start("--max-readings", "400", "--stats", **kw)
    fw.wait_for(lambda: b"unreachable" in b"".join(board.lines), 20, "a deadline",
                board.console)  # fmt: skip
    board.kill()


def readings_before_the_deadline(board, what: str) -> int:  # type: ignore[no-untyped-def]
    """Readings stored while the link was opening (printed with the longest gap)."""
    before = stored_before(board, b"unreachable")
    gap = longest_gap(board.stamps[:before])
    print(f"{what}: {before} readings stored in 10 s; longest gap between readings "
          f"{gap * 1000:.0f} ms (period 50 ms)")  # fmt: skip
    return before


def test_a_broker_that_never_answers_blocks_nothing_then_mosquitto_drains_it(
    fw, micropython_exe, mosquitto_exe, tmp_path: Path
):
    silent = SilentBroker()
    port = silent.port
    flash = tmp_path / "flash"
    flash.mkdir()
    cfg = fw.board_config(port, sample_period_s=0.1)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    readings = 160  # 16 s of sampling: longer than the silent phase
    vb = VirtualBoard(
        flash,
        script=APP_MAIN,
        args=(
            "--config", str(tmp_path / "config.json"), "--flash", str(flash), "--console",
            "--max-readings", str(readings), "--exit-when-drained", "--stats",
        ),
        tcp_port=None,
        heapsize=ESP32_HEAP,  # the console beside the app
        deploy=False,
        restart=False,
        cwd=REPO,
    ).start()  # fmt: skip
    link = Link(open_port(vb.pty_path))
    broker = gw = None
    try:
        con = BoardConsole(link)
        con.wait_ready(60)
        slowest, answers = poll_info(con, 12)  # longer than the 10 s CONNACK deadline
        log = vb.console_log()
        context = f"\n--- console ---\n{log[-3000:]}"
        during = [int(s) for s in STORED.findall(log.encode())]
        assert silent.received > 0, "the board sent its CONNECT" + context
        assert "no CONNACK within 10000 ms" in log, context  # the deadline dropped it
        assert "connected to" not in log, context
        assert answers >= 20, (answers, context)
        assert len(during) >= 60, (len(during), context)  # 12 s at 0.1 s: ~120
        print(f"silent broker: slowest console answer {slowest * 1000:.0f} ms, {len(during)} "
              f"readings stored in 12 s")  # fmt: skip
        silent.close()
        broker = Mosquitto(tmp_path / "broker", port=port).start()
        gw = fw.TestGateway(broker.host, broker.port)
        deadline = time.monotonic() + 90
        while not vb.exit_codes and time.monotonic() < deadline:  # the bridge notes the exit
            time.sleep(0.2)
        time.sleep(0.3)  # its last console bytes
        log = vb.console_log()
        context = f"\n--- console ---\n{log[-3000:]}"
        assert vb.exit_codes == [0], (vb.exit_codes, context)  # --exit-when-drained
        stored = [int(s) for s in STORED.findall(log.encode())]
        addr = re.search(r"board address ([0-9a-f]{40})", log).group(1)  # type: ignore[union-attr]
        assert stored == list(range(1, readings + 1)), context  # each signed once, in order
        missing = set(range(1, readings + 1)) - gw.seqs(addr)
        assert not missing, (sorted(missing), context)  # 0 lost
        assert not gw.problems, gw.problems  # no seq reused with another reading
        assert gw.first_order[addr] == sorted(gw.first_order[addr]), "drained in order"
        stats = json.loads(re.search(r"TP-STATS (\{.*\})", log).group(1))  # type: ignore[union-attr]
        assert stats["pending"] == 0 and stats["dropped"] == 0, stats
    finally:
        link.close()
        vb.stop()
        silent.close()
        if gw is not None:
            gw.close()
        if broker is not None:
            broker.stop()


def test_a_late_connack_keeps_the_board_sampling(fw, micropython_exe, mosquitto, gateway, tmp_path):
    relay = SlowConnackRelay(mosquitto.port, hold_s=4.0)
    try:
        board = timed_board(fw, micropython_exe, tmp_path, fw.board_config(relay.port))
        board.start("--max-readings", "120", "--exit-when-drained", "--stats")
        assert board.wait(60) == 0, board.console()
    finally:
        relay.close()
    before = stored_before(board, b"connected to")
    opening = board.stamps[:before]
    print(f"late CONNACK: {before} readings stored while waiting 4 s for it; longest gap "
          f"between readings {longest_gap(opening) * 1000:.0f} ms (period 50 ms)")  # fmt: skip
    # 4 s at 50 ms is ~80 readings; a main loop waiting for CONNACK stores 1.
    assert before >= 40, board.console()
    addr = board.address()
    assert gateway.seqs(addr) == set(range(1, 121)), board.console()[-3000:]
    assert board.stats()["pending"] == 0


def test_a_tcp_connect_that_never_completes_keeps_the_board_sampling(fw, micropython_exe, tmp_path):
    server, fillers = stalled_listener()
    port = server.getsockname()[1]
    try:
        board = timed_board(fw, micropython_exe, tmp_path, fw.board_config(port))
        sample_until_a_deadline(fw, board)
    finally:
        server.close()
        for c in fillers:
            c.close()
    text = board.console()
    assert "no connection within 10000 ms" in text, text[-3000:]
    before = readings_before_the_deadline(board, "TCP connect in progress")
    # 10 s at 50 ms is ~200 readings; a connect that blocks the loop stores 1.
    assert before >= 100, text[-3000:]


def test_a_session_without_subacks_is_not_up(fw, micropython_exe, tmp_path):
    broker = ConnackOnlyBroker()
    try:
        board = timed_board(fw, micropython_exe, tmp_path, fw.board_config(broker.port))
        sample_until_a_deadline(fw, board)
    finally:
        broker.close()
    text = board.console()
    assert "no SUBACK within 10000 ms" in text, text[-3000:]
    assert "connected to" not in text, text[-3000:]
    before = readings_before_the_deadline(board, "SUBACKs never come")
    assert before >= 100, text[-3000:]


def test_a_tls_handshake_that_never_ends_keeps_the_board_sampling(fw, micropython_exe, tmp_path):
    # The "broker" takes the TCP connection and the ClientHello and says
    # nothing: the handshake runs inside the CONNECT writes, step by step
    # (board/tcpopen.py), until the CONNACK deadline drops it.
    silent = SilentBroker()
    try:
        cfg = fw.board_config(silent.port)
        cfg["broker"]["tls"] = True
        board = timed_board(fw, micropython_exe, tmp_path, cfg)
        # mbedtls takes its buffers from the heap on the unix port (test_tls.py)
        sample_until_a_deadline(fw, board, heap="256k")
    finally:
        silent.close()
    text = board.console()
    assert silent.received > 0, "the board sent its ClientHello\n" + text[-3000:]
    assert "no CONNACK within 10000 ms" in text, text[-3000:]
    before = readings_before_the_deadline(board, "TLS handshake never answered")
    assert before >= 100, text[-3000:]
