"""Signature verification: coincurve against the python-ecdsa reference."""

from __future__ import annotations

import os

import pytest
from coincurve import PrivateKey

from terrapin.gateway.protocol.envelope import (
    EnvelopeError,
    build_envelope,
    decode_envelope,
    digest,
)
from terrapin.gateway.protocol.reasons import Reason
from terrapin.gateway.protocol.signature import BACKENDS, N, Verifier, address, sign_digest


def _board():
    key = PrivateKey(os.urandom(32))
    return key, key.public_key.format(compressed=False)


def _verdict(v: Verifier, raw: bytes):
    try:
        v.verify(decode_envelope(raw))
        return "ok"
    except EnvelopeError as exc:
        return exc.reason


def test_backends_agree_on_valid_forged_and_malleable():
    key, _pub = _board()
    other, _ = _board()
    good = decode_envelope(build_envelope(key, 1, 0, [("t", "Cel", 1.5)]))
    d = digest(good.payload)
    s = int.from_bytes(good.signature[32:], "big")
    cases = {
        "valid": good.raw,
        "flipped": good.raw[:-1] + bytes([good.raw[-1] ^ 1]),
        "other key": good.raw[:-64] + sign_digest(other, d),
        "high s": good.raw[:-32] + (N - s).to_bytes(32, "big"),
        "r zero": good.raw[:-64] + bytes(32) + good.signature[32:],
    }
    for name, raw in cases.items():
        verdicts = {b: _verdict(Verifier(b), raw) for b in BACKENDS}
        assert len(set(verdicts.values())) == 1, (name, verdicts)
    assert _verdict(Verifier(), cases["valid"]) == "ok"
    assert _verdict(Verifier(), cases["high s"]) == Reason.HIGH_S
    assert _verdict(Verifier(), cases["flipped"]) == Reason.BAD_SIGNATURE


@pytest.mark.parametrize("backend", BACKENDS)
def test_key_is_recovered_once_then_cached(backend):
    key, pub = _board()
    v = Verifier(backend)
    assert v.public_key(address(pub)) is None
    v.verify(decode_envelope(build_envelope(key, 1, 0, [("t", "Cel", 1.5)])))
    assert v.public_key(address(pub)) == pub
    v.verify(decode_envelope(build_envelope(key, 2, 0, [("t", "Cel", 2.5)])))
    # With the key cached, another key's signature under this kid fails.
    other, _ = _board()
    env = decode_envelope(build_envelope(key, 3, 0, [("t", "Cel", 2.5)]))
    forged = env.raw[:-64] + sign_digest(other, env.digest)
    with pytest.raises(EnvelopeError) as err:
        v.verify(decode_envelope(forged))
    assert err.value.reason == Reason.BAD_SIGNATURE


def test_remember_refuses_a_key_of_another_address():
    _, pub = _board()
    with pytest.raises(ValueError):
        Verifier().remember(b"\x00" * 20, pub)
    with pytest.raises(ValueError):
        Verifier("rsa")
