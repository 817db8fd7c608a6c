"""The application ACK codec (wire protocol v1, docs/PROTOCOL.md section 7).

Payload (deterministic CBOR map):
    {1: [[lo, hi], ...], 2: [[seq, reason], ...]}
key 1: sequence numbers now stored (including duplicates acked again) as
sorted, merged, inclusive ranges; key 2: permanently rejected readings with
their reason code. A key is absent when empty. Topic: `topics.ack_topic`, QoS 1.
The board's decoder is firmware/ack.py; gateway/tests/test_ack.py ties the two.

Caps: each key lists at most MAX_ACK_ENTRIES entries (the lowest sequence
numbers), so a payload is at most MAX_ACK_BYTES whatever one board sent: far
below the broker's max_packet_size (4096 in the generated mosquitto.conf) and
the board's own decoder limits (256 pairs per key, 4096 bytes). A board
learns about what an ACK left out from a later ACK: it resends an entry after
its ACK timeout, and the gateway acks it again (duplicate) or rejects it again.
"""

from __future__ import annotations

from collections.abc import Iterable

import cbor2

from terrapin.gateway.protocol.errors import AckError
from terrapin.gateway.protocol.topics import ack_topic

__all__ = [
    "MAX_ACK_BYTES",
    "MAX_ACK_ENTRIES",
    "AckError",
    "ack_topic",
    "acked_seqs",
    "decode_ack",
    "encode_ack",
    "seq_ranges",
]

# At most this many ranges (key 1) and rejections (key 2) in one ACK: more
# than a board's whole window (firmware `window` <= 64), so an honest board
# always hears about everything it has in flight.
MAX_ACK_ENTRIES = 64
# The largest payload encode_ack can produce: map head + two keys with list
# heads (2 bytes each) + 64 ranges of two 9-byte integers (19 bytes) + 64
# rejections of a 9-byte seq and a 1-byte reason (11 bytes).
MAX_ACK_BYTES = 1 + 2 * (1 + 2) + MAX_ACK_ENTRIES * (19 + 11)


def seq_ranges(seqs: Iterable[int]) -> list[list[int]]:
    """[3, 1, 2, 7, 5, 6] -> [[1, 3], [5, 7]]."""
    out: list[list[int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


def encode_ack(stored: Iterable[int] = (), rejected: Iterable[tuple[int, int]] = ()) -> bytes:
    """The ACK payload; each key cut to its MAX_ACK_ENTRIES lowest entries (see the caps)."""
    body: dict[int, list] = {}
    ranges = seq_ranges(stored)[:MAX_ACK_ENTRIES]
    if ranges:
        body[1] = ranges
    rej = sorted({(int(s), int(r)) for s, r in rejected})[:MAX_ACK_ENTRIES]
    if rej:
        body[2] = [[s, r] for s, r in rej]
    return cbor2.dumps(body, canonical=True)


def decode_ack(payload: bytes) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(ranges, rejected) from an ACK payload; AckError (a ValueError) when it is not one."""
    try:
        body = cbor2.loads(payload, max_depth=3, allow_indefinite=False)
    except Exception as exc:
        raise AckError(f"ack is not CBOR: {exc}") from None
    if not isinstance(body, dict) or not set(body) <= {1, 2}:
        raise AckError("ack is not a map with keys 1, 2")
    try:
        ranges = [(int(lo), int(hi)) for lo, hi in body.get(1, [])]
        rejected = [(int(s), int(r)) for s, r in body.get(2, [])]
    except (TypeError, ValueError):
        raise AckError("ack entries are not pairs of integers") from None
    return ranges, rejected


def acked_seqs(payload: bytes) -> set[int]:
    """Every sequence number an ACK settles (stored or rejected); for simulators."""
    ranges, rejected = decode_ack(payload)
    out = {s for s, _ in rejected}
    for lo, hi in ranges:
        out.update(range(lo, hi + 1))
    return out
