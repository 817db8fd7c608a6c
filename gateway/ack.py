"""The ack stage: the outcomes of one committed transaction -> one ACK per board.

The payload format and its codec are the protocol core's
(terrapin.gateway.protocol.ack); this module only groups outcomes by board.
"""

from __future__ import annotations

from terrapin.gateway.protocol.ack import ack_topic, encode_ack


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
