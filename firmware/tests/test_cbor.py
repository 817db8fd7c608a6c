"""The firmware CBOR codec against cbor2's canonical encoder, both ways, and
the strict decoder against every non-deterministic form it must refuse."""

from __future__ import annotations

import math
import struct

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from terrapin.firmware import cbor, cose, cose_check
from terrapin.firmware.cbor import CBORError, NonCanonicalError, Tag

ints = st.integers(min_value=-(2**64), max_value=2**64 - 1)
floats = st.floats(allow_nan=False)
scalars = st.one_of(
    ints, floats, st.binary(max_size=40), st.text(max_size=20), st.booleans(), st.none()
)
keys = st.one_of(st.integers(-(2**64), 2**64 - 1), st.text(max_size=10), st.binary(max_size=8))


def nested(depth: int):
    if depth == 0:
        return scalars
    inner = nested(depth - 1)
    return st.one_of(
        scalars,
        st.lists(inner, max_size=5),
        st.dictionaries(keys, inner, max_size=5),
    )


values = nested(3)  # containers at most 3 deep, below the decoder's limit of 4


def to_cbor2(obj):
    if isinstance(obj, Tag):
        return cbor2.CBORTag(obj.tag, to_cbor2(obj.value))
    if isinstance(obj, list):
        return [to_cbor2(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_cbor2(v) for k, v in obj.items()}
    return obj


def same(a, b) -> bool:
    """Equality that tells 0.0 from -0.0 and tuples from lists as cbor2 does not."""
    return cbor2.dumps(to_cbor2(a), canonical=True) == cbor2.dumps(to_cbor2(b), canonical=True)


@settings(max_examples=400, deadline=None)
@given(values)
def test_dumps_equals_cbor2_canonical_and_round_trips(obj):
    ours = cbor.dumps(obj)
    assert ours == cbor2.dumps(obj, canonical=True)
    assert same(cbor.loads(ours, max_size=1 << 20), obj)


@settings(max_examples=300, deadline=None)
@given(values)
def test_loads_accepts_cbor2_canonical_output(obj):
    data = cbor2.dumps(obj, canonical=True)
    back = cbor.loads(data, max_size=1 << 20)
    assert cbor.dumps(back) == data


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 2**63 - 1),
    st.integers(0, 2**63 - 1),
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=32).filter(lambda t: len(t.encode()) <= 32),
            st.text(min_size=1, max_size=16).filter(lambda t: len(t.encode()) <= 16),
            st.floats(allow_nan=False, allow_infinity=False, width=32),
        ),
        min_size=1,
        max_size=16,
    ),
)
def test_payload_equals_cbor2_canonical(seq, time, records):
    payload = cose.encode_payload(seq, time, records)
    reference = {1: seq, 2: time, 3: [{0: n, 1: u, 2: v} for n, u, v in records]}
    assert payload == cbor2.dumps(reference, canonical=True)
    assert cose_check.decode_payload(payload) == (seq, time, [tuple(r) for r in records])


@settings(max_examples=500, deadline=None)
@given(st.floats(allow_nan=False))
def test_float_width_is_the_shortest_exact_one(x):
    data = cbor.dumps(x)
    assert data == cbor2.dumps(x, canonical=True)
    back = cbor.loads(data)
    assert back == x and math.copysign(1, back) == math.copysign(1, x)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0.0, "f90000"),
        (-0.0, "f98000"),
        (1.0, "f93c00"),
        (65504.0, "f97bff"),
        (65536.0, "fa47800000"),
        (5.960464477539063e-08, "f90001"),  # smallest half subnormal
        (6.103515625e-05, "f90400"),  # smallest half normal
        (3.0517578125e-05, "f90200"),  # half subnormal
        (2.0**-25, "fa33000000"),  # too small for a half
        (1.0 + 2.0**-10, "f93c01"),
        (1.0 + 2.0**-11, "fa3f801000"),
        (3.4028234663852886e38, "fa7f7fffff"),
        (1e300, "fb7e37e43c8800759c"),
        (math.inf, "f97c00"),
        (-math.inf, "f9fc00"),
        (math.nan, "f97e00"),
    ],
)
def test_float_encodings(value, encoded):
    assert cbor.dumps(value).hex() == encoded


INVALID = [
    # (hex, why, non-canonical?)
    ("1817", "int 23 in one extra byte", True),
    ("190017", "int 23 in two extra bytes", True),
    ("1a000000ff", "int 255 in four bytes", True),
    ("1b00000000ffffffff", "uint32 in eight bytes", True),
    ("3817", "negative int in an extra byte", True),
    ("5801ff", "byte-string length in an extra byte", True),
    ("780161", "text length in an extra byte", True),
    ("5f41ff41ffff", "indefinite byte string", True),
    ("7f6161ff", "indefinite text string", True),
    ("9f01ff", "indefinite array", True),
    ("bf0102ff", "indefinite map", True),
    ("ff", "lone break", True),
    ("a202010102", "map keys out of order", True),
    ("a201010102", "duplicate map key", True),
    ("a2190100026161 01".replace(" ", ""), "length-first order broken (bytewise-sorted)", True),
    ("fa3fc00000", "1.5 as single", True),
    ("fb3ff8000000000000", "1.5 as double", True),
    ("fb3fb99999a0000000", "float32 value as double", True),
    ("f97e01", "NaN with payload", True),
    ("fa7fc00000", "NaN as single", True),
    ("0100", "trailing byte", False),
    ("", "empty", False),
    ("18", "truncated head", False),
    ("4201", "truncated bytes", False),
    ("830102", "truncated array", False),
    ("1c", "reserved additional info", False),
    ("f7", "undefined", False),
    ("f0", "simple value", False),
    ("f820", "one-byte simple value", False),
    ("62c328", "invalid UTF-8", False),
    ("8181818181818101", "nesting deeper than 4", False),
    ("c1c1c1c1c101", "tags nested deeper than 4", False),
    ("a18101f6", "array as map key", False),
    ("9bffffffffffffffff", "array longer than the input", False),
]


@pytest.mark.parametrize(("hexdata", "why", "noncanonical"), INVALID, ids=[i[1] for i in INVALID])
def test_loads_rejects(hexdata, why, noncanonical):
    with pytest.raises(CBORError) as info:
        cbor.loads(bytes.fromhex(hexdata))
    assert isinstance(info.value, NonCanonicalError) == noncanonical, str(info.value)


def test_depth_limit_is_four_containers():
    assert cbor.loads(bytes.fromhex("8181818101")) == [[[[1]]]]
    with pytest.raises(CBORError):
        cbor.loads(bytes.fromhex("818181818101"))
    assert cbor.loads(bytes.fromhex("818181818101"), max_depth=5) == [[[[[1]]]]]


def test_size_limit():
    data = cbor.dumps(bytes(1021))
    assert len(data) == 1024
    assert cbor.loads(data) == bytes(1021)
    with pytest.raises(CBORError, match="oversize"):
        cbor.loads(cbor.dumps(bytes(1022)))


def test_encoder_rejects_what_it_cannot_write():
    for bad in (2**64, -(2**64) - 1, {1, 2}, object()):
        with pytest.raises(CBORError):
            cbor.dumps(bad)
    assert cbor.dumps(Tag(18, [b"", {4: b"x"}])) == cbor2.dumps(
        cbor2.CBORTag(18, [b"", {4: b"x"}]), canonical=True
    )


def test_float32_rounding_in_payloads():
    payload = cose.encode_payload(1, 0, [("v", "V", 0.1)])
    value = cbor2.loads(payload)[3][0][2]
    assert value == struct.unpack("<f", struct.pack("<f", 0.1))[0]
    for bad in (math.nan, math.inf, -math.inf, 1e39):
        with pytest.raises(ValueError):
            cose.encode_payload(1, 0, [("v", "V", bad)])
    for records in ([], [("v", "V", 1.0)] * 17, [("", "V", 1.0)], [("v", "u" * 17, 1.0)]):
        with pytest.raises(ValueError):
            cose.encode_payload(1, 0, records)
