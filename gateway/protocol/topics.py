"""MQTT topics of wire protocol v1 (docs/PROTOCOL.md section 5).

    terrapin/v1/<address hex>/reading   board -> gateway, QoS 1
    terrapin/v1/<address hex>/status    retained; last will "offline"
    terrapin/v1/<address hex>/ack       gateway -> board, QoS 1

<address hex> is the board's 20-byte address as 40 lowercase hex digits.
"""

from __future__ import annotations

PREFIX = "terrapin/v1/"
READING = "reading"
STATUS = "status"
ACK = "ack"
READING_FILTER = PREFIX + "+/" + READING  # what the gateway subscribes to
STATUS_FILTER = PREFIX + "+/" + STATUS

_HEX = frozenset("0123456789abcdef")


def board_topic(address: bytes, kind: str) -> str:
    return f"{PREFIX}{address.hex()}/{kind}"


def reading_topic(address: bytes) -> str:
    return board_topic(address, READING)


def status_topic(address: bytes) -> str:
    return board_topic(address, STATUS)


def ack_topic(address: bytes) -> str:
    return board_topic(address, ACK)


def topic_address(topic: str) -> tuple[bytes | None, str]:
    """'terrapin/v1/<40 hex>/reading' -> (address, 'reading'); (None, kind) if malformed."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "terrapin" or parts[1] != "v1":
        return None, ""
    addr = parts[2]
    if len(addr) != 40 or not _HEX.issuperset(addr):
        return None, parts[3]
    return bytes.fromhex(addr), parts[3]
