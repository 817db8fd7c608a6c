"""The application ACK codec (wire protocol v1, docs/PROTOCOL.md section 7).

Payload (deterministic CBOR map):
    {1: [[lo, hi], ...], 2: [[seq, reason], ...]}
key 1: sequence numbers now stored (including duplicates acked again) as
sorted, merged, inclusive ranges; key 2: permanently rejected readings with
their reason code. A key is absent when empty. Topic: `topics.ack_topic`, QoS 1.
The board's decoder is firmware/ack.py; gateway/tests/test_ack.py ties the two.
"""

from __future__ import annotations

from collections.abc import Iterable

import cbor2

from terrapin.gateway.protocol.errors import AckError
from terrapin.gateway.protocol.topics import ack_topic

__all__ = ["AckError", "ack_topic", "acked_seqs", "decode_ack", "encode_ack", "seq_ranges"]


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
    body: dict[int, list] = {}
    ranges = seq_ranges(stored)
    if ranges:
        body[1] = ranges
    rej = sorted({(int(s), int(r)) for s, r in rejected})
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
