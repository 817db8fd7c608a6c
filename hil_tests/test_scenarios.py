"""Fault-injection scenarios: each ends with the exact end state (hil.finish).

Every signed reading stored once and anchored, none duplicated, the boards'
outboxes empty and sane. Runs on every --terrapin-target (default: unix and socket).
Durations and counts scale with --terrapin-hil-scale (1 in CI; a bench uses more).
"""

from __future__ import annotations

import random
import re
import time

import pytest

from terrapin.hil.endstate import BOOT_REPORT, unsynced_times

pytestmark = [pytest.mark.mosquitto, pytest.mark.micropython]

DRAIN = ("--exit-when-drained", "--stats")


def take(n: int) -> tuple[str, ...]:
    """Boot options: take n readings this boot, exit once all are acknowledged."""
    return ("--max-readings", str(n), *DRAIN)


def test_baseline(hil, boards):
    """No fault: two boards, every reading stored once and anchored."""
    fleet = [boards("b0"), boards("b1")]
    for b in fleet:
        b.start(*take(hil.n(40)))
    result = hil.finish(fleet)
    assert result.stored == result.sent >= 2 * hil.n(40)


_RECOVERED = BOOT_REPORT  # pending, dropped so far, next seq
_CORRUPT = re.compile(r"^\[error\] outbox: (\d+) corrupt and \d+ torn records at boot", re.M)


def recovered_by_itself(hil, board, reports_before: int, signed_before: list[int]) -> None:
    """The boot after a power cut recovers on its own: it reports its outbox, finds no
    corrupt record, and its next seq is above every seq it signed before the cut."""
    deadline = time.monotonic() + hil.seconds(30.0) * board.wait_scale
    while len(_RECOVERED.findall(board.console())) <= reports_before:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{board.name}: no outbox report after the power cut (boot did not recover):\n"
                + board.console_tail()
            )
        time.sleep(0.02)
    console = board.console()
    pending, _dropped, next_seq = map(int, _RECOVERED.findall(console)[-1])
    corrupt = [int(n) for n in _CORRUPT.findall(console) if int(n)]
    assert not corrupt, f"{board.name}: corrupt outbox records after a cut: {corrupt}"
    top = max(signed_before, default=0)
    assert next_seq > top, (
        f"{board.name}: after the cut next seq {next_seq} <= {top}, already signed "
        f"({pending} pending):\n{board.console_tail()}"
    )


def test_power_cut(hil, board):
    """kill -9 the board at random points (boot, sampling, outbox write, between publish
    and ack); after each cut the board alone recovers: no host-side repair in between."""
    rng = random.Random(int(time.time()))
    total = hil.n(60)
    key = board.read_file("key.bin")  # compared, never printed
    for cut in range(hil.n(6)):
        reports, signed = len(_RECOVERED.findall(board.console())), board.signed()
        board.start(*take(total))
        if cut % 2:  # anywhere from boot on, the recovery scan included
            time.sleep(rng.uniform(0.05, 0.6))
        else:  # once it has recovered from the last cut by itself, while it samples
            recovered_by_itself(hil, board, reports, signed)
            time.sleep(rng.uniform(0.05, 0.6))
        board.power_cut()
    reports, signed = len(_RECOVERED.findall(board.console())), board.signed()
    board.start(*take(max(0, total - len(set(board.signed())))))
    recovered_by_itself(hil, board, reports, signed)
    hil.finish([board])
    # every cut, then a clean last boot (a serial or qemu board records no exit
    # for its provisioning reboot, so the cuts are counted, not every boot)
    assert board.exit_codes.count(-9) >= hil.n(6) and board.exit_codes[-1] == 0, board.exit_codes
    assert board.read_file("key.bin") == key, "the board's identity changed across power cuts"


def test_broker_restart(hil, board, broker):
    """Mosquitto stopped and started again (persistence on) while the board publishes."""
    board.start(*take(hil.n(60)))
    hil.wait_signed(board, hil.n(15))
    broker.stop()
    time.sleep(hil.seconds(1.5))
    broker.start()
    hil.finish([board])


def test_gateway_kill_9(hil, boards, gateway):
    """kill -9 the gateway twice under load; its persistent session gets the backlog."""
    fleet = [boards("b0"), boards("b1")]
    starts = gateway.starts
    for b in fleet:
        b.start(*take(hil.n(60)))
    for round_ in range(2):
        hil.wait_signed(fleet[0], hil.n(15) * (round_ + 1))
        gateway.kill()
        time.sleep(hil.seconds(1.0))
        gateway.start()
    hil.finish(fleet)
    assert gateway.starts == starts + 2


def test_partition(hil, board, network):
    """Board and broker cut apart (blackhole) for a while; the backlog drains after."""
    board.start(*take(hil.n(80)))
    hil.wait_signed(board, hil.n(10))
    network.partition()
    time.sleep(hil.seconds(4.0))
    network.heal()
    hil.finish([board])


def test_loss_and_latency(hil, board, network):
    """80 ms +- 40 ms latency and 5 % segment loss (TCP retransmit stalls) for the whole run."""
    network.set(delay_ms=80, jitter_ms=40, loss=0.05)
    board.start(*take(hil.n(50)))
    hil.finish([board])
    assert network.retransmits > 0


def test_clock_unsynced_then_synced(hil, board):
    """Readings taken before the clock is set carry time 0 and are stored with a flag."""
    board.start("--no-clock", *take(hil.n(15)))
    board.wait_exit(60)
    board.start(*take(hil.n(15)))
    hil.finish([board])
    zero, real = unsynced_times(hil.home.db_path, board)
    assert len(zero) == hil.n(15) and len(real) == hil.n(15), (zero, real)
    assert max(zero) < min(real)


def test_outbox_full(hil, boards, network):
    """Cut off with a tiny outbox: the board drops its oldest readings (its documented
    policy) and counts them; everything it kept is stored once after the link is back."""
    board = boards("b0", outbox={"max_bytes": 4096, "segment_bytes": 2048})
    network.partition(refuse=True)
    board.start(*take(hil.n(45)))
    hil.wait_signed(board, hil.n(45))
    time.sleep(0.3)
    network.heal()
    result = hil.finish([board])
    assert result.dropped > 0 and result.stored == result.sent - result.dropped


def test_outbox_full_after_delivered_boot(hil, boards, network):
    """outbox_full after a boot whose readings were all stored and acked (as a qemu
    board's boots during provisioning): acks are not written to flash, so the next
    boot holds those readings as pending again and the full policy counts them in
    `dropped` with the readings it really lost; the check tells them apart."""
    board = boards("b0", outbox={"max_bytes": 4096, "segment_bytes": 2048})
    first = 5
    board.start(*take(first))
    assert board.wait_exit(60 * board.wait_scale) == 0, board.console_tail()
    network.partition(refuse=True)
    board.start(*take(hil.n(45)))
    hil.wait_signed(board, first + hil.n(45))
    time.sleep(0.3)
    network.heal()
    result = hil.finish([board])
    assert result.dropped > 0 and result.stored == result.sent - result.dropped
    assert result.board_dropped > result.dropped, result.row()  # the delivered ones too
