"""ACK payloads: ranges, encoding, and the firmware's decoder reading them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from terrapin.firmware import ack as fw_ack
from terrapin.gateway.ack import AckBuilder
from terrapin.gateway.protocol.ack import acked_seqs, decode_ack, encode_ack, seq_ranges


def test_ranges():
    assert seq_ranges([3, 1, 2, 7, 5, 6, 6]) == [[1, 3], [5, 7]]
    assert seq_ranges([]) == []


def test_encoding_is_deterministic_and_keys_are_optional():
    assert encode_ack() == b"\xa0"
    assert encode_ack([1, 2, 3]) == bytes.fromhex("a10181820103")
    assert decode_ack(encode_ack([5], [(9, 7)])) == ([(5, 5)], [(9, 7)])


@given(
    st.sets(st.integers(0, 2**63 - 1), max_size=50),
    st.dictionaries(st.integers(0, 1000), st.integers(1, 14), max_size=5),
)
def test_firmware_reads_what_the_gateway_writes(stored, rejected):
    payload = encode_ack(stored, rejected.items())
    ranges, rej = fw_ack.decode(payload)
    got = {s for lo, hi in ranges for s in range(lo, hi + 1)}  # runs of stored seqs only
    assert got == stored
    assert sorted(rej) == sorted(rejected.items())
    assert acked_seqs(payload) >= set(rejected)


def test_builder_groups_by_board():
    b = AckBuilder()
    b.stored(b"\x02" * 20, 5)
    b.stored(b"\x01" * 20, 1)
    b.rejected(b"\x01" * 20, 2, 7)
    msgs = b.messages()
    assert [t for t, _ in msgs] == [f"terrapin/v1/{'01' * 20}/ack", f"terrapin/v1/{'02' * 20}/ack"]
    assert decode_ack(msgs[0][1]) == ([(1, 1)], [(2, 7)])


def test_an_ack_never_grows_past_its_cap_whatever_one_board_sent():
    from terrapin.gateway.protocol.ack import MAX_ACK_BYTES, MAX_ACK_ENTRIES

    big = 2**63 - 1
    stored = range(big - 20_000, big, 2)  # 10,000 separate ranges
    rejected = [(big - 30_000 - i, 14) for i in range(10_000)]
    payload = encode_ack(stored, rejected)
    assert len(payload) <= MAX_ACK_BYTES < 4096 - 64  # topic + MQTT header fit too
    ranges, rej = fw_ack.decode(payload)  # the board reads it (<= 256 pairs, <= 4096 bytes)
    assert len(ranges) == len(rej) == MAX_ACK_ENTRIES
    assert rej == sorted(rejected)[:MAX_ACK_ENTRIES]  # the lowest seqs first
    assert ranges[0] == (big - 20_000, big - 20_000)
