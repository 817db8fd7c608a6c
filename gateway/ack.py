"""The application ACK, sent to a board after its readings are committed.

Payload (deterministic CBOR map, docs/PROTOCOL.md):
    {1: [[lo, hi], ...], 2: [[seq, reason], ...]}
key 1: sequence numbers now stored (including duplicates acked again) as
sorted, merged, inclusive ranges; key 2: permanently rejected readings with
their reason code. A key is absent when empty. Topic: terrapin/v1/<addr>/ack,
QoS 1.
"""

from __future__ import annotations

from collections.abc import Iterable

import cbor2

TOPIC_PREFIX = "terrapin/v1/"


def ack_topic(address: bytes) -> str:
    return f"{TOPIC_PREFIX}{address.hex()}/ack"


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
    """(ranges, rejected) from an ACK payload; ValueError when it is not one."""
    try:
        body = cbor2.loads(payload, max_depth=3, allow_indefinite=False)
    except Exception as exc:
        raise ValueError(f"ack is not CBOR: {exc}") from None
    if not isinstance(body, dict) or not set(body) <= {1, 2}:
        raise ValueError("ack is not a map with keys 1, 2")
    try:
        ranges = [(int(lo), int(hi)) for lo, hi in body.get(1, [])]
        rejected = [(int(s), int(r)) for s, r in body.get(2, [])]
    except (TypeError, ValueError):
        raise ValueError("ack entries are not pairs of integers") from None
    return ranges, rejected


def acked_seqs(payload: bytes) -> set[int]:
    """Every sequence number an ACK settles (stored or rejected); for simulators."""
    ranges, rejected = decode_ack(payload)
    out = {s for s, _ in rejected}
    for lo, hi in ranges:
        out.update(range(lo, hi + 1))
    return out


class AckBuilder:
    """Collects the outcomes of one transaction, then yields (topic, payload) per board."""

    def __init__(self):
        self._stored: dict[bytes, list[int]] = {}
        self._rejected: dict[bytes, list[tuple[int, int]]] = {}

    def stored(self, board: bytes, seq: int) -> None:
        self._stored.setdefault(board, []).append(seq)

    def rejected(self, board: bytes, seq: int, reason: int) -> None:
        self._rejected.setdefault(board, []).append((seq, int(reason)))

    def messages(self) -> list[tuple[str, bytes]]:
        boards = sorted(set(self._stored) | set(self._rejected))
        return [
            (ack_topic(b), encode_ack(self._stored.get(b, ()), self._rejected.get(b, ())))
            for b in boards
        ]
