"""The signing side (firmware/cose.py) writes the payload, the Sig_structure
and the envelope by hand, not through a generic encoder: each is checked here
byte for byte against cbor2's canonical encoding, with lengths on both sides
of every CBOR head size, and against the receive side (cose_check)."""

from __future__ import annotations

import hashlib
import random

import cbor2
import pytest

from terrapin.firmware import cose, cose_check, secp256k1

PRIV = bytes(range(1, 33))


def reference_envelope(kid: bytes, payload: bytes, sig: bytes) -> bytes:
    body = [cose.PROTECTED, {4: kid}, payload, sig]
    return cbor2.dumps(cbor2.CBORTag(18, body), canonical=True)


@pytest.mark.parametrize("n", [0, 1, 23, 24, 255, 256, 925, 65535, 65536])
def test_sig_structure_and_digest_equal_cbor2(n):
    payload = random.Random(n).randbytes(n)
    expected = cbor2.dumps(["Signature1", cose.PROTECTED, b"", payload], canonical=True)
    assert cose.sig_structure(payload) == expected
    assert cose.sig_structure(bytearray(payload)) == expected
    assert cose.sig_structure(memoryview(payload)) == expected
    assert cose.digest(payload) == hashlib.sha256(expected).digest()


@pytest.mark.parametrize("n", [1, 23, 24, 255, 256, 925])
def test_sign1_envelope_equals_cbor2(n):
    rng = random.Random(n)
    kid = rng.randbytes(20)
    payload = rng.randbytes(n)
    env = cose.sign1(PRIV, kid, payload)
    sig = secp256k1.sign_digest(PRIV, cose.digest(payload))
    assert env == reference_envelope(kid, payload, sig)
    assert type(env) is bytes
    # Buffer types in, the same bytes out.
    assert cose.sign1(PRIV, bytearray(kid), memoryview(payload)) == env
    assert cose_check.parse_sign1(env) == (cose.PROTECTED, kid, payload, sig)


def test_sign1_size_limit_is_exactly_1024_bytes():
    kid = bytes(20)
    assert len(cose.sign1(PRIV, kid, bytes(925))) == cose.MAX_ENVELOPE
    with pytest.raises(ValueError, match="1024"):
        cose.sign1(PRIV, kid, bytes(926))
    with pytest.raises(ValueError, match="kid"):
        cose.sign1(PRIV, bytes(19), b"\xa0")


def test_signed_readings_pass_the_receive_side():
    rng = random.Random(5)
    for seq in range(20):
        priv = secp256k1.generate_private_key(rng.randbytes)
        pub = secp256k1.public_key(priv)
        kid = cose.address(pub)
        records = [
            ("n" * rng.randrange(1, 33), "u" * rng.randrange(1, 17), rng.uniform(-1e6, 1e6))
            for _ in range(rng.randrange(1, 17))
        ]
        time = rng.choice([0, 23, 24, 2**32, 2**63 - 1])
        payload = cose.encode_payload(seq, time, records)
        env = cose.sign1(priv, kid, payload)
        got = cose_check.check_envelope(env, kid, pub)
        assert got == (kid, seq, time, [(n, u, cose.float32(v)) for n, u, v in records])
        assert cose_check.check_envelope(env, kid) == got  # key recovered from sig


@pytest.mark.parametrize(
    ("seq", "time", "records"),
    [
        (True, 0, [("t", "Cel", 1.0)]),
        (1, False, [("t", "Cel", 1.0)]),
        (-1, 0, [("t", "Cel", 1.0)]),
        (2**63, 0, [("t", "Cel", 1.0)]),
        (1, 1.0, [("t", "Cel", 1.0)]),
        (1, 0, [(b"t", "Cel", 1.0)]),
        (1, 0, [("t", None, 1.0)]),
        (1, 0, [("t" * 33, "Cel", 1.0)]),
        (1, 0, [("é" * 17, "Cel", 1.0)]),  # 34 bytes of UTF-8
        (1, 0, [("t", "Cel", 1.0, 2.0)]),
    ],
)
def test_encode_payload_refuses_bad_fields(seq, time, records):
    with pytest.raises(ValueError):
        cose.encode_payload(seq, time, records)
