"""The protocol core is the one host-side table of each concept: the firmware's
and the docs' copies of the reason codes are tied to it here, so they cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from terrapin.firmware import ack as fw_ack
from terrapin.firmware import cose_check
from terrapin.gateway.errors import TerrapinError
from terrapin.gateway.protocol import topics
from terrapin.gateway.protocol.ack import decode_ack
from terrapin.gateway.protocol.envelope import decode_envelope
from terrapin.gateway.protocol.errors import (
    AckError,
    EnvelopeError,
    ProtocolError,
    PublicKeyError,
)
from terrapin.gateway.protocol.reasons import Reason, reason_name, reason_text
from terrapin.gateway.protocol.signature import address

PROTOCOL_MD = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"


def test_firmware_ack_names_every_reason_and_no_other() -> None:
    named = [(c, fw_ack.reason_name(c)) for c in range(0, 64)]
    known = [(c, n) for c, n in named if n != f"REASON_{c}"]
    assert known == [(int(r), r.name) for r in Reason]


def test_firmware_cose_check_codes_are_the_gateway_codes() -> None:
    names = cose_check.REASON_NAMES
    assert names[0] == ""
    for code, name in enumerate(names[1:], start=1):
        assert Reason(code).name == name, f"firmware code {code} is {name}"
        assert getattr(cose_check, name) == code, name
    # Every reason the envelope alone shows is in the firmware: all but the gateway-only ones.
    assert len(names) - 1 == Reason.BAD_PAYLOAD


def test_docs_table_is_the_reason_table() -> None:
    text = PROTOCOL_MD.read_text()
    section = text[text.index("## 8. Reason codes") : text.index("## 9.")]
    rows = [(int(c), n) for c, n in re.findall(r"^\| (\d+) \| ([A-Z_]+) \|", section, re.M)]
    assert rows == [(int(r), r.name) for r in Reason]


def test_every_reason_has_a_name_and_a_text() -> None:
    for r in Reason:
        assert reason_name(int(r)) == r.name
        assert reason_text(int(r)) == f"{r.name} ({int(r)}): {r.text}" and r.text
    assert reason_name(99) == "99"
    assert reason_text(99) == "unknown reason 99"


@pytest.mark.parametrize("kind", [topics.READING, topics.STATUS, topics.ACK])
def test_topics_round_trip(kind: str) -> None:
    addr = bytes(range(20))
    topic = topics.board_topic(addr, kind)
    assert topic == f"terrapin/v1/{addr.hex()}/{kind}"
    assert topics.topic_address(topic) == (addr, kind)


@pytest.mark.parametrize(
    "topic, want",
    [
        ("terrapin/v1/" + "AB" * 20 + "/reading", (None, "reading")),  # upper case
        ("terrapin/v1/" + "ab" * 19 + "/reading", (None, "reading")),
        ("terrapin/v2/" + "ab" * 20 + "/reading", (None, "")),
        ("terrapin/v1/" + "ab" * 20 + "/reading/x", (None, "")),
    ],
)
def test_malformed_topics_have_no_address(topic: str, want: tuple) -> None:
    assert topics.topic_address(topic) == want


def test_protocol_errors_are_terrapin_errors_and_value_errors() -> None:
    with pytest.raises(EnvelopeError) as env:
        decode_envelope(b"\xff")
    with pytest.raises(AckError) as ack:
        decode_ack(b"\xff")
    with pytest.raises(PublicKeyError) as key:
        address(b"\x04" + bytes(63))
    for info in (env, ack, key):
        assert isinstance(info.value, ProtocolError)
        assert isinstance(info.value, TerrapinError)
        assert isinstance(info.value, ValueError)
    assert env.value.reason == Reason.MALFORMED_CBOR
    assert str(env.value).startswith("MALFORMED_CBOR: envelope: ")
