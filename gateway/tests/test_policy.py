"""Sequence rules, data-quality flags and the rate limit."""

from __future__ import annotations

import pytest

from terrapin.gateway.policy import Policy, PolicyConfig, Sequence, sequence_outcome
from terrapin.gateway.protocol.envelope import Reading
from terrapin.gateway.protocol.reasons import Flag, flag_names, reason_text

D1, D2 = b"\x01" * 32, b"\x02" * 32


@pytest.mark.parametrize(
    "seq, stored, highest, expected",
    [
        (5, None, None, Sequence.NEW),  # first reading of a board
        (5000, None, 10, Sequence.NEW),  # gap forward
        (9, None, 10, Sequence.NEW),  # late, inside the window
        (10 - 4096, None, 10, Sequence.NEW),  # at the window's edge
        (10 - 4097, None, 10, Sequence.STALE),  # below it
        (9, D1, 10, Sequence.DUPLICATE),
        (9, D2, 10, Sequence.EQUIVOCATION),
        (1, D1, 100000, Sequence.DUPLICATE),  # stored long ago: still a duplicate
    ],
)
def test_sequence_rules(seq, stored, highest, expected):
    assert sequence_outcome(seq, D1, stored, highest, 4096) is expected


NOW = 1_767_225_600.0


def _flags(t, records=(("t", "Cel", 20.0),), **cfg):
    return Policy(PolicyConfig(**cfg)).flags(Reading(1, t, tuple(records)), NOW)


def test_flags():
    assert _flags(int(NOW)) == 0
    assert _flags(0) == Flag.TIME_UNSYNCED
    assert _flags(int(NOW) + 3600) == Flag.TIME_FUTURE
    assert _flags(int(NOW) + 100) == 0  # within max_clock_skew
    assert _flags(int(NOW) - 86400 * 60) == Flag.TIME_OLD
    assert _flags(int(NOW), [("t", "Cel", 200.0)]) == Flag.OUT_OF_RANGE
    assert _flags(int(NOW), [("h", "%RH", 101.0)]) == Flag.OUT_OF_RANGE
    assert _flags(int(NOW), [("x", "furlong", 1.0)]) == Flag.UNKNOWN_UNIT
    assert _flags(int(NOW), [("t", "Cel", 200.0)], ranges={"Cel": (0.0, 300.0)}) == 0
    assert flag_names(Flag.TIME_UNSYNCED | Flag.OUT_OF_RANGE) == ["TIME_UNSYNCED", "OUT_OF_RANGE"]


def test_rate_limit_is_a_token_bucket():
    p = Policy(PolicyConfig(rate_per_minute=3), boards={b"a" * 20})
    assert [p.rate_limited(b"a" * 20, 0.0) for _ in range(4)] == [False, False, False, True]
    assert not p.rate_limited(b"a" * 20, 20.0)  # one token back after 20 s
    assert not Policy(boards={b"a" * 20}).rate_limited(b"a" * 20, 0.0)


def test_allow_list_refreshes_for_an_unknown_board():
    boards = {b"a" * 20}
    p = Policy(boards=set(), refresh=lambda: boards)
    assert p.known(b"a" * 20)
    assert not p.known(b"b" * 20)


def test_reason_text():
    assert reason_text(7).startswith("BAD_SIGNATURE (7)")
    assert reason_text(99) == "unknown reason 99"


def test_rate_limited_readings_are_rejected_after_the_signature_check():
    from terrapin.gateway.check import Checker
    from terrapin.gateway.protocol.envelope import build_envelope
    from terrapin.gateway.protocol.reasons import Reason
    from terrapin.gateway.protocol.signature import Verifier
    from terrapin.gateway.store import Pending, Rejected
    from terrapin.tools.devkit.simboard import board_address, new_key

    key = new_key()
    addr = board_address(key)
    checker = Checker(Policy(PolicyConfig(rate_per_minute=2), boards={addr}), Verifier())
    outs = [
        checker.check("t", addr, build_envelope(key, s, int(NOW), [("t", "Cel", 1.5)]), NOW)
        for s in (1, 2, 3)
    ]
    assert [type(o) for o in outs] == [Pending, Pending, Rejected]
    assert outs[2].reason == Reason.RATE_LIMITED and outs[2].seq == 3
