"""secp256k1 signing agrees byte for byte with python-ecdsa (RFC 6979 + low-S)
and verifies with coincurve (libsecp256k1); our verifier agrees with both."""

from __future__ import annotations

import hashlib
import random

import coincurve
import ecdsa
import pytest
from ecdsa.util import sigencode_strings

from terrapin.firmware import secp256k1 as S

N = ecdsa.SECP256k1.order


def reference_sign(priv: bytes, digest: bytes) -> bytes:
    sk = ecdsa.SigningKey.from_string(priv, curve=ecdsa.SECP256k1)
    r, s = sk.sign_digest_deterministic(
        digest, hashfunc=hashlib.sha256, sigencode=sigencode_strings
    )
    s_int = int.from_bytes(s, "big")
    if s_int > N // 2:
        s_int = N - s_int
    return r + s_int.to_bytes(32, "big")


def random_cases(count: int, seed: int):
    rng = random.Random(seed)
    for i in range(count):
        priv = S.generate_private_key(rng=rng.randbytes)
        message = rng.randbytes(rng.randrange(0, 200))
        yield i, priv, hashlib.sha256(message).digest()


def test_200_random_keys_match_python_ecdsa_and_verify_with_coincurve():
    high_s_seen = 0
    for i, priv, digest in random_cases(200, seed=6979):
        sig, v = S.sign_recoverable(priv, digest)
        assert sig == reference_sign(priv, digest), f"case {i}: key {priv.hex()}"
        assert int.from_bytes(sig[32:], "big") <= N // 2
        pub = S.public_key(priv)
        cc = coincurve.PublicKey.from_secret(priv)
        assert pub == cc.format(compressed=False), f"case {i}"
        assert cc.verify(
            coincurve.ecdsa.cdata_to_der(coincurve.ecdsa.deserialize_compact(sig)),
            digest,
            hasher=None,
        ), f"case {i}"
        recovered = coincurve.PublicKey.from_signature_and_message(
            sig + bytes([v]), digest, hasher=None
        )
        assert recovered.format(compressed=False) == pub, f"case {i}: v={v}"
        assert S.verify_digest(pub, digest, sig)
        # The raw ECDSA s (before normalisation) was high about half the time.
        sk = ecdsa.SigningKey.from_string(priv, curve=ecdsa.SECP256k1)
        raw = sk.sign_digest_deterministic(digest, hashfunc=hashlib.sha256)
        high_s_seen += int.from_bytes(raw[32:], "big") > N // 2
    assert 60 < high_s_seen < 140  # both branches of low-S normalisation ran


def test_verify_rejects_what_coincurve_rejects():
    for i, priv, digest in random_cases(20, seed=1):
        pub = S.public_key(priv)
        sig = S.sign_digest(priv, digest)
        other = hashlib.sha256(digest).digest()
        assert not S.verify_digest(pub, other, sig), i
        bad = bytes([sig[5] ^ 4]).join([sig[:5], sig[6:]])
        assert not S.verify_digest(pub, digest, bad), i
        # high-S is still valid ECDSA at this level (cose rejects it).
        r, s = sig[:32], int.from_bytes(sig[32:], "big")
        assert S.verify_digest(pub, digest, r + (N - s).to_bytes(32, "big"))
    pub = S.public_key(b"\x01" * 32)
    assert not S.verify_digest(pub, bytes(32), bytes(64))
    assert not S.verify_digest(pub, bytes(32), b"\xff" * 64)
    assert not S.verify_digest(pub[:-1] + bytes([pub[-1] ^ 1]), bytes(32), bytes(64))
    assert not S.verify_digest(b"\x02" + pub[1:], bytes(32), bytes(64))


def test_edge_keys_and_public_keys():
    one = (1).to_bytes(32, "big")
    assert S.public_key(one) == b"\x04" + S.GX.to_bytes(32, "big") + S.GY.to_bytes(32, "big")
    top = (N - 1).to_bytes(32, "big")
    assert S.public_key(top) == coincurve.PublicKey.from_secret(top).format(compressed=False)
    digest = hashlib.sha256(b"edge").digest()
    for priv in (one, top, (2**255).to_bytes(32, "big")):
        sig = S.sign_digest(priv, digest)
        assert sig == reference_sign(priv, digest)
        assert S.verify_digest(S.public_key(priv), digest, sig)
    for bad in (bytes(32), N.to_bytes(32, "big"), b"\xff" * 32, b"\x01" * 31):
        with pytest.raises(S.SignatureError):
            S.public_key(bad)
    with pytest.raises(S.SignatureError):
        S.sign_digest(one, bytes(31))


def test_verify_with_q_equal_to_plus_or_minus_g():
    digest = hashlib.sha256(b"g").digest()
    one = (1).to_bytes(32, "big")
    minus = (N - 1).to_bytes(32, "big")
    for priv in (one, minus):
        sig = S.sign_digest(priv, digest)
        assert S.verify_digest(S.public_key(priv), digest, sig)
        assert not S.verify_digest(S.public_key(priv), bytes(32), sig)


def test_key_generation_rejects_out_of_range_candidates():
    draws = iter([b"\xff" * 32, bytes(32), N.to_bytes(32, "big"), b"\x07" * 32])
    assert S.generate_private_key(rng=lambda n: next(draws)) == b"\x07" * 32
    keys = {S.generate_private_key() for _ in range(5)}
    assert len(keys) == 5


def test_inverse_and_recovery():
    rng = random.Random(5)
    for _ in range(50):
        a = rng.randrange(1, S.P)
        assert a * S.inverse(a, S.P) % S.P == 1
        b = rng.randrange(1, N)
        assert b * S.inverse(b, N) % N == 1
    with pytest.raises(ZeroDivisionError):
        S.inverse(S.P, S.P)
    for _, priv, digest in random_cases(10, seed=9):
        sig, v = S.sign_recoverable(priv, digest)
        assert S.recover_public_key(digest, sig, v) == S.public_key(priv)
        assert S.recover_public_key(digest, sig, v ^ 1) != S.public_key(priv)


def test_comb_table_holds_the_right_multiples_of_g():
    S._build_table()
    G = ecdsa.SECP256k1.generator
    assert S._TEETH * S._COLS == 256 and len(S._TABLE) == 64 << S._TEETH
    for i in range(1, 1 << S._TEETH):
        k = sum(1 << (S._COLS * j) for j in range(S._TEETH) if i >> j & 1)
        point = k * G
        assert S._entry(S._TABLE, i) == (point.x(), point.y()), i
