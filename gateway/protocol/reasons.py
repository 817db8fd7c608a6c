"""Reason codes for rejected readings and data-quality flags for stored ones.

`Reason` numbers are part of the wire protocol (the ACK's key 2 carries them
back to the board) and match docs/PROTOCOL.md and the firmware. A DUPLICATE is
not a rejection: the reading is acked again and counted as `duplicate`.

`Flag` bits are stored with a reading (readings.flags): the reading is valid
and kept, but something about its content looks wrong.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag


class Reason(IntEnum):
    """The one table of reason codes: number, name and a line for a person.

    docs/PROTOCOL.md section 8 and the firmware's copies (firmware/ack.py,
    firmware/cose_check.py) are tied to it by gateway/tests/test_protocol_core.py.
    """

    def __new__(cls, code: int, text: str):
        member = int.__new__(cls, code)
        member._value_ = code
        member.text = text
        return member

    # not CBOR, indefinite length, trailing bytes, too deep, non-canonical envelope
    MALFORMED_CBOR = 1, "not valid, canonical CBOR"
    OVERSIZE = 2, "envelope larger than 1024 bytes"
    # not tag 18, not a 4-array, wrong field types, unknown headers
    BAD_ENVELOPE = 3, "not a COSE_Sign1 envelope of the expected shape"
    UNSUPPORTED_ALG = 4, "protected header is not {1: -47} (ES256K)"
    BAD_KID = 5, "kid missing or not 20 bytes"
    TOPIC_MISMATCH = 6, "kid does not match the board address in the topic"
    # signature not 64 bytes, or does not verify for kid
    BAD_SIGNATURE = 7, "signature does not verify for the board"
    HIGH_S = 8, "signature has a high S value (malleable)"
    NON_CANONICAL = 9, "payload is not deterministic CBOR"
    # keys, types, record count, bad record
    BAD_PAYLOAD = 10, "payload does not follow the reading schema"
    UNKNOWN_BOARD = 11, "board is not on the allow-list"
    EQUIVOCATION = 12, "sequence number already stored with a different digest"
    STALE_SEQUENCE = 13, "sequence number below the replay window"
    RATE_LIMITED = 14, "board exceeded its reading rate"


def reason_name(code: int) -> str:
    """The name of a reason code, or the number itself when it is not one."""
    try:
        return Reason(code).name
    except ValueError:
        return str(code)


def reason_text(reason: int) -> str:
    """One line for a person: 'BAD_SIGNATURE (7): signature does not verify ...'."""
    try:
        r = Reason(reason)
    except ValueError:
        return f"unknown reason {reason}"
    return f"{r.name} ({int(r)}): {r.text}"


class Flag(IntFlag):
    """Data-quality flags stored in readings.flags (a bit set; 0 = nothing noticed)."""

    TIME_UNSYNCED = 1  # time == 0: the board's clock was not set
    TIME_FUTURE = 2  # time later than arrival + max_clock_skew
    TIME_OLD = 4  # time earlier than arrival - max_age (or before 2020)
    UNKNOWN_UNIT = 8  # a record's unit is not a SenML unit the gateway knows
    OUT_OF_RANGE = 16  # a value lies outside the plausible range for its unit
    NON_FINITE = 32  # a value is NaN or infinite
    EQUIVOCATED = 64  # the board later sent another envelope for this seq (rejected)


def flag_names(flags: int) -> list[str]:
    return [f.name for f in Flag if flags & f and f.name]
