"""Signature verification of reading envelopes (ES256K over the Sig_structure digest).

The first reading of a board recovers its public key from the signature
(v = 0 and 1) and keeps the one whose address equals the kid; later readings
do one plain verify against the cached key. High-S signatures are rejected
before any curve work (libsecp256k1 would reject them too, but with the
wrong reason).

Backends: "coincurve" (libsecp256k1, ~26 us a verify) is the default;
"ecdsa" (pure Python, ~1 ms) is the reference and fallback, used by the tests
as a cross-check.
"""

from __future__ import annotations

from coincurve import PrivateKey, PublicKey
from coincurve.context import GLOBAL_CONTEXT
from coincurve.ecdsa import deserialize_compact

from terrapin.gateway.protocol.address import address
from terrapin.gateway.protocol.envelope import Envelope
from terrapin.gateway.protocol.errors import EnvelopeError, PublicKeyError, SignatureError
from terrapin.gateway.protocol.reasons import Reason

try:  # the flat C bindings: skip coincurve's DER round trip in the hot path
    from coincurve._libsecp256k1 import lib as _lib
except ImportError:  # pragma: no cover - coincurve always ships it
    _lib = None

N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_N = N // 2
BACKENDS = ("coincurve", "ecdsa")


__all__ = [
    "BACKENDS",
    "HALF_N",
    "N",
    "Verifier",
    "address",
    "check_scalars",
    "private_key",
    "recover_public_key",
    "recover_signer",
    "sign_digest",
    "verify_digest",
]


def private_key(key) -> PrivateKey:
    return key if isinstance(key, PrivateKey) else PrivateKey(bytes(key))


def sign_digest(key, digest32: bytes) -> bytes:
    """64-byte r||s, RFC 6979 nonce, low-S (libsecp256k1 always normalises)."""
    return private_key(key).sign_recoverable(digest32, hasher=None)[:64]


def check_scalars(sig: bytes) -> None:
    """64 bytes, low S, then 0 < r, s < n (the order firmware/cose.py uses)."""
    if len(sig) != 64:
        raise EnvelopeError(Reason.BAD_SIGNATURE, "signature is not 64 bytes")
    s = int.from_bytes(sig[32:], "big")
    if s > HALF_N:
        raise EnvelopeError(Reason.HIGH_S, "s > n/2")
    r = int.from_bytes(sig[:32], "big")
    if not (0 < r < N and s > 0):
        raise EnvelopeError(Reason.BAD_SIGNATURE, "r or s out of range")


def recover_public_key(digest32: bytes, sig: bytes, v: int) -> bytes:
    """The uncompressed public key that made r||s (64 bytes) with recovery id v (0 or 1)."""
    try:
        pub = PublicKey.from_signature_and_message(bytes(sig) + bytes((v,)), digest32, hasher=None)
    except Exception as exc:  # coincurve raises plain Exception on bad points
        raise SignatureError(str(exc)) from None
    return pub.format(compressed=False)


def _candidates(digest32: bytes, sig: bytes) -> list[tuple[bytes, int]]:
    out = []
    for v in (0, 1):
        try:
            out.append((recover_public_key(digest32, sig, v), v))
        except SignatureError:
            continue
    return out


def recover_signer(digest32: bytes, sig: bytes, kid: bytes) -> tuple[bytes, int] | None:
    """(public key, recovery id v) of board `kid` if it made `sig` over `digest32`, else None."""
    for pub, v in _candidates(digest32, sig):
        if address(pub) == kid:
            return pub, v
    return None


def verify_digest(pub65: bytes, digest32: bytes, sig: bytes) -> None:
    """Raise EnvelopeError(BAD_SIGNATURE | HIGH_S) unless `pub65` signed `digest32`;
    PublicKeyError when `pub65` is not a point on the curve."""
    check_scalars(sig)
    try:
        key = PublicKey(bytes(pub65))
    except Exception as exc:
        raise PublicKeyError(f"not a secp256k1 public key ({exc})") from None
    if not _Coincurve().verify(key, digest32, sig):
        raise EnvelopeError(Reason.BAD_SIGNATURE, "does not verify")


class _Coincurve:
    def load(self, pub65: bytes):
        return PublicKey(pub65)

    def verify(self, key, digest32: bytes, sig: bytes) -> bool:
        if _lib is not None:
            cdata = deserialize_compact(sig)
            return bool(
                _lib.secp256k1_ecdsa_verify(GLOBAL_CONTEXT.ctx, cdata, digest32, key.public_key)
            )
        return key.verify(_der(sig), digest32, hasher=None)  # pragma: no cover

    def recover(self, digest32: bytes, sig: bytes) -> list[bytes]:
        return [pub for pub, _ in _candidates(digest32, sig)]


class _Ecdsa:
    def __init__(self):
        import ecdsa
        from ecdsa.util import sigdecode_string

        self._ecdsa = ecdsa
        self._decode = sigdecode_string

    def load(self, pub65: bytes):
        return self._ecdsa.VerifyingKey.from_string(pub65[1:], curve=self._ecdsa.SECP256k1)

    def verify(self, key, digest32: bytes, sig: bytes) -> bool:
        try:
            return key.verify_digest(sig, digest32, sigdecode=self._decode)
        except self._ecdsa.BadSignatureError:
            return False

    def recover(self, digest32: bytes, sig: bytes) -> list[bytes]:
        try:
            keys = self._ecdsa.VerifyingKey.from_public_key_recovery_with_digest(
                sig, digest32, self._ecdsa.SECP256k1, sigdecode=self._decode
            )
        except Exception:
            return []
        return [b"\x04" + k.to_string() for k in keys]


def _der(sig: bytes) -> bytes:  # pragma: no cover - fallback only
    from coincurve.ecdsa import cdata_to_der

    return cdata_to_der(deserialize_compact(sig))


class Verifier:
    """Verifies envelopes; keeps each board's public key after the first reading."""

    def __init__(self, backend: str = "coincurve"):
        if backend not in BACKENDS:
            raise ValueError(f"unknown verify backend {backend!r}; choose one of {BACKENDS}")
        self.backend = backend
        self._impl = _Coincurve() if backend == "coincurve" else _Ecdsa()
        self._keys: dict[bytes, object] = {}
        self._pubs: dict[bytes, bytes] = {}

    def remember(self, kid: bytes, pub65: bytes) -> None:
        if address(pub65) != kid:
            raise ValueError("public key does not belong to this address")
        self._keys[kid] = self._impl.load(pub65)
        self._pubs[kid] = pub65

    def public_key(self, kid: bytes) -> bytes | None:
        return self._pubs.get(kid)

    def verify(self, env: Envelope, digest32: bytes | None = None) -> bytes:
        """Raise EnvelopeError(BAD_SIGNATURE | HIGH_S) unless the board signed it.

        Returns the signed digest (SHA-256 of the Sig_structure).
        """
        if digest32 is None:
            digest32 = env.digest
        sig = env.signature
        check_scalars(sig)
        key = self._keys.get(env.kid)
        if key is not None:
            if not self._impl.verify(key, digest32, sig):
                raise EnvelopeError(Reason.BAD_SIGNATURE, "does not verify", kid=env.kid)
            return digest32
        for pub in self._impl.recover(digest32, sig):
            if address(pub) == env.kid:
                loaded = self._impl.load(pub)
                if self._impl.verify(loaded, digest32, sig):
                    self._keys[env.kid] = loaded
                    self._pubs[env.kid] = pub
                    return digest32
        raise EnvelopeError(Reason.BAD_SIGNATURE, "no key for this kid signed it", kid=env.kid)
