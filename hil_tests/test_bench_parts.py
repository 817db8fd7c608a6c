"""The bench's own parts can fail: the end-state check catches every kind of wrong
end state, the network proxy really delays, blackholes and refuses, the serial
bridge carries bytes both ways, --terrapin-target is checked."""

from __future__ import annotations

import base64
import json
import random
import socket
import threading
import time

import pytest

from terrapin.hil.endstate import Result, check, seq_ranges
from terrapin.hil.netproxy import NetProxy
from terrapin.hil.plugin import hil_targets
from terrapin.tools.devkit.chainkit import make_db
from terrapin.tools.devkit.simboard import SimBoard

# -- the end-state check ---------------------------------------------------------------


class FakeBoard:
    """What check() reads from a board: its console's signed seqs and final stats."""

    def __init__(
        self, key: SimBoard, signed: list[int], stats: dict | None = None, reports=()
    ) -> None:
        self.name = "fake"
        # (pending, dropped so far, next seq): each boot's outbox report after its scan
        self.reports = reports
        self.address = key.address.hex()
        self.pubkey = key.pubkey.hex()
        self._signed = signed
        self._stats = {"pending": 0, "corrupt": 0, "dropped": 0} if stats is None else stats
        self.exit_codes = [0]

    def signed(self) -> list[int]:
        return self._signed

    def console(self) -> str:
        return "".join(
            f"[info] outbox: {p} pending, {d} dropped so far; next seq {n}\n"
            for p, d, n in self.reports
        )

    def stats(self) -> dict:
        if self._stats is None:
            raise AssertionError("no stats")
        return self._stats


def _db(tmp_path, key: SimBoard, seqs, anchored=True, tamper: int | None = None):
    db = tmp_path / "gw.db"
    con = make_db(db)
    con.executescript(
        "CREATE TABLE batches (id INTEGER PRIMARY KEY, status TEXT);"
        "CREATE TABLE batch_leaves (reading_id INTEGER PRIMARY KEY, batch_id INTEGER);"
        f"INSERT INTO batches VALUES (0, '{'confirmed' if anchored else 'pending'}');"
    )
    for seq in seqs:
        envelope, digest = key.signed_reading(seq)
        if seq == tamper:
            envelope = envelope[:-1] + bytes([envelope[-1] ^ 1])  # flip a signature bit
        cur = con.execute(
            "INSERT INTO readings(device, seq, digest, envelope, time, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (key.address, seq, digest, envelope, 1_790_000_000, time.time()),
        )
        con.execute("INSERT INTO batch_leaves VALUES (?, 0)", (cur.lastrowid,))
    con.close()
    return db


@pytest.fixture
def key() -> SimBoard:
    return SimBoard.make(random.Random(7))


def test_clean_end_state_passes(tmp_path, key):
    r = check(Result("t", "unix"), [FakeBoard(key, [1, 2, 3])], _db(tmp_path, key, [1, 2, 3]))
    assert r.ok, r.problems
    assert (r.sent, r.stored, r.lost, r.duplicates) == (3, 3, 0, 0)


def test_lost_reading_is_named_with_its_seq(tmp_path, key):
    board = FakeBoard(key, [1, 2, 3, 4, 5])
    r = check(Result("power_cut", "unix"), [board], _db(tmp_path, key, [1, 2, 5]))
    assert r.lost == 2
    assert any("power_cut/unix board fake" in p and "3-4" in p for p in r.problems), r.problems


def test_seq_signed_twice_is_a_duplicate(tmp_path, key):
    r = check(Result("t", "unix"), [FakeBoard(key, [1, 2, 2, 3])], _db(tmp_path, key, [1, 2, 3]))
    assert r.duplicates == 1 and not r.ok


def test_unanchored_and_forged_readings_fail(tmp_path, key):
    r = check(Result("t", "unix"), [FakeBoard(key, [1, 2])], _db(tmp_path, key, [1, 2], False))
    assert r.unanchored == 2 and not r.ok
    (tmp_path / "x").mkdir()
    db = _db(tmp_path / "x", key, [1, 2], tamper=2)
    r = check(Result("t", "unix"), [FakeBoard(key, [1, 2])], db)
    assert any("seq 2" in p and "verify" in p for p in r.problems), r.problems


def test_outbox_policy_drops_must_be_the_oldest(tmp_path, key):
    stats = {"pending": 0, "corrupt": 0, "dropped": 2}
    ok = check(
        Result("t", "unix"), [FakeBoard(key, [1, 2, 3, 4], stats)], _db(tmp_path, key, [3, 4])
    )
    assert ok.ok and ok.dropped == 2 and ok.lost == 0
    (tmp_path / "y").mkdir()
    bad = check(
        Result("t", "unix"),
        [FakeBoard(key, [1, 2, 3, 4], stats)],
        _db(tmp_path / "y", key, [1, 3]),
    )
    assert not bad.ok


def test_policy_drops_may_count_readings_stored_before_a_boot(tmp_path, key):
    """Acks are not kept across a boot: the board held 1-3 (stored) at its second boot,
    and the policy's drop of that segment with 7-9 counts 6 (outbox_full on qemu)."""
    signed = [1, 2, 3, 7, 8, 9, 10, 11]
    stats = {"pending": 0, "corrupt": 0, "dropped": 6}
    stored = [1, 2, 3, 10, 11]
    board = FakeBoard(key, signed, stats, reports=[(0, 0, 1), (3, 0, 7)])
    ok = check(Result("t", "unix"), [board], _db(tmp_path, key, stored))
    assert ok.ok, ok.problems
    assert (ok.lost, ok.dropped, ok.board_dropped, ok.stored) == (0, 3, 6, 5)
    # Without that boot's report the surplus is unexplained and 7-9 are lost.
    (tmp_path / "a").mkdir()
    bad = check(
        Result("t", "unix"), [FakeBoard(key, signed, stats)], _db(tmp_path / "a", key, stored)
    )
    assert bad.lost == 3 and any("7-9" in p and "at most 0" in p for p in bad.problems)
    # Nor by a boot that held 3 stored readings but dropped nothing (all 6 were before).
    (tmp_path / "b").mkdir()
    late = FakeBoard(key, signed, stats, reports=[(0, 0, 1), (3, 6, 12)])
    bad = check(Result("t", "unix"), [late], _db(tmp_path / "b", key, stored))
    assert bad.lost == 3 and any("7-9" in p and "at most 0" in p for p in bad.problems)


@pytest.mark.parametrize(
    ("stored", "dropped", "named"),
    [
        ([1, 2, 3, 8, 10, 11], 4, "not the oldest"),  # lost 7 and 9, 8 stored in between
        ([1, 2, 3, 11], 3, "7-10"),  # 4 lost, 3 counted: one lost outside the policy
        ([1, 2, 3, 10, 11], 7, "7-9"),  # 7 counted: more than 3 lost + 3 held at a boot
    ],
)
def test_losses_outside_the_policy_fail(tmp_path, key, stored, dropped, named):
    signed = [1, 2, 3, 7, 8, 9, 10, 11]
    stats = {"pending": 0, "corrupt": 0, "dropped": dropped}
    board = FakeBoard(key, signed, stats, reports=[(0, 0, 1), (3, 0, 7)])
    r = check(Result("t", "unix"), [board], _db(tmp_path, key, stored))
    assert not r.ok and r.lost == len(set(signed) - set(stored)) and r.dropped == 0
    assert any(named in p for p in r.problems), r.problems


def test_policy_count_beyond_what_the_board_held_fails(tmp_path, key):
    stats = {"pending": 0, "corrupt": 0, "dropped": 4}
    board = FakeBoard(key, [1, 2, 3, 7], stats, reports=[(0, 0, 1), (3, 0, 7)])
    r = check(Result("t", "unix"), [board], _db(tmp_path, key, [1, 2, 3, 7]))
    assert r.lost == 0 and any("counted 4" in p for p in r.problems), r.problems


def test_outbox_left_pending_fails(tmp_path, key):
    board = FakeBoard(key, [1], {"pending": 3, "corrupt": 0, "dropped": 0})
    assert not check(Result("t", "unix"), [board], _db(tmp_path, key, [1])).ok


def test_seq_ranges():
    assert seq_ranges([7, 1, 2, 3, 9, 10]) == "1-3, 7, 9-10"


# -- the network proxy -------------------------------------------------------------------


@pytest.fixture
def echo():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=_echo, args=(c,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()
    srv.close()


def _echo(c):
    with c:
        while data := c.recv(4096):
            c.sendall(data)


def _fastest(port: int, tries: int = 3) -> float:
    return min(_roundtrip(port) for _ in range(tries))


def _roundtrip(port: int, timeout: float = 3.0) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        t0 = time.monotonic()
        s.sendall(b"ping")
        assert s.recv(16) == b"ping"
        return time.monotonic() - t0


def test_proxy_delay_loss_partition_heal(echo):
    proxy = NetProxy(echo, seed=1).start()
    try:
        # Relative to the undelayed round trip, so a loaded machine's own latency
        # (tens of ms under a parallel test run) cannot fail it.
        fast = _fastest(proxy.port)
        proxy.set(delay_ms=100)
        slow = _fastest(proxy.port)
        assert slow - fast > 0.19 and slow < fast + 0.6, (fast, slow)  # both directions
        proxy.set(loss=0.5)
        assert _roundtrip(proxy.port, 10) >= 0.2 and proxy.retransmits > 0
        proxy.clear()
        proxy.partition()
        with pytest.raises(TimeoutError):
            _roundtrip(proxy.port, timeout=0.5)  # blackhole: no answer, no refusal
        proxy.partition(refuse=True)
        with pytest.raises((ConnectionError, AssertionError, OSError)):
            _roundtrip(proxy.port, timeout=2)
        proxy.heal()
        assert _fastest(proxy.port) < slow - 0.1  # no delay, no partition
    finally:
        proxy.stop()


# -- the serial bridge and --terrapin-target----------------------------------------------------


def test_serial_bridge_carries_the_uplink(tmp_path, echo):
    """A 'board' on a TCP serial socket opens an uplink to the echo server through the bridge."""
    from terrapin.hil.serialbridge import SerialBridge

    uart = socket.socket()
    uart.bind(("127.0.0.1", 0))
    uart.listen(1)
    bridge = SerialBridge(f"socket://127.0.0.1:{uart.getsockname()[1]}", tmp_path / "console.log")
    board, _ = uart.accept()
    bridge.start()
    try:
        f = board.makefile("rwb")
        f.write(b"[info] hello\nTPX O %s %d\n" % (echo[0].encode(), echo[1]))
        f.flush()
        opened = f.readline()
        assert opened.startswith(b"TPX K ")  # with the host's clock
        assert abs(int(opened[6:]) - time.time()) < 5
        f.write(b"TPX D " + base64.b64encode(b"mqtt bytes") + b"\n")
        f.flush()
        line = f.readline()
        assert line.startswith(b"TPX D ")
        assert base64.b64decode(line[6:]) == b"mqtt bytes"
        f.write(b"TPX O 127.0.0.1 1\n")  # nothing listens on port 1
        f.flush()
        assert f.readline().startswith(b"TPX E")
    finally:
        bridge.stop()
        board.close()
        uart.close()
    assert (tmp_path / "console.log").read_bytes() == b"[info] hello\n"


def test_target_option(pytestconfig):
    class Cfg:
        def __init__(self, raw):
            self.raw = raw

        def getoption(self, name, default=None):
            return self.raw

    assert hil_targets(Cfg(None)) == ["unix", "socket"]
    assert hil_targets(Cfg("serial")) == ["serial"]
    with pytest.raises(pytest.UsageError):
        hil_targets(Cfg("esp8266"))
    assert json.dumps(hil_targets(pytestconfig))  # the running session's choice is valid
