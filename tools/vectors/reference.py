"""The independent reference behind `terrapin vectors`: encoder, signer, addresses.

It deliberately does NOT use the firmware code: encodings come from cbor2
(canonical=True), signatures from python-ecdsa (RFC 6979 via
sign_digest_deterministic, then low-S), addresses from pycryptodome's Keccak.
The firmware and the gateway are tested against what this produces, so a bug
shared by our own modules cannot hide. Keys are fixed (derived from labels),
so everything built on this is deterministic.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import cbor2
import ecdsa
from cbor2 import CBORTag
from Crypto.Hash import keccak
from ecdsa.util import sigencode_strings

CURVE = ecdsa.SECP256k1
N = CURVE.order
PROTECTED = cbor2.dumps({1: -47}, canonical=True)


def fixed_key(label: str) -> bytes:
    """A deterministic private key: SHA-256 of a label, re-hashed until in range."""
    key = hashlib.sha256(b"terrapin test vector key: " + label.encode()).digest()
    while not 1 <= int.from_bytes(key, "big") < N:
        key = hashlib.sha256(key).digest()
    return key


def public_key(priv: bytes) -> bytes:
    sk = ecdsa.SigningKey.from_string(priv, curve=CURVE)
    return b"\x04" + sk.get_verifying_key().to_string()


def address(pub: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=pub[1:]).digest()[12:]


def float32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def canonical(obj: Any) -> bytes:
    return cbor2.dumps(obj, canonical=True)


def payload_bytes(seq: int, time: int, records: list[tuple[str, str, float]]) -> bytes:
    recs = [{0: n, 1: u, 2: float32(float(v))} for n, u, v in records]
    return canonical({1: seq, 2: time, 3: recs})


def sig_structure(payload: bytes, protected: bytes = PROTECTED) -> bytes:
    return canonical(["Signature1", protected, b"", payload])


def sign(priv: bytes, digest: bytes) -> tuple[bytes, int]:
    """(r||s low-S, recovery id v) with python-ecdsa's RFC 6979 nonce."""
    sk = ecdsa.SigningKey.from_string(priv, curve=CURVE)
    r_b, s_b = sk.sign_digest_deterministic(
        digest, hashfunc=hashlib.sha256, sigencode=sigencode_strings
    )
    r, s = int.from_bytes(r_b, "big"), int.from_bytes(s_b, "big")
    # v from R = k*G with the same RFC 6979 nonce python-ecdsa used.
    k = ecdsa.rfc6979.generate_k(N, int.from_bytes(priv, "big"), hashlib.sha256, digest)
    point = k * CURVE.generator
    if point.x() % N != r:  # pragma: no cover - would mean a retried nonce
        raise RuntimeError("nonce mismatch")
    v = (point.y() & 1) | (2 if point.x() >= N else 0)
    if s > N // 2:
        s = N - s
        v ^= 1
    return r.to_bytes(32, "big") + s.to_bytes(32, "big"), v


def envelope(protected: bytes, unprotected: dict, payload: bytes, signature: bytes) -> bytes:
    return canonical(CBORTag(18, [protected, unprotected, payload, signature]))
