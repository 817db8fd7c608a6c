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
    MALFORMED_CBOR = (
        1  # not CBOR, indefinite length, trailing bytes, too deep, non-canonical envelope
    )
    OVERSIZE = 2  # envelope > 1024 bytes
    BAD_ENVELOPE = 3  # not tag 18, not a 4-array, wrong field types, unknown headers
    UNSUPPORTED_ALG = 4  # protected header is not exactly {1: -47}
    BAD_KID = 5  # kid missing or not 20 bytes
    TOPIC_MISMATCH = 6  # kid does not match the address in the topic
    BAD_SIGNATURE = 7  # signature not 64 bytes, or does not verify for kid
    HIGH_S = 8  # s > n/2 (malleable signature)
    NON_CANONICAL = 9  # payload bytes are not deterministic CBOR
    BAD_PAYLOAD = 10  # payload schema: keys, types, record count, bad record
    UNKNOWN_BOARD = 11  # kid not on the allow-list
    EQUIVOCATION = 12  # same (board, seq) stored with a different digest
    STALE_SEQUENCE = 13  # seq below the board's replay window and not stored
    RATE_LIMITED = 14  # board exceeded its configured rate


_TEXT = {
    Reason.MALFORMED_CBOR: "not valid, canonical CBOR",
    Reason.OVERSIZE: "envelope larger than 1024 bytes",
    Reason.BAD_ENVELOPE: "not a COSE_Sign1 envelope of the expected shape",
    Reason.UNSUPPORTED_ALG: "protected header is not {1: -47} (ES256K)",
    Reason.BAD_KID: "kid missing or not 20 bytes",
    Reason.TOPIC_MISMATCH: "kid does not match the board address in the topic",
    Reason.BAD_SIGNATURE: "signature does not verify for the board",
    Reason.HIGH_S: "signature has a high S value (malleable)",
    Reason.NON_CANONICAL: "payload is not deterministic CBOR",
    Reason.BAD_PAYLOAD: "payload does not follow the reading schema",
    Reason.UNKNOWN_BOARD: "board is not on the allow-list",
    Reason.EQUIVOCATION: "sequence number already stored with a different digest",
    Reason.STALE_SEQUENCE: "sequence number below the replay window",
    Reason.RATE_LIMITED: "board exceeded its reading rate",
}


def reason_text(reason: int) -> str:
    """One line for a person: 'BAD_SIGNATURE (7): signature does not verify ...'."""
    try:
        r = Reason(reason)
    except ValueError:
        return f"unknown reason {reason}"
    return f"{r.name} ({int(r)}): {_TEXT[r]}"


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
