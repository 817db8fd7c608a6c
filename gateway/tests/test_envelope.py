"""Host-side envelope decoding: golden vectors, every rejection reason, hostile
CBOR, the fast path against the full decoder, and fuzzing (only EnvelopeError escapes)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import cbor2
import pytest
from cbor2 import CBORTag
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from terrapin.gateway.check import Checker
from terrapin.gateway.policy import Policy
from terrapin.gateway.protocol import envelope as E
from terrapin.gateway.protocol.envelope import (
    PROTECTED,
    EnvelopeError,
    assemble,
    build_envelope,
    decode_envelope,
    decode_payload,
    digest,
    sig_structure,
)
from terrapin.gateway.protocol.reasons import Reason
from terrapin.gateway.protocol.signature import HALF_N, N, Verifier, address, sign_digest
from terrapin.gateway.store import Pending, Rejected

VECTORS = Path(__file__).resolve().parents[2] / "docs" / "vectors"
KEY = bytes.fromhex("11" * 32)
NOW = 1_767_225_600


def _pub(key: bytes) -> bytes:
    from coincurve import PrivateKey

    return PrivateKey(key).public_key.format(compressed=False)


KID = address(_pub(KEY))


def run_checks(envelope: bytes, topic_address: bytes, known=None, backend="coincurve"):
    """The gateway's check stage with `known` boards (default: the topic's board)."""
    policy = Policy(boards=known if known is not None else {topic_address})
    checker = Checker(policy, Verifier(backend))
    return checker.check("terrapin/v1/x/reading", topic_address, envelope, NOW)


def signed(payload: bytes, key: bytes = KEY, **kw) -> bytes:
    return assemble(address(_pub(key)), payload, sign_digest(key, digest(payload)), **kw)


def payload_of(obj) -> bytes:
    return cbor2.dumps(obj, canonical=True)


GOOD = {1: 7, 2: NOW, 3: [{0: "temperature", 1: "Cel", 2: 21.5}]}


def reason_of(envelope: bytes, topic: bytes = KID) -> Reason | None:
    out = run_checks(envelope, topic)
    return out.reason if isinstance(out, Rejected) else None


# --- golden vectors ------------------------------------------------------------------


def test_valid_vectors_decode_and_verify_with_both_backends():
    data = json.loads((VECTORS / "valid.json").read_text())
    assert data["vectors"], "no valid vectors"
    for v in data["vectors"]:
        env = bytes.fromhex(v["envelope"])
        addr = bytes.fromhex(v["address"])
        for backend in ("coincurve", "ecdsa"):
            out = run_checks(env, addr, backend=backend)
            assert isinstance(out, Pending), f"{v['name']} ({backend}): {out}"
            assert out.seq == v["seq"] and out.time == v["time"]
            assert out.digest.hex() == v["digest"], v["name"]
        assert sig_structure(bytes.fromhex(v["payload"])).hex() == v["sig_structure"]
        # Our signer produces the same bytes (RFC 6979, low-S).
        records = [(r["name"], r["unit"], r["value"]) for r in v["records"]]
        ours = build_envelope(bytes.fromhex(v["private_key"]), v["seq"], v["time"], records)
        assert ours.hex() == v["envelope"], v["name"]


def test_invalid_vectors_get_their_reason_and_are_not_stored():
    path = VECTORS / "invalid.json"
    if not path.exists():
        pytest.skip("docs/vectors/invalid.json is not written yet")
    vectors = json.loads(path.read_text())["vectors"]
    assert vectors
    for v in vectors:
        env = bytes.fromhex(v["envelope"])
        topic = bytes.fromhex(v["topic_address"])
        for backend in ("coincurve", "ecdsa"):
            out = run_checks(env, topic, known={topic, KID, *_kids(env)}, backend=backend)
            assert isinstance(out, Rejected), f"{v['name']} was accepted ({backend})"
            assert out.reason.name == v["reason"], f"{v['name']}: {out.reason.name} {out.detail}"


def _kids(env: bytes) -> set[bytes]:
    try:
        return {decode_envelope(env).kid}
    except EnvelopeError:
        return set()


# --- each reason on its own -----------------------------------------------------------


def test_valid_envelope_is_accepted():
    out = run_checks(signed(payload_of(GOOD)), KID)
    assert isinstance(out, Pending) and out.seq == 7 and out.device == KID


HOSTILE = {
    "not CBOR at all": (b"\xff\xff", Reason.MALFORMED_CBOR),
    "empty": (b"", Reason.MALFORMED_CBOR),
    "truncated": (b"\xd2\x84\x44", Reason.MALFORMED_CBOR),
    "deep nesting": (b"\x81" * 200 + b"\x01", Reason.MALFORMED_CBOR),
    "deep tags": (b"\xd2" * 50 + b"\x01", Reason.MALFORMED_CBOR),
    "huge declared byte string": (b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff", Reason.MALFORMED_CBOR),
    "huge declared array": (
        b"\x9b\x00\xff\xff\xff\xff\xff\xff\xff" + b"\x00" * 8,
        Reason.MALFORMED_CBOR,
    ),
    "huge declared map": (b"\xbb\x00\x00\x00\x01\x00\x00\x00\x00", Reason.MALFORMED_CBOR),
    "indefinite array": (b"\xd2\x9f\x01\xff", Reason.MALFORMED_CBOR),
    "reserved additional info": (b"\x1c", Reason.MALFORMED_CBOR),
    "shared-reference tags": (b"\xd8\x1c\x81\xd8\x1d\x00", Reason.BAD_ENVELOPE),
    "regex tag": (b"\xd8\x23\x62a+", Reason.BAD_ENVELOPE),
    "NaN": (b"\xf9\x7e\x00", Reason.BAD_ENVELOPE),
    "undefined": (b"\xf7", Reason.MALFORMED_CBOR),
    "oversize": (b"\x00" * 1025, Reason.OVERSIZE),
    "wrong tag": (
        cbor2.dumps(CBORTag(17, [PROTECTED, {4: KID}, b"", b"\x00" * 64])),
        Reason.BAD_ENVELOPE,
    ),
    "no tag": (cbor2.dumps([PROTECTED, {4: KID}, b"", b"\x00" * 64]), Reason.BAD_ENVELOPE),
    "3-array": (cbor2.dumps(CBORTag(18, [PROTECTED, {4: KID}, b""])), Reason.BAD_ENVELOPE),
    "payload is text": (
        cbor2.dumps(CBORTag(18, [PROTECTED, {4: KID}, "x", b"\x00" * 64])),
        Reason.BAD_ENVELOPE,
    ),
    "unknown header": (
        cbor2.dumps(CBORTag(18, [PROTECTED, {4: KID, 5: b"x"}, b"", b"\x00" * 64])),
        Reason.BAD_ENVELOPE,
    ),
    "alg ES256": (
        cbor2.dumps(CBORTag(18, [cbor2.dumps({1: -7}), {4: KID}, b"", b"\x00" * 64])),
        Reason.UNSUPPORTED_ALG,
    ),
    "no kid": (cbor2.dumps(CBORTag(18, [PROTECTED, {}, b"", b"\x00" * 64])), Reason.BAD_KID),
    "short kid": (
        cbor2.dumps(CBORTag(18, [PROTECTED, {4: KID[:19]}, b"", b"\x00" * 64])),
        Reason.BAD_KID,
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_input_is_rejected_with_its_reason(name):
    data, reason = HOSTILE[name]
    assert reason_of(data) == reason, name


def test_non_canonical_envelope_is_malformed():
    env = signed(payload_of(GOOD))
    # Same envelope with a two-byte head for the 20-byte kid (0x58 0x14 instead of 0x54).
    longer = env.replace(b"\xa1\x04\x54", b"\xa1\x04\x58\x14", 1)
    assert reason_of(longer) == Reason.MALFORMED_CBOR
    assert reason_of(env + b"\x00") == Reason.MALFORMED_CBOR  # trailing byte


def test_topic_mismatch():
    assert reason_of(signed(payload_of(GOOD)), topic=b"\x01" * 20) == Reason.TOPIC_MISMATCH


def test_unknown_board():
    out = run_checks(signed(payload_of(GOOD)), KID, known=set())
    assert out.reason == Reason.UNKNOWN_BOARD


def test_forged_signatures():
    p = payload_of(GOOD)
    good = signed(p)
    sig = decode_envelope(good).signature
    # A bit flipped in r, a signature by another key, a signature over other bytes.
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    assert reason_of(assemble(KID, p, flipped)) == Reason.BAD_SIGNATURE
    other = bytes.fromhex("22" * 32)
    assert reason_of(assemble(KID, p, sign_digest(other, digest(p)))) == Reason.BAD_SIGNATURE
    p2 = payload_of({**GOOD, 1: 8})
    assert reason_of(assemble(KID, p2, sig)) == Reason.BAD_SIGNATURE
    assert reason_of(assemble(KID, p, sig[:63])) == Reason.BAD_SIGNATURE
    assert reason_of(assemble(KID, p, b"\x00" * 64)) == Reason.BAD_SIGNATURE
    # High S: the same signature with s -> n - s still verifies mathematically.
    s = int.from_bytes(sig[32:], "big")
    assert s <= HALF_N
    high = sig[:32] + (N - s).to_bytes(32, "big")
    assert reason_of(assemble(KID, p, high)) == Reason.HIGH_S


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"\xa3\x01\x07\x02", Reason.MALFORMED_CBOR),  # truncated payload
        (payload_of(GOOD) + b"\x00", Reason.MALFORMED_CBOR),  # trailing
        (b"\xa3\x01\x18\x07" + payload_of(GOOD)[3:], Reason.NON_CANONICAL),  # long head for 7
        (b"\xbf" + payload_of(GOOD)[1:] + b"\xff", Reason.NON_CANONICAL),  # indefinite map
        (cbor2.dumps({2: NOW, 1: 7, 3: GOOD[3]}), Reason.NON_CANONICAL),  # key order
        (payload_of(GOOD).replace(b"\xf9\x4d\x60", b"\xfa\x41\xac\x00\x00"), Reason.NON_CANONICAL),
        (payload_of({1: 7, 2: NOW}), Reason.BAD_PAYLOAD),
        (payload_of({**GOOD, 4: 0}), Reason.BAD_PAYLOAD),
        (payload_of({**GOOD, 1: -1}), Reason.BAD_PAYLOAD),
        (payload_of({**GOOD, 1: 2**63}), Reason.BAD_PAYLOAD),
        (payload_of({**GOOD, 2: 1.5}), Reason.BAD_PAYLOAD),
        (payload_of({**GOOD, 3: []}), Reason.BAD_PAYLOAD),
        (payload_of({**GOOD, 3: GOOD[3] * 17}), Reason.BAD_PAYLOAD),
        (payload_of({**GOOD, 3: [{0: "t", 1: "Cel", 2: 21}]}), Reason.BAD_PAYLOAD),
        (payload_of({**GOOD, 3: [{0: "t", 1: "Cel", 2: 0.1}]}), Reason.BAD_PAYLOAD),  # not float32
        (payload_of({**GOOD, 3: [{0: "t", 1: "Cel", 2: float("inf")}]}), Reason.BAD_PAYLOAD),
        (payload_of({**GOOD, 3: [{0: "", 1: "Cel", 2: 1.0}]}), Reason.BAD_PAYLOAD),
        (payload_of({**GOOD, 3: [{0: "x" * 33, 1: "Cel", 2: 1.0}]}), Reason.BAD_PAYLOAD),
        (payload_of({**GOOD, 3: [{0: "t", 1: "", 2: 1.0}]}), Reason.BAD_PAYLOAD),
        (payload_of({**GOOD, 3: [{0: "t", 1: "Cel", 2: 1.0, 3: "x"}]}), Reason.BAD_PAYLOAD),
        (payload_of({True: 7, 2: NOW, 3: GOOD[3]}), Reason.BAD_PAYLOAD),
        (payload_of({**GOOD, 3: [{0: "t", 1: "Cel", 2: float("nan")}]}), Reason.BAD_PAYLOAD),
        (payload_of({**GOOD, 3: [{0: "t", 1: "Cel", 2: cbor2.undefined}]}), Reason.MALFORMED_CBOR),
    ],
)
def test_payload_rejections(payload, reason):
    assert reason_of(signed(payload)) == reason


def test_records_at_the_caps_are_accepted():
    recs = [{0: "n" * 32, 1: "u" * 16, 2: 1.5}] * 8
    out = run_checks(signed(payload_of({**GOOD, 3: recs})), KID)
    assert isinstance(out, Pending)


# --- fast path = full decoder; fuzzing ------------------------------------------------


def _slow_decode(raw: bytes):
    saved = E._fast_envelope
    E._fast_envelope = lambda raw: None
    try:
        return decode_envelope(raw)
    finally:
        E._fast_envelope = saved


def _outcome(f, raw):
    try:
        return ("ok", f(raw))
    except EnvelopeError as exc:
        return ("error", exc.reason)


VALID = signed(payload_of(GOOD))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.data())
def test_fast_path_agrees_with_full_decoder_on_mutations(data):
    raw = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(0, len(raw)))
        raw = raw[:cut] + bytes(data.draw(st.binary(max_size=4)))
    raw = bytes(raw)
    assert _outcome(decode_envelope, raw) == _outcome(_slow_decode, raw)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=1200))
def test_decoder_raises_only_envelope_error_on_random_bytes(raw):
    for f in (decode_envelope, decode_payload):
        with contextlib.suppress(EnvelopeError):
            f(raw)


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=True)
    | st.binary(max_size=30)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.integers(-2, 5) | st.text(max_size=3), children, max_size=5)
        | st.builds(CBORTag, st.sampled_from([0, 1, 2, 18, 24, 28, 29, 35, 258]), children)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cbor_values)
def test_decoder_raises_only_envelope_error_on_random_cbor(obj):
    try:
        raw = cbor2.dumps(obj)
    except Exception:
        return
    for f in (decode_envelope, decode_payload):
        with contextlib.suppress(EnvelopeError):
            f(raw)
    with contextlib.suppress(EnvelopeError):
        decode_envelope(cbor2.dumps(CBORTag(18, [PROTECTED, {4: KID}, raw, os.urandom(64)])))


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**63 - 1),
    st.integers(0, 2**63 - 1),
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=8),
            st.sampled_from(["Cel", "%RH", "hPa", "V"]),
            st.floats(-1e30, 1e30, allow_nan=False),
        ),
        min_size=1,
        max_size=16,
    ),
)
def test_any_well_formed_reading_roundtrips(seq, t, records):
    payload = E.encode_payload(seq, t, records)
    reading = decode_payload(payload)
    assert reading.seq == seq and reading.time == t
    assert [r[2] for r in reading.records] == [E.float32(v) for _, _, v in records]
